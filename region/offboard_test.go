package region_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

const leaverPassword = "the leaver's long password"

var operatorChange = schema.Change{Actor: "operator"}

func acmeScope() schema.Scope { return schema.Scope{TenantID: "acme", Region: "us-east"} }

// leaver is a human with everything offboarding must take away: a login session with
// its refresh token, a password, a direct binding, a group membership, an active and
// a pending elevation, and a service account it owns (with an API key and a token).
type leaver struct {
	id, email             string
	access, refresh       string
	role, binding, group  string
	elevated, pending     string
	elevationBinding      string
	nhi, nhiKey, nhiToken string
}

func newLeaver(t *testing.T, f *fixture, name string) leaver {
	t.Helper()
	ctx := context.Background()
	l := leaver{email: name + "@acme.example"}
	l.id = f.human(t, l.email, leaverPassword)
	lr, err := login(ctx, f.auth, l.email, leaverPassword)
	if err != nil {
		t.Fatal(err)
	}
	l.access, l.refresh = lr.Token.AccessToken, lr.Token.RefreshToken
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "editor-" + name,
		Permissions: []string{"docs.document.read", "docs.document.write"}}))
	if err != nil {
		t.Fatal(err)
	}
	l.role = role.Msg.Role.Id
	b, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: l.id, RoleId: l.role, Scope: "docs/"}))
	if err != nil {
		t.Fatal(err)
	}
	l.binding = b.Msg.Binding.Id
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "team-" + name}))
	if err != nil {
		t.Fatal(err)
	}
	l.group = g.Msg.Group.Id
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: l.group, IdentityId: l.id})); err != nil {
		t.Fatal(err)
	}
	for _, active := range []bool{true, false} {
		e, err := f.store.RequestElevation(ctx, operatorChange, acmeScope(), schema.Elevation{RequesterID: l.id, RoleID: l.role, Scope: "prod/",
			Duration: time.Hour, Justification: "incident"})
		if err != nil {
			t.Fatal(err)
		}
		if !active {
			l.pending = e.ID
			continue
		}
		e, _, err = f.store.DecideElevation(ctx, operatorChange, acmeScope(), e.ID, f.owner, true, 0)
		if err != nil {
			t.Fatal(err)
		}
		l.elevated, l.elevationBinding = e.ID, e.BindingID
	}
	sa, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "etl of " + name, OwnerId: l.id, Purpose: "nightly ETL",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	l.nhi = sa.Msg.Identity.Id
	k, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: l.nhi,
		Name: "etl", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	l.nhiKey = k.Msg.ApiKey
	x, err := f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: l.nhiKey}))
	if err != nil {
		t.Fatal(err)
	}
	l.nhiToken = x.Msg.Token.AccessToken
	return l
}

func (f *fixture) offboard(t *testing.T, id string, req *keyplanev1.OffboardIdentityRequest) *keyplanev1.OffboardIdentityResponse {
	t.Helper()
	if req == nil {
		req = &keyplanev1.OffboardIdentityRequest{}
	}
	req.TenantId, req.IdentityId = "acme", id
	r, err := f.admin.OffboardIdentity(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("OffboardIdentity: %v", err)
	}
	return r.Msg
}

// auditOf returns the tenant's audit events of action about identity id.
func (f *fixture) auditOf(t *testing.T, action, id string) []*keyplanev1.AuditEvent {
	t.Helper()
	return f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: action, TargetKind: "identity", TargetId: id})
}

// deprovisioned reads keyplane_deprovision_seconds{source}'s count and sum from the
// node's /metrics (the operator secret opens it on the API port).
func deprovisioned(t *testing.T, base, source string) (count, sum float64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(series, `source="`+source+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(value, &v); err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		switch {
		case strings.HasPrefix(series, "keyplane_deprovision_seconds_count{"):
			count = v
		case strings.HasPrefix(series, "keyplane_deprovision_seconds_sum{"):
			sum = v
		}
	}
	return count, sum
}

// TestOffboardRemovesEverything (issue 15, item 3): one call disables the leaver,
// revokes its session (and refresh token) and password, removes its binding and group
// membership, ends its active elevation (and its binding) and denies the pending one,
// and hands the service account it owns to its manager, whose token keeps working.
// One audit event lists all of it by id; a second call finds nothing left and writes
// nothing; the deprovisioning histogram counted the first call from its event_time.
func TestOffboardRemovesEverything(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	l := newLeaver(t, f, "leo")
	mia := f.human(t, "mia@acme.example", "mia's long password")
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: l.id, ManagerId: &mia})); err != nil {
		t.Fatal(err)
	}
	if v := f.validate(t, l.access); !v.Active {
		t.Fatalf("the leaver's token before offboarding: %+v", v)
	}
	// Today a human owning an active NHI cannot be disabled; the refusal names the way out.
	_, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: l.id}))
	wantCode(t, err, connect.CodeFailedPrecondition, "OffboardIdentity")

	event := time.Now().Add(-3 * time.Second)
	out := f.offboard(t, l.id, &keyplanev1.OffboardIdentityRequest{Reason: "HR case 7", EventTime: timestamppb.New(event)})
	if out.AlreadyOffboarded || out.Identity.Status != keyplanev1.Status_STATUS_DISABLED || out.Identity.OffboardTime == nil || out.PolicyRevision == 0 {
		t.Fatalf("offboarded identity: %+v", out)
	}
	r := out.Report
	var bindings []string
	for _, b := range r.BindingsRemoved {
		bindings = append(bindings, b.BindingId)
	}
	slices.Sort(bindings)
	want := []string{l.binding, l.elevationBinding}
	slices.Sort(want)
	if !slices.Equal(bindings, want) {
		t.Errorf("bindings removed %v, want %v", bindings, want)
	}
	if !slices.Equal(r.GroupsLeft, []string{l.group}) || r.SessionsRevoked != 1 ||
		!slices.Equal(r.ElevationsEnded, []string{l.elevated}) || !slices.Equal(r.ElevationsDenied, []string{l.pending}) {
		t.Errorf("report: %+v", r)
	}
	if len(r.CredentialsRevoked) != 1 || r.CredentialsRevoked[0].Kind != keyplanev1.CredentialKind_CREDENTIAL_KIND_PASSWORD ||
		r.CredentialsRevoked[0].IdentityId != l.id {
		t.Errorf("credentials revoked: %v", r.CredentialsRevoked)
	}
	if len(r.HandedOver) != 1 || r.HandedOver[0].IdentityId != l.nhi || r.HandedOver[0].NewOwnerId != mia || len(r.Orphaned) != 0 {
		t.Errorf("owned identities: handed over %v, orphaned %v", r.HandedOver, r.Orphaned)
	}

	// Every way in is gone...
	wantInactive(t, f.validate(t, l.access), "session_revoked")
	if _, err := f.auth.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: l.refresh})); err == nil {
		t.Error("the leaver's refresh token still rotates")
	}
	if _, err := login(ctx, f.auth, l.email, leaverPassword); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("the leaver logs in: %v", err)
	}
	bs, err := f.admin.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == l.id {
			t.Errorf("binding %s still names the leaver", b.Id)
		}
	}
	p, err := f.store.LoadPolicy(ctx, acmeScope())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(p.Members[l.group], l.id) {
		t.Error("the leaver is still a group member")
	}
	for id, status := range map[string]string{l.elevated: schema.ElevationEnded, l.pending: schema.ElevationDenied} {
		if e, err := f.store.GetElevation(ctx, acmeScope(), id); err != nil || e.Status != status {
			t.Errorf("elevation %s: %+v %v, want %s", id, e, err, status)
		}
	}
	// ...while the NHI it owned now belongs to the manager and keeps working.
	nhi, err := f.admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: l.nhi}))
	if err != nil || nhi.Msg.Identity.OwnerId != mia || nhi.Msg.Identity.Status != keyplanev1.Status_STATUS_ACTIVE {
		t.Fatalf("handed-over NHI: %v %v", nhi, err)
	}
	if v := f.validate(t, l.nhiToken); !v.Active {
		t.Errorf("the handed-over NHI's token: %+v", v)
	}

	// One audit event lists it all, by id, and names no one.
	evs := f.auditOf(t, "identity.offboard", l.id)
	if len(evs) != 1 {
		t.Fatalf("%d identity.offboard events, want 1", len(evs))
	}
	after, _ := json.Marshal(evs[0].After.AsMap())
	for _, id := range []string{l.binding, l.elevationBinding, l.role, "docs/", l.group, l.elevated, l.pending, l.nhi, mia, "HR case 7",
		r.CredentialsRevoked[0].CredentialId} {
		if !strings.Contains(string(after), id) {
			t.Errorf("audit event lacks %q: %s", id, after)
		}
	}
	if strings.Contains(string(after), l.email) {
		t.Errorf("audit event carries the leaver's email: %s", after)
	}
	if got := evs[0].After.AsMap()["sessions_revoked"]; got != float64(1) {
		t.Errorf("sessions_revoked %v", got)
	}
	n, sum := deprovisioned(t, f.url, "api")
	if n != 1 || sum < 3 {
		t.Errorf("keyplane_deprovision_seconds: count %v sum %v, want one observation of at least 3s (from event_time)", n, sum)
	}

	// Idempotent: nothing left, no new event, not counted again.
	again := f.offboard(t, l.id, nil)
	if !again.AlreadyOffboarded || again.Identity.Status != keyplanev1.Status_STATUS_DISABLED || len(again.Report.BindingsRemoved) != 0 ||
		len(again.Report.CredentialsRevoked) != 0 || again.Report.SessionsRevoked != 0 || len(again.Report.HandedOver) != 0 || again.PolicyRevision != 0 {
		t.Errorf("second offboarding: %+v", again)
	}
	if evs := f.auditOf(t, "identity.offboard", l.id); len(evs) != 1 {
		t.Errorf("%d identity.offboard events after the second call, want 1", len(evs))
	}
	if n, _ := deprovisioned(t, f.url, "api"); n != 1 {
		t.Errorf("the second call was counted: %v", n)
	}
}

// TestOffboardFreezesOrphanedNHIs: a leaver without a manager leaves its service
// account frozen — its credentials revoked, its tokens inactive ("identity_frozen"),
// no binding, membership or credential for it — and reported as orphaned, until
// UpdateIdentity gives it an owner, which unfreezes it (its old tokens stay invalid).
func TestOffboardFreezesOrphanedNHIs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	tok := f.exchange(t) // f.bot's, owned by f.owner
	out := f.offboard(t, f.owner, nil)
	if len(out.Report.Orphaned) != 1 || out.Report.Orphaned[0].IdentityId != f.bot || out.Report.Orphaned[0].Status != keyplanev1.Status_STATUS_FROZEN ||
		len(out.Report.HandedOver) != 0 {
		t.Fatalf("orphaned: %v, handed over %v", out.Report.Orphaned, out.Report.HandedOver)
	}
	var revoked []string
	for _, c := range out.Report.CredentialsRevoked {
		if c.IdentityId == f.bot {
			revoked = append(revoked, c.Kind.String())
		}
	}
	slices.Sort(revoked)
	if !slices.Equal(revoked, []string{"CREDENTIAL_KIND_API_KEY", "CREDENTIAL_KIND_CLIENT_SECRET"}) {
		t.Errorf("the frozen NHI's credentials revoked: %v", revoked)
	}
	wantInactive(t, f.validate(t, tok), "identity_frozen")
	_, err := f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: f.apiKey}))
	wantCode(t, err, connect.CodeUnauthenticated, "api_key")
	if got := f.clientToken(t, "acme", f.clientID, f.secret, nil); got.status == http.StatusOK {
		t.Errorf("the frozen NHI's client still gets tokens: %v", got.body)
	}
	bot, err := f.admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: f.bot}))
	if err != nil || bot.Msg.Identity.Status != keyplanev1.Status_STATUS_FROZEN {
		t.Fatalf("frozen NHI: %v %v", bot, err)
	}

	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "bots"}))
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]func() error{
		"CreateBinding": func() error {
			_, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
				PrincipalId: f.bot, RoleId: role.Msg.Role.Id, Scope: "docs/"}))
			return err
		},
		"AddGroupMember": func() error {
			_, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: f.bot}))
			return err
		},
		"CreateAPIKey": func() error {
			_, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.bot, Name: "again",
				ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
			return err
		},
		"CreateClient": func() error {
			_, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: f.bot, Name: "again"}))
			return err
		},
		"EnableIdentity": func() error {
			_, err := f.admin.EnableIdentity(ctx, connect.NewRequest(&keyplanev1.EnableIdentityRequest{TenantId: "acme", Id: f.bot}))
			return err
		},
	}
	for name, call := range refused {
		t.Run(name, func(t *testing.T) { wantCode(t, call(), connect.CodeFailedPrecondition, "frozen") })
	}

	// A new owner unfreezes it; credentials must be minted anew, old tokens stay dead.
	nora := f.human(t, "nora@acme.example", "nora's long password")
	up, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: f.bot, OwnerId: &nora}))
	if err != nil || up.Msg.Identity.Status != keyplanev1.Status_STATUS_ACTIVE || up.Msg.Identity.OwnerId != nora {
		t.Fatalf("unfreeze: %v %v", up, err)
	}
	wantInactive(t, f.validate(t, tok), "revoked")
	k, err := f.admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: f.bot, Name: "new",
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	x, err := f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: k.Msg.ApiKey}))
	if err != nil || !f.validate(t, x.Msg.Token.AccessToken).Active {
		t.Fatalf("a new key of the unfrozen NHI: %v", err)
	}
}

// TestOffboardBadInputWritesNothing: a malformed or unknown identity, an event_time in
// the future, and an offboarding that would leave the tenant without a tenant admin
// (the bootstrap admin's owner, who has no manager, would see the admin frozen) are
// refused, and the refused offboarding leaves the identity, its binding, its
// membership and the admin as they were, with no audit event.
func TestOffboardBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		req  *keyplanev1.OffboardIdentityRequest
		code connect.Code
		msg  string
	}{
		{"no id", &keyplanev1.OffboardIdentityRequest{TenantId: "acme"}, connect.CodeInvalidArgument, "identity_id"},
		{"not a uuid", &keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: "leo"}, connect.CodeInvalidArgument, "identity_id"},
		{"unknown", &keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: "00000000-0000-4000-8000-0000000000ff"}, connect.CodeNotFound, "identity_id"},
		{"future event", &keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: f.owner,
			EventTime: timestamppb.New(time.Now().Add(time.Hour))}, connect.CodeInvalidArgument, "event_time"},
		{"long reason", &keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: f.owner, Reason: strings.Repeat("x", 501)},
			connect.CodeInvalidArgument, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.admin.OffboardIdentity(ctx, connect.NewRequest(tc.req))
			wantCode(t, err, tc.code, tc.msg)
		})
	}

	admin, err := f.admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: f.tenantAdmin}))
	if err != nil {
		t.Fatal(err)
	}
	owner := admin.Msg.Identity.OwnerId
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: owner, RoleId: role.Msg.Role.Id, Scope: "docs/"})); err != nil {
		t.Fatal(err)
	}
	g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "owners"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: "acme", GroupId: g.Msg.Group.Id, IdentityId: owner})); err != nil {
		t.Fatal(err)
	}
	before, err := f.store.LoadPolicy(ctx, acmeScope())
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.admin.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: owner}))
	wantCode(t, err, connect.CodeFailedPrecondition, "without an active tenant admin")
	after, err := f.store.LoadPolicy(ctx, acmeScope())
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision != before.Revision || len(after.Bindings) != len(before.Bindings) || !slices.Contains(after.Members[g.Msg.Group.Id], owner) {
		t.Errorf("policy changed by a refused offboarding: revision %d → %d, %d → %d bindings", before.Revision, after.Revision,
			len(before.Bindings), len(after.Bindings))
	}
	for _, id := range []string{owner, f.tenantAdmin} {
		i, err := f.store.GetIdentity(ctx, acmeScope(), id)
		if err != nil || i.Status != schema.StatusActive || !i.OffboardedAt.IsZero() {
			t.Errorf("identity %s after a refused offboarding: %+v %v", id, i, err)
		}
	}
	if evs := f.auditOf(t, "identity.offboard", owner); len(evs) != 0 {
		t.Errorf("a refused offboarding wrote %d audit events", len(evs))
	}
	if n, _ := deprovisioned(t, f.url, "api"); n != 0 {
		t.Errorf("refused offboardings counted: %v", n)
	}
}

// TestEraseIdentity (issue 15, item 5): erasure is refused before offboarding (as
// outside clients see it in Connect JSON); after it the identity's name, email,
// attributes and credential secrets are gone from its rows, earlier audit events about
// it no longer carry its name or email, and a tombstone holds the email's SHA-256. The
// erased identity cannot be changed or enabled; erasing again changes nothing.
func TestEraseIdentity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	const email, name = "Erin@Acme.example", "Erin Example"
	id := f.human(t, email, leaverPassword)
	attrs, _ := structpb.NewStruct(map[string]any{"phone": "+1 555 0100", "department": "eng"})
	n := name
	if _, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: id, DisplayName: &n,
		Attributes: attrs})); err != nil {
		t.Fatal(err)
	}
	status, body := connectJSON(t, f.url, "/keyplane.v1.AdminService/EraseIdentity", "acme", map[string]any{"tenantId": "acme", "identityId": id})
	if status != http.StatusBadRequest || body["code"] != "failed_precondition" || !strings.Contains(fmt.Sprint(body["message"]), "OffboardIdentity") {
		t.Fatalf("erasing before offboarding: %d %v", status, body)
	}
	if i, err := f.store.GetIdentity(ctx, acmeScope(), id); err != nil || i.Email != email || i.ErasedAt != (time.Time{}) {
		t.Fatalf("a refused erasure changed the identity: %+v %v", i, err)
	}

	f.offboard(t, id, nil)
	r, err := f.admin.EraseIdentity(ctx, connect.NewRequest(&keyplanev1.EraseIdentityRequest{TenantId: "acme", IdentityId: id}))
	if err != nil {
		t.Fatal(err)
	}
	if r.Msg.AlreadyErased || r.Msg.Identity.DisplayName != schema.ErasedDisplayName || r.Msg.Identity.Email != "" ||
		len(r.Msg.Identity.Attributes.AsMap()) != 0 || r.Msg.Identity.EraseTime == nil || r.Msg.AuditEventsRedacted < 2 {
		t.Fatalf("erased: %+v", r.Msg)
	}
	// Read back through the store, and the secrets straight from the table.
	i, err := f.store.GetIdentity(ctx, acmeScope(), id)
	if err != nil || i.DisplayName != schema.ErasedDisplayName || i.Email != "" || len(i.Attributes) != 0 || i.ErasedAt.IsZero() {
		t.Fatalf("erased row: %+v %v", i, err)
	}
	var secrets int
	if err := f.store.Pool().QueryRow(ctx, `SELECT count(*) FROM credentials WHERE tenant_id = 'acme' AND identity_id = $1
  AND (secret_hash IS NOT NULL OR secret_encrypted IS NOT NULL)`, id).Scan(&secrets); err != nil || secrets != 0 {
		t.Fatalf("credential secrets left: %d %v", secrets, err)
	}
	// The audit trail keeps its events, without the personal data.
	evs := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{TargetKind: "identity", TargetId: id})
	if len(evs) < 4 { // create, update, offboard, erase
		t.Fatalf("audit events of the erased identity: %d", len(evs))
	}
	for _, e := range evs {
		b, _ := json.Marshal([]any{e.Before.AsMap(), e.After.AsMap()})
		for _, personal := range []string{"Erin", "erin@", "555 0100"} { // the whole phone number: "555" alone turns up in random UUIDs
			if strings.Contains(strings.ToLower(string(b)), strings.ToLower(personal)) {
				t.Errorf("event %s (%s) still holds %q: %s", e.Id, e.Action, personal, b)
			}
		}
	}
	tomb := f.auditOf(t, "identity.erase", id)
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	if len(tomb) != 1 || tomb[0].After.AsMap()["email_sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("tombstone: %v", tomb)
	}

	again, err := f.admin.EraseIdentity(ctx, connect.NewRequest(&keyplanev1.EraseIdentityRequest{TenantId: "acme", IdentityId: id}))
	if err != nil || !again.Msg.AlreadyErased {
		t.Fatalf("erasing again: %v %v", again, err)
	}
	if tomb := f.auditOf(t, "identity.erase", id); len(tomb) != 1 {
		t.Errorf("%d tombstones after erasing twice", len(tomb))
	}
	back := "erin@acme.example"
	_, err = f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: id, Email: &back}))
	wantCode(t, err, connect.CodeFailedPrecondition, "erased")
	_, err = f.admin.EnableIdentity(ctx, connect.NewRequest(&keyplanev1.EnableIdentityRequest{TenantId: "acme", Id: id}))
	wantCode(t, err, connect.CodeFailedPrecondition, "erased")
}

// TestManagerField: manager_id names an active human of the tenant other than the
// identity itself, and only humans have one; a wrong one is refused naming the field.
func TestManagerField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	mia := f.human(t, "mia@acme.example", "mia's long password")
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Hal", ManagerId: mia}))
	if err != nil || h.Msg.Identity.ManagerId != mia {
		t.Fatalf("create with a manager: %v %v", h, err)
	}
	hal := h.Msg.Identity.Id
	self, bot, unknown, bad := hal, f.bot, "00000000-0000-4000-8000-0000000000ff", "mia"
	for _, tc := range []struct {
		name string
		id   string
		to   *string
	}{{"self", hal, &self}, {"an NHI", hal, &bot}, {"unknown", hal, &unknown}, {"not a uuid", hal, &bad}, {"on an NHI", f.bot, &mia}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: tc.id, ManagerId: tc.to}))
			wantCode(t, err, connect.CodeInvalidArgument, "manager_id")
		})
	}
	if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: mia})); err != nil {
		t.Fatal(err)
	}
	_, err = f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Ida", ManagerId: mia}))
	wantCode(t, err, connect.CodeInvalidArgument, "manager_id")
	none := ""
	up, err := f.admin.UpdateIdentity(ctx, connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: hal, ManagerId: &none}))
	if err != nil || up.Msg.Identity.ManagerId != "" {
		t.Fatalf("clearing the manager: %v %v", up, err)
	}
}

// TestOffboardingIsLinearizable (issue 15, item 3): while validations of the leaver's
// tokens run concurrently on three nodes (each with its own pool, as separate
// processes), OffboardIdentity is called once; the history checker finds no
// validation that started after the call returned and still said active.
func TestOffboardingIsLinearizable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	urls := []string{f.url}
	for _, id := range []string{"us-east-2", "us-east-3"} {
		p2, err := schema.Open(ctx, f.store.Pool().Config().ConnString(), schema.PoolConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p2.Close)
		urls = append(urls, testNode(t, schema.New(p2, schema.Config{Region: "us-east", Node: id}), authConfig(f.kek, id)))
	}
	clients := make([]keyplanev1connect.AuthServiceClient, len(urls))
	for i, u := range urls {
		clients[i] = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, u)
	}

	// The leaver's tokens: two logins and a dozen client-credentials tokens of its
	// own OAuth client.
	l := newLeaver(t, f, "lin")
	second, err := login(ctx, f.auth, l.email, leaverPassword)
	if err != nil {
		t.Fatal(err)
	}
	toks := []string{l.access, second.Token.AccessToken}
	cl, err := f.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: l.id, Name: "laptop"}))
	if err != nil {
		t.Fatal(err)
	}
	for range 12 {
		toks = append(toks, f.accessToken(t, "acme", cl.Msg.ClientId, cl.Msg.ClientSecret, nil))
	}
	key := func(tok string) string { return tok[len(tok)-16:] }

	var mu sync.Mutex
	var ops []history.Op
	record := func(op history.Op) {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for n := 0; n < 20000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tok, node := toks[rand.IntN(len(toks))], rand.IntN(len(clients))
				op := history.Op{Kind: history.Read, Key: key(tok), Node: urls[node], Start: time.Now()}
				resp, err := clients[node].ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: tok}))
				op.End = time.Now()
				op.OK = err == nil
				op.Granted = err == nil && resp.Msg.Active
				record(op)
			}
		})
	}
	time.Sleep(time.Duration(300+rand.IntN(400)) * time.Millisecond)
	node := rand.IntN(len(urls))
	start := time.Now()
	_, err = adminClient(urls[node], secret).OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: l.id}))
	end := time.Now()
	if err != nil {
		t.Errorf("offboard: %v", err)
	}
	for _, tok := range toks { // one offboarding revokes every token of the leaver
		record(history.Op{Kind: history.Revoke, Key: key(tok), Node: urls[node], Start: start, End: end, OK: err == nil})
	}
	// Validate on until the history holds enough validations started after the
	// offboarding (on a loaded machine half a second is not always enough), for at most
	// 20 s.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		after := history.ReadsAfterRevoke(ops)
		mu.Unlock()
		if after >= 4*len(toks) {
			break
		}
	}
	close(stop)
	wg.Wait()

	if vs := history.CheckRevocations(ops); len(vs) > 0 {
		for _, v := range vs[:min(len(vs), 10)] {
			t.Error(v)
		}
		t.Fatalf("%d linearizability violations in %d operations", len(vs), len(ops))
	}
	granted := 0
	for _, op := range ops {
		if op.Kind == history.Read && op.OK && op.Granted {
			granted++
		}
	}
	tested := history.ReadsAfterRevoke(ops)
	if tested < len(toks) || granted == 0 {
		t.Fatalf("%d validations after the offboarding, %d active before it: the history does not test the guarantee", tested, granted)
	}
	t.Logf("%d operations, %d active validations before, %d validations after the offboarding, 0 violations", len(ops), granted, tested)
}

// TestSecurityOffboardingNeedsStepUp: offboarding and erasure are sensitive. A human
// identity manager (the built-in role grants iam.identities.offboard and .erase) with
// a password-only token is asked to step up and nothing is offboarded; with a fresh
// second factor both calls go through. Without the permission: permission_denied
// (TestAdminPermissionMatrix).
func TestSecurityOffboardingNeedsStepUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newAdminFixture(t, nil)
	const email, password = "hal@acme.example", "hal's long password"
	human := func(name, email string) string {
		h, err := f.op.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name, Email: email}))
		if err != nil {
			t.Fatal(err)
		}
		return h.Msg.Identity.Id
	}
	hal, tom := human("Hal", email), human("Tom", "tom@acme.example")
	if _, err := f.op.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: hal, Password: password})); err != nil {
		t.Fatal(err)
	}
	f.bind(t, hal, schema.RoleIdentityManager, "*")
	lr, err := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url).Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme",
		Email: email, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	pwd := adminClient(f.url, lr.Msg.Token.AccessToken)
	_, err = pwd.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: tom}))
	wantStepUp(t, err, "600")
	if i, err := f.op.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: tom})); err != nil ||
		i.Msg.Identity.Status != keyplanev1.Status_STATUS_ACTIVE || i.Msg.Identity.OffboardTime != nil {
		t.Fatalf("offboarded without step-up: %v %v", i, err)
	}
	mfa := adminClient(f.url, mfaLogin(t, f.url, "acme", hal, email, password))
	if _, err := mfa.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: tom})); err != nil {
		t.Fatalf("offboarding with a second factor: %v", err)
	}
	_, err = pwd.EraseIdentity(ctx, connect.NewRequest(&keyplanev1.EraseIdentityRequest{TenantId: "acme", IdentityId: tom}))
	wantStepUp(t, err, "600")
	if r, err := mfa.EraseIdentity(ctx, connect.NewRequest(&keyplanev1.EraseIdentityRequest{TenantId: "acme", IdentityId: tom})); err != nil ||
		r.Msg.Identity.DisplayName != schema.ErasedDisplayName {
		t.Fatalf("erasing with a second factor: %v %v", r, err)
	}
}
