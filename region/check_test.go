package region_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/chaos/history"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// policyFixture adds roles, a group and a checker client to the token fixture.
type policyFixture struct {
	*fixture
	check          keyplanev1connect.CheckServiceClient
	editor, viewer string // role ids
	group          string
	alice          string // human in the group
}

func newPolicyFixture(t *testing.T) *policyFixture {
	t.Helper()
	ctx := context.Background()
	f := &policyFixture{fixture: newFixture(t)}
	f.check = keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(secret)))
	r, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "editor", Permissions: []string{"docs.*"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.editor = r.Msg.Role.Id
	r, err = f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "viewer",
		Permissions: []string{"docs.document.read"}, Sensitive: true}))
	if err != nil {
		t.Fatal(err)
	}
	f.viewer = r.Msg.Role.Id
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "writers"}))
	if err != nil {
		t.Fatal(err)
	}
	f.group = g.Msg.Group.Id
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice", Attributes: mustStruct(t, map[string]any{"department": "eng"})}))
	if err != nil {
		t.Fatal(err)
	}
	f.alice = h.Msg.Identity.Id
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: f.group, IdentityId: f.alice})); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearerInterceptor(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

func (f *policyFixture) bind(t *testing.T, b *keyplanev1.CreateBindingRequest) (string, int64) {
	t.Helper()
	b.TenantId = "acme"
	r, err := f.admin.CreateBinding(context.Background(), connect.NewRequest(b))
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	return r.Msg.Binding.Id, r.Msg.PolicyRevision
}

func (f *policyFixture) allowed(t *testing.T, identity, perm, resource string, ctxm map[string]any) *keyplanev1.CheckResponse {
	t.Helper()
	req := &keyplanev1.CheckRequest{TenantId: "acme", Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: identity},
		Permission: perm, Resource: resource, Explain: true}
	if ctxm != nil {
		req.Context = mustStruct(t, ctxm)
	}
	r, err := f.check.Check(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("check %s %s: %v", perm, resource, err)
	}
	return r.Msg
}

func TestCheckSemantics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	groupGrant, _ := f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "group", PrincipalId: f.group, RoleId: f.editor, Scope: "projects/alpha/"})
	f.bind(t, &keyplanev1.CreateBindingRequest{Effect: keyplanev1.Effect_EFFECT_DENY, PrincipalKind: "identity", PrincipalId: f.alice,
		RoleId: f.editor, Scope: "projects/alpha/secret/"})
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.viewer, Scope: "projects/beta/",
		Condition: `principal.attributes.department == "eng" && has(context.ticket)`})
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.editor, Scope: "projects/gamma/",
		ExpireTime: timestamppb.New(time.Now().Add(-time.Minute).Add(2 * time.Second))})

	for _, tc := range []struct {
		name, perm, resource string
		ctx                  map[string]any
		want                 bool
		reason               string
	}{
		{"group grant with wildcard role", "docs.document.write", "projects/alpha/docs/1", nil, true, groupGrant},
		{"prefix does not leak to siblings", "docs.document.write", "projects/alphabet/docs/1", nil, false, "no binding"},
		{"deny wins over the group allow", "docs.document.read", "projects/alpha/secret/plan", nil, false, "deny"},
		{"condition false without context", "docs.document.read", "projects/beta/x", nil, false, "no binding"},
		{"condition true", "docs.document.read", "projects/beta/x", map[string]any{"ticket": "T-1"}, true, "allowed"},
		{"role lacks the permission", "docs.document.write", "projects/beta/x", map[string]any{"ticket": "T-1"}, false, "no binding"},
		{"other service", "billing.invoice.read", "projects/alpha/x", nil, false, "no binding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := f.allowed(t, f.alice, tc.perm, tc.resource, tc.ctx)
			if got.Allowed != tc.want || !strings.Contains(got.Reason+strings.Join(got.BindingIds, ","), tc.reason) {
				t.Fatalf("got allowed=%v reason=%q bindings=%v, want %v (%q)\ntrace: %v", got.Allowed, got.Reason, got.BindingIds, tc.want, tc.reason, got.Trace)
			}
			if got.DecisionId == "" || got.PolicyRevision == 0 || len(got.Trace) == 0 {
				t.Fatalf("missing decision id, revision or trace: %+v", got)
			}
		})
	}
	// Bob is in no group and has no binding: default deny.
	if got := f.allowed(t, f.owner, "docs.document.read", "projects/alpha/x", nil); got.Allowed {
		t.Fatal("default deny")
	}

	// An identity id in upper case names the same identity (ids are compared as UUIDs).
	if got := f.allowed(t, strings.ToUpper(f.alice), "docs.document.write", "projects/alpha/a", nil); !got.Allowed {
		t.Fatalf("alice by her id in upper case: %+v, want allowed as by her id", got)
	}

	// Bulk: one revision for all items.
	bulk, err := f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.alice},
		Items:     []*keyplanev1.CheckItem{{Permission: "docs.document.write", Resource: "projects/alpha/a"}, {Permission: "docs.document.write", Resource: "projects/zeta/a"}}}))
	if err != nil || len(bulk.Msg.Results) != 2 || !bulk.Msg.Results[0].Allowed || bulk.Msg.Results[1].Allowed {
		t.Fatalf("bulk: %v %v", bulk, err)
	}

	who, err := f.check.WhoCan(ctx, connect.NewRequest(&keyplanev1.WhoCanRequest{TenantId: "acme", Permission: "docs.document.write", Resource: "projects/alpha/a"}))
	if err == nil { // the tenant admin (built-in role tenant-admin, "*" on "*") can too
		who.Msg.Holders = slices.DeleteFunc(who.Msg.Holders, func(h *keyplanev1.Holder) bool { return h.Id == f.tenantAdmin })
	}
	// The group, and alice through it (her own deny is on projects/alpha/secret/ only).
	if err != nil || len(who.Msg.Holders) != 2 || who.Msg.Holders[0].Kind != "group" || who.Msg.Holders[0].Id != f.group ||
		who.Msg.Holders[1].Id != f.alice || !slices.Equal(who.Msg.Holders[1].Via, []string{"group:" + f.group}) {
		t.Fatalf("who can: %v %v", who, err)
	}
	eff, err := f.check.EffectivePermissions(ctx, connect.NewRequest(&keyplanev1.EffectivePermissionsRequest{TenantId: "acme", IdentityId: f.alice}))
	if err != nil || len(eff.Msg.Grants) < 3 {
		t.Fatalf("effective permissions: %v %v", eff, err)
	}
}

func TestCheckWithTokenAndCallerAuthorization(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.bot, RoleId: f.viewer, Scope: "*",
		Condition: `"apikey" in token.amr`})
	tok := f.exchange(t)
	req := &keyplanev1.CheckRequest{TenantId: "acme", Principal: &keyplanev1.CheckRequest_Token{Token: tok}, Permission: "docs.document.read", Resource: "a/b"}
	r, err := f.check.Check(ctx, connect.NewRequest(req))
	if err != nil || !r.Msg.Allowed {
		t.Fatalf("check by token: %v %v", r, err)
	}
	if _, err := f.auth.RevokeToken(ctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: "acme", Token: tok})); err != nil {
		t.Fatal(err)
	}
	if r, err := f.check.Check(ctx, connect.NewRequest(req)); err != nil || r.Msg.Allowed || !strings.Contains(r.Msg.Reason, "session_revoked") {
		t.Fatalf("check with a revoked token: %v %v", r, err)
	}

	// An application authenticates with its own token and needs iam.checks.perform.
	app := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(f.exchange(t))))
	_, err = app.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: "docs.document.read", Resource: "a"}))
	wantCode(t, err, connect.CodePermissionDenied, "iam.checks.perform")
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "checker", Permissions: []string{"iam.checks.perform"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.bot, RoleId: role.Msg.Role.Id, Scope: "*"})
	if _, err := app.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: "docs.document.read", Resource: "a"})); err != nil {
		t.Fatalf("authorized application: %v", err)
	}
	anon := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url)
	_, err = anon.Check(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeUnauthenticated, "credentials")
}

func TestCheckBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	if _, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "other", Name: "O", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	// Tenant isolation: acme's identity does not exist in tenant "other", and a binding
	// in acme cannot name other's principals.
	_, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "other",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: "docs.document.read", Resource: "a"}))
	wantCode(t, err, connect.CodeNotFound, "identity")
	bindErr := func(b *keyplanev1.CreateBindingRequest) error {
		b.TenantId = "acme"
		_, err := f.admin.CreateBinding(ctx, connect.NewRequest(b))
		return err
	}
	wantCode(t, bindErr(&keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.editor, Scope: "/bad//"}), connect.CodeInvalidArgument, "scope")
	wantCode(t, bindErr(&keyplanev1.CreateBindingRequest{PrincipalKind: "robot", PrincipalId: f.alice, RoleId: f.editor, Scope: "*"}), connect.CodeInvalidArgument, "principal_kind")
	wantCode(t, bindErr(&keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.editor, Scope: "*",
		Condition: `principal.attributes.department + 1`}), connect.CodeInvalidArgument, "condition")
	wantCode(t, bindErr(&keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.editor, Scope: "*",
		Condition: `nosuchvar == 1`}), connect.CodeInvalidArgument, "condition")
	_, err = f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "bad", Permissions: []string{"Docs.Read"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "permissions[0]")
	_, err = f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "other", PrincipalKind: "identity",
		PrincipalId: f.alice, RoleId: f.editor, Scope: "*"}))
	wantCode(t, err, connect.CodeInvalidArgument, "principal_id")

	check := func(perm, res string, ctxm map[string]any) error {
		req := &keyplanev1.CheckRequest{TenantId: "acme", Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: perm, Resource: res}
		if ctxm != nil {
			req.Context = mustStruct(t, ctxm)
		}
		_, err := f.check.Check(ctx, connect.NewRequest(req))
		return err
	}
	wantCode(t, check("docs.read", "a", nil), connect.CodeInvalidArgument, "permission")
	wantCode(t, check("docs.document.read", "../etc", nil), connect.CodeInvalidArgument, "resource")
	wantCode(t, check("docs.document.read", "a", map[string]any{"blob": strings.Repeat("x", 9000)}), connect.CodeInvalidArgument, "context")
	items := make([]*keyplanev1.CheckItem, 101)
	for i := range items {
		items[i] = &keyplanev1.CheckItem{Permission: "docs.document.read", Resource: "a"}
	}
	_, err = f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.alice}, Items: items}))
	wantCode(t, err, connect.CodeInvalidArgument, "items")
}

// TestBindingRemovalIsSeenByLaterChecks: after DeleteBinding returns, every check that
// starts later (default consistency) on any of three nodes answers denied.
func TestBindingRemovalIsSeenByLaterChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	const bindings = 12
	ids := make([]string, bindings)
	users := make([]string, bindings)
	for i := range ids {
		h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "user"}))
		if err != nil {
			t.Fatal(err)
		}
		users[i] = h.Msg.Identity.Id
		ids[i], _ = f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: users[i], RoleId: f.editor, Scope: "*"})
	}
	urls := []string{f.url}
	for _, id := range []string{"us-east-2", "us-east-3"} {
		p2, err := schema.Open(ctx, f.store.Pool().Config().ConnString(), schema.PoolConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p2.Close)
		urls = append(urls, testNode(t, schema.New(p2, schema.Config{Region: "us-east", Node: id}), authConfig(f.kek, id)))
	}
	var clients []keyplanev1connect.CheckServiceClient
	for _, u := range urls {
		clients = append(clients, keyplanev1connect.NewCheckServiceClient(http.DefaultClient, u, connect.WithInterceptors(bearerInterceptor(secret))))
	}
	var h recordedHistory
	// Checkers run until the history holds enough checks after the last removal, at
	// most a minute.
	deadline := time.Now().Add(time.Minute)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 3000 && time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				i, node := rand.IntN(bindings), rand.IntN(len(clients))
				op := history.Op{Kind: history.Read, Key: ids[i], Node: urls[node], Start: time.Now()}
				r, err := clients[node].Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
					Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: users[i]}, Permission: "docs.document.read", Resource: "x/y"}))
				op.End, op.OK = time.Now(), err == nil
				op.Granted = err == nil && r.Msg.Allowed
				h.record(op)
			}
		}()
	}
	for _, i := range rand.Perm(bindings) {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		op := history.Op{Kind: history.Revoke, Key: ids[i], Start: time.Now(), Node: "admin"}
		_, err := f.admin.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: ids[i]}))
		op.End, op.OK = time.Now(), err == nil
		if err != nil {
			t.Fatal(err)
		}
		h.record(op)
	}
	h.waitAfterLast(4*bindings, deadline)
	close(stop)
	wg.Wait()
	ops := h.history()
	if vs := history.CheckRevocations(ops); len(vs) > 0 {
		t.Fatalf("%d violations, first: %v", len(vs), vs[0])
	}
	if n := history.ReadsAfterRevoke(ops); n < bindings {
		t.Fatalf("only %d checks after a removal: the history tests nothing", n)
	}
}

func TestConsistencyLevelsAndDecisionLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newPolicyFixture(t)
	id, rev := f.bind(t, &keyplanev1.CreateBindingRequest{PrincipalKind: "identity", PrincipalId: f.alice, RoleId: f.viewer, Scope: "*"})
	req := func(c *keyplanev1.Consistency) *keyplanev1.CheckResponse {
		r, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
			Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: "docs.document.read", Resource: "a", Consistency: c}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg
	}
	if r := req(&keyplanev1.Consistency{Requirement: &keyplanev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: rev}}); !r.Allowed || r.PolicyRevision < rev {
		t.Fatalf("at least as fresh: %+v", r)
	}
	// The viewer role is sensitive: the decision was logged before the answer.
	sc := schema.Scope{TenantID: "acme", Region: "us-east"}
	if n, err := f.store.CountDecisions(ctx, sc); err != nil || n != 1 {
		t.Fatalf("sensitive decision logged synchronously: %d %v", n, err)
	}
	_, err := f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.alice}, Permission: "docs.document.read", Resource: "a",
		Consistency: &keyplanev1.Consistency{Requirement: &keyplanev1.Consistency_AtLeastAsFresh{AtLeastAsFresh: rev + 100}}}))
	wantCode(t, err, connect.CodeInvalidArgument, "at_least_as_fresh")
	del, err := f.admin.DeleteBinding(ctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: "acme", BindingId: id}))
	if err != nil {
		t.Fatal(err)
	}
	// minimize_latency may still answer from the snapshot before the change...
	stale := req(&keyplanev1.Consistency{Requirement: &keyplanev1.Consistency_MinimizeLatency{MinimizeLatency: true}})
	if stale.PolicyRevision > del.Msg.PolicyRevision {
		t.Fatalf("revision went past the write: %+v", stale)
	}
	// ...but the default never does.
	if r := req(nil); r.Allowed || r.PolicyRevision != del.Msg.PolicyRevision {
		t.Fatalf("fully consistent after delete: %+v", r)
	}
	// The other decisions reach the log through the batched writer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := f.store.CountDecisions(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("decision log has %d decisions after 10s, want 3", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDecisionLogDrainsBeyondItsBuffer makes more decisions than the decision log
// buffers (10,000): a served node drains it, so no check blocks.
func TestDecisionLogDrainsBeyondItsBuffer(t *testing.T) {
	t.Parallel()
	f := newPolicyFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	items := make([]*keyplanev1.CheckItem, 100)
	for i := range items {
		items[i] = &keyplanev1.CheckItem{Permission: "docs.document.delete", Resource: "docs/d1"}
	}
	const requests = 101 // 10,100 decisions
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < requests; i += 4 {
				_, err := f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
					Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.alice}, Items: items}))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("bulk check: %v", err)
	}
}
