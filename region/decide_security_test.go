package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// loginTokens gives identity an email and a password, logs in and returns the tokens.
func (f *policyFixture) loginTokens(t *testing.T, identity, email string) *keyplanev1.Token {
	t.Helper()
	ctx := context.Background()
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: identity, Email: &email})); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: identity, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	r, err := f.auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: email, Password: "a long enough password"}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.Token
}

// rawCall posts msg to a Connect unary procedure of the node at url, with the operator
// secret and a Connect-Timeout-Ms header of timeoutMS (none when 0), and no deadline of
// its own: whatever the server answers is read. It returns the HTTP status and body.
func rawCall(t *testing.T, client *http.Client, url, procedure string, msg any, timeoutMS int) (int, []byte) {
	t.Helper()
	body, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Authorization", "Bearer "+secret)
	if timeoutMS > 0 {
		req.Header.Set("Connect-Timeout-Ms", strconv.Itoa(timeoutMS))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("post %s: %v", procedure, err)
		return 0, nil
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("read %s: %v", procedure, err)
	}
	return resp.StatusCode, out
}

// TestSecurityStepUpFailsClosedUnderShortDeadlines: issue 12, finding 4. A step-up
// condition (auth_time within 10 minutes) was checked with auth_time read by a second
// query whose failure fell back to the token's iat, fresh after every refresh: with
// short client deadlines (Connect-Timeout-Ms) a few checks of a long-ago
// authenticated session holding a just-refreshed token were allowed. The attack: that
// session's fresh token, checked many times with deadlines of 1 to 20 ms. Every answer
// must be a denial or an error, never allowed.
func TestSecurityStepUpFailsClosedUnderShortDeadlines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.editor, Scope: "*",
		Condition: `request.time - token.auth_time < duration("10m")`})
	tok := f.loginTokens(t, f.alice, "alice@acme.example")
	check := func(access string) *keyplanev1.CheckResponse {
		t.Helper()
		r, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
			Principal: &keyplanev1.CheckRequest_Token{Token: access}, Permission: "docs.document.delete", Resource: "prod/db"}))
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		return r.Msg
	}
	// The condition can allow: a fresh login passes it (so a denial below is the
	// condition's doing, not a broken fixture).
	if r := check(tok.AccessToken); !r.Allowed {
		t.Fatalf("a fresh login is denied: %s", r.Reason)
	}
	f.clock.Advance(time.Hour)
	ref, err := f.auth.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: tok.RefreshToken}))
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	fresh := ref.Msg.Token.AccessToken
	if r := check(fresh); r.Allowed {
		t.Fatalf("an hour-old authentication passes a 10-minute step-up after a refresh: %s", r.Reason)
	}

	const calls, workers = 200, 6
	var (
		mu                          sync.Mutex
		allowed, denied, errorCount int
		wg                          sync.WaitGroup
	)
	jobs := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				status, body := rawCall(t, http.DefaultClient, f.url, "/keyplane.v1.CheckService/Check", map[string]any{
					"tenantId": "acme", "token": fresh, "permission": "docs.document.delete", "resource": "prod/db",
				}, 1+i%20)
				mu.Lock()
				if status == http.StatusOK {
					var r keyplanev1.CheckResponse
					if err := protojson.Unmarshal(body, &r); err != nil {
						t.Errorf("decode answer: %v (%s)", err, body)
					}
					if r.Allowed {
						allowed++
					} else {
						denied++
					}
				} else {
					errorCount++
				}
				mu.Unlock()
			}
		})
	}
	for i := range calls {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d checks: %d denied, %d errors, %d allowed", calls, denied, errorCount, allowed)
	if allowed > 0 {
		t.Fatalf("%d of %d checks of a stale authentication were allowed under short deadlines", allowed, calls)
	}
	if errorCount == 0 {
		t.Fatal("no check ran out of time: the short deadlines did not bite, so nothing was tested")
	}
	if r := check(fresh); r.Allowed {
		t.Fatalf("allowed after the burst: %s", r.Reason)
	}
}

// TestSecurityShortDeadlinesKeepPoolConnections: issue 12, finding 10. A cancelled pgx
// query closed its connection, so 100 calls with Connect-Timeout-Ms: 1 opened ~53 new
// PostgreSQL sessions: any client could churn the node's pool (and the database's
// backends) at will. The attack: 100 such calls against a real node; now at most a
// handful of connections are opened (without the fix: about one per call), and the
// pool still serves a normal call.
func TestSecurityShortDeadlinesKeepPoolConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	// A check by token: several statements (token state, tenant, identity).
	tok := f.exchange(t)
	normal := func() error {
		_, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
			Principal: &keyplanev1.CheckRequest_Token{Token: tok}, Permission: "docs.document.read", Resource: "a/b"}))
		return err
	}
	// Warm up: the calls below run one at a time, so a connection or two serves them
	// all (the decision log writes beside them).
	for range 3 {
		if err := normal(); err != nil {
			t.Fatal(err)
		}
	}
	pool := f.store.Pool()
	before := pool.Stat().NewConnsCount()
	const calls = 100
	failed := 0
	for i := range calls {
		// A policy change first, so the check also reloads the tenant's policy (a
		// transaction of several statements) for the deadline to cut into.
		if _, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: fmt.Sprintf("g%d", i)})); err != nil {
			t.Fatal(err)
		}
		status, _ := rawCall(t, http.DefaultClient, f.url, "/keyplane.v1.CheckService/Check", map[string]any{
			"tenantId": "acme", "token": tok, "permission": "docs.document.read", "resource": fmt.Sprintf("a/%d", i),
		}, 1)
		if status != http.StatusOK {
			failed++
		}
	}
	opened := pool.Stat().NewConnsCount() - before
	t.Logf("%d calls with a 1 ms deadline: %d failed, %d new connections", calls, failed, opened)
	if failed == 0 {
		t.Fatal("no call ran out of time: the 1 ms deadline did not bite, so nothing was tested")
	}
	if opened > 5 {
		t.Fatalf("%d calls with a 1 ms deadline opened %d new database connections, want at most 5", calls, opened)
	}
	if err := normal(); err != nil {
		t.Fatalf("a normal call after the burst: %v", err)
	}
}

// TestSecurityElevationApprovalLimits: issue 12, finding 7. iam.elevations.approve let
// its holder approve any role on any scope, "*" and the approval permission itself
// included: one approver could hand anyone (or, through an accomplice's request, itself)
// every permission. The attacks, through a real node: approving a role whose
// permissions the approver lacks, or holds only elsewhere, only under a condition or
// under an overlapping deny; approving one's own request; approving a role granting
// iam.* permissions or scope "*" without the tenant's explicit opt-in
// (iam.elevations.approve_privileged granted by name; a "*" role does not count). Each
// is permission_denied naming what the approver lacks; the allowed cases still work.
func TestSecurityElevationApprovalLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	alice := f.loginAs(t, f.alice, "alice@acme.example")
	owner := f.loginAs(t, f.owner, "owner@acme.example")
	role := func(name string, perms ...string) string {
		t.Helper()
		r, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: name, Permissions: perms}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Role.Id
	}
	approver := role("approver", "iam.elevations.approve")
	privileged := role("privileged-approver", "iam.elevations.approve_privileged")
	star := role("everything", "*")
	grant := func(who, roleID, scope, condition string) {
		t.Helper()
		f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: who, RoleId: roleID, Scope: scope, Condition: condition})
	}
	request := func(roleID, scope string) string {
		t.Helper()
		r, err := alice.RequestElevation(ctx, connect.NewRequest(&keyplanev1.RequestElevationRequest{TenantId: "acme", RoleId: roleID, Scope: scope,
			Duration: durationpb.New(30 * time.Minute), Justification: "incident 7"}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Elevation.Id
	}
	approve := func(c keyplanev1connect.ElevationServiceClient, id string) error {
		_, err := c.ApproveElevation(ctx, connect.NewRequest(&keyplanev1.ApproveElevationRequest{TenantId: "acme", ElevationId: id}))
		return err
	}

	grant(f.owner, approver, "*", "")
	editProd := request(f.editor, "prod/")
	// The reported attack: the approval permission alone approves nothing else.
	wantCode(t, approve(owner, editProd), connect.CodePermissionDenied, "lacks docs.* on prod/")
	// Held on another scope, or only under a condition: not held on the elevation's.
	grant(f.owner, f.editor, "staging/", "")
	wantCode(t, approve(owner, editProd), connect.CodePermissionDenied, "lacks docs.* on prod/")
	grant(f.owner, f.editor, "*", `request.time.getFullYear() > 2000`)
	wantCode(t, approve(owner, editProd), connect.CodePermissionDenied, "lacks docs.* on prod/")
	// Never one's own request, whatever one holds.
	grant(f.alice, approver, "*", "")
	grant(f.alice, f.editor, "prod/", "")
	wantCode(t, approve(alice, editProd), connect.CodePermissionDenied, "own elevation")

	// Roles granting iam.* (here the approval permission itself) and scope "*" need the
	// tenant's explicit opt-in, even from an approver holding everything they grant.
	approveRole := request(approver, "tenant")
	viewAll := request(f.viewer, "*")
	wantCode(t, approve(owner, approveRole), connect.CodePermissionDenied, "lacks iam.elevations.approve_privileged")
	grant(f.owner, star, "*", "")
	wantCode(t, approve(owner, approveRole), connect.CodePermissionDenied, "lacks iam.elevations.approve_privileged")
	wantCode(t, approve(owner, viewAll), connect.CodePermissionDenied, "lacks iam.elevations.approve_privileged")

	// A deny of the approver's overlapping the role and scope, even a conditional one
	// on a single resource, means it does not hold the role there.
	deny, _ := f.bind(t, &keyplanev1.CreateBindingRequest{Effect: keyplanev1.Effect_EFFECT_DENY, PrincipalKind: "identity", PrincipalId: f.owner,
		RoleId: f.viewer, Scope: "prod/secrets", Condition: `request.region == "nowhere"`})
	wantCode(t, approve(owner, editProd), connect.CodePermissionDenied, "lacks docs.* on prod/")
	if _, err := f.admin.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: deny})); err != nil {
		t.Fatal(err)
	}

	// Allowed: an approver holding every permission of the role on the whole scope.
	if err := approve(owner, editProd); err != nil {
		t.Fatalf("approve a role the approver holds on the scope: %v", err)
	}
	// Allowed: with iam.elevations.approve_privileged granted by name.
	grant(f.owner, privileged, "tenant", "")
	if err := approve(owner, approveRole); err != nil {
		t.Fatalf("approve an iam role with the opt-in: %v", err)
	}
	if err := approve(owner, viewAll); err != nil {
		t.Fatalf("approve scope * with the opt-in: %v", err)
	}
}
