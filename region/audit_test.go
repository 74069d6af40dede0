package region_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// listAudit pages through the tenant's audit events matching req's filters.
func (f *fixture) listAudit(t *testing.T, req *keyplanev1.ListAuditEventsRequest) []*keyplanev1.AuditEvent {
	t.Helper()
	req.TenantId = f.tenant
	var out []*keyplanev1.AuditEvent
	for {
		r, err := f.admin.ListAuditEvents(context.Background(), connect.NewRequest(req))
		if err != nil {
			t.Fatalf("ListAuditEvents: %v", err)
		}
		out = append(out, r.Msg.Events...)
		if r.Msg.NextPageToken == "" {
			return out
		}
		req.PageToken = r.Msg.NextPageToken
	}
}

// TestAuditNamesTheActor (issue 13, item 5): an audit event names who acted, of what
// kind, through which session, access token and client, so that a change made with a
// token is traceable to the login or client that minted it.
func TestAuditNamesTheActor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	alice := f.human(t, "alice@acme.example", "alice's long password")
	lr, err := login(ctx, f.auth, "alice@acme.example", "alice's long password")
	if err != nil {
		t.Fatal(err)
	}
	claims := f.validate(t, lr.Token.AccessToken).Claims
	req := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: alice})
	req.Header().Set("Authorization", "Bearer "+lr.Token.AccessToken)
	if _, err := f.auth.EnrollTOTP(ctx, req); err != nil {
		t.Fatal(err)
	}
	evs := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Actor: "identity:" + alice, Action: "credential.enroll_totp"})
	if len(evs) != 1 {
		t.Fatalf("%d enrolment events by alice, want 1", len(evs))
	}
	e := evs[0]
	if e.ActorKind != "human" || e.SessionId != lr.Token.SessionId || e.TokenId != claims.TokenId || e.TokenId == "" || e.BreakGlass ||
		e.Region != "us-east" || e.RequestId == "" {
		t.Errorf("enrolment event: kind %q session %q (want %q) token %q (want %q) break-glass %v region %q request %q",
			e.ActorKind, e.SessionId, lr.Token.SessionId, e.TokenId, claims.TokenId, e.BreakGlass, e.Region, e.RequestId)
	}

	// A client_credentials token: the session's creation names the client.
	if r := postForm(t, f.url+"/t/acme/oauth2/token", f.clientID, f.secret, url.Values{"grant_type": {"client_credentials"}}); r.status != 200 {
		t.Fatalf("token endpoint: %d %v", r.status, r.body)
	}
	byClient := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Actor: "client:" + f.clientID})
	if len(byClient) == 0 || byClient[0].ActorKind != "client" || byClient[0].ClientId != f.clientID {
		t.Fatalf("client events: %v", byClient)
	}
	// The operator's own changes say so.
	op := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Actor: "operator", Action: "identity.create", TargetId: alice})
	if len(op) != 1 || op[0].ActorKind != "operator" {
		t.Fatalf("operator's creation of alice: %v", op)
	}
}

// TestAuditFilters: ListAuditEvents narrows by actor, action (exact or a prefix ending
// in '.'), target and time range, pages with the filters kept, and refuses bad input
// naming the field.
func TestAuditFilters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	before := time.Now() // events are stamped by the database's clock, on this same machine
	var ids []string
	for i := range 5 {
		h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Person " + string(rune('A'+i))}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.Msg.Identity.Id)
	}
	if _, err := f.admin.DisableIdentity(ctx, connect.NewRequest(&keyplanev1.DisableIdentityRequest{TenantId: "acme", Id: ids[0]})); err != nil {
		t.Fatal(err)
	}
	all := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{})
	creates := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "identity.create", PageSize: 2})
	prefix := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "identity.", PageSize: 3})
	if len(creates) < 5 || len(prefix) != len(creates)+1 || len(all) <= len(prefix) {
		t.Fatalf("all %d, identity.create %d (paged by 2), identity.* %d (paged by 3): want creates ≥ 5, one more under the prefix, fewer than all",
			len(all), len(creates), len(prefix))
	}
	for _, e := range prefix {
		if e.Action != "identity.create" && e.Action != "identity.disable" {
			t.Errorf("prefix identity. returned %s", e.Action)
		}
	}
	target := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{TargetKind: "identity", TargetId: ids[0]})
	if len(target) != 2 {
		t.Fatalf("%d events about %s, want 2 (create, disable)", len(target), ids[0])
	}
	since := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{StartTime: timestamppb.New(before), Action: "identity."})
	if len(since) != 6 {
		t.Fatalf("%d identity events since the test's start, want 6", len(since))
	}
	if none := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{EndTime: timestamppb.New(before), Action: "identity.disable"}); len(none) != 0 {
		t.Fatalf("%d disable events before the test began, want 0", len(none))
	}
	_, err := f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme",
		StartTime: timestamppb.New(before), EndTime: timestamppb.New(before.Add(-time.Minute))}))
	wantCode(t, err, connect.CodeInvalidArgument, "end_time")
	_, err = f.admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme",
		StartTime: &timestamppb.Timestamp{Seconds: 1, Nanos: -5}}))
	wantCode(t, err, connect.CodeInvalidArgument, "start_time")
}
