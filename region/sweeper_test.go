package region_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// stoppableNode is testNode with a stop function (idempotent; also run at cleanup).
func stoppableNode(t *testing.T, store *schema.Store, cfg region.Config) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.New(cfg, store, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// skewedClock is a node clock off by a fixed amount.
func skewedClock(d time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(d) }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSweeperTwoNodesActOnce runs the sweeper on two real nodes of one region whose
// clocks are ten years off in opposite directions: the NHI of an owner whose expiry
// passed is frozen, and the owner disabled, exactly once between them (one audit event
// each, one action in the two nodes' metrics); an NHI expiring tomorrow is left alone
// whatever the nodes' clocks say (the database's clock decides); when the lease
// holder stops, the other node takes the lease and carries on.
func TestSweeperTwoNodesActOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := schematest.NewStore(t, "us-east")
	k := testKEK(t)
	node := func(id string, every time.Duration, skew time.Duration) (string, func()) {
		cfg := authConfig(k, id)
		cfg.GovernanceSweepEvery, cfg.Now, cfg.MetricsPublic = every, skewedClock(skew), true
		return stoppableNode(t, schema.New(base.Pool(), schema.Config{Region: "us-east", Node: id}), cfg)
	}
	const decade = 10 * 365 * 24 * time.Hour
	adminURL, _ := node("us-east-admin", -1, 0) // the tests' admin calls; no sweeper
	admin := adminClient(adminURL, secret)
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	mk := func(req *keyplanev1.CreateIdentityRequest) string {
		req.TenantId = "acme"
		r, err := admin.CreateIdentity(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Identity.Id
	}
	human := keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN
	sa := keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT
	contractor := mk(&keyplanev1.CreateIdentityRequest{Kind: human, DisplayName: "Contractor", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))})
	boss := mk(&keyplanev1.CreateIdentityRequest{Kind: human, DisplayName: "Boss"})
	orphan := mk(&keyplanev1.CreateIdentityRequest{Kind: sa, DisplayName: "etl", OwnerId: contractor, Purpose: "nightly ETL",
		ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))})
	tomorrow := mk(&keyplanev1.CreateIdentityRequest{Kind: sa, DisplayName: "short-lived", OwnerId: boss, Purpose: "one-off",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))})
	key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "acme", IdentityId: orphan, Name: "etl",
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	urlA, stopA := node("us-east-1", 25*time.Millisecond, decade)
	urlB, stopB := node("us-east-2", 25*time.Millisecond, -decade)
	if _, err := base.Pool().Exec(ctx, `UPDATE identities SET expires_at = now() - INTERVAL '1 second' WHERE id = $1`, contractor); err != nil {
		t.Fatal(err)
	}
	status := func(id string) keyplanev1.Status {
		r, err := admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Identity.Status
	}
	waitFor(t, "the orphan frozen", func() bool { return status(orphan) == keyplanev1.Status_STATUS_FROZEN })
	passes := func() float64 {
		var n float64
		for _, u := range []string{urlA, urlB} {
			for _, r := range []string{"swept", "standby", "lost", "error"} {
				n += metricValue(t, u+"/metrics", "keyplane_governance_sweeps_total", `result="`+r+`"`)
			}
		}
		return n
	}
	after := passes()
	waitFor(t, "more sweeps", func() bool { return passes() >= after+10 })
	if got := status(contractor); got != keyplanev1.Status_STATUS_DISABLED {
		t.Errorf("contractor: %v, want disabled", got)
	}
	if got := status(tomorrow); got != keyplanev1.Status_STATUS_ACTIVE {
		t.Errorf("an NHI expiring tomorrow is %v: a node's clock decided", got)
	}
	audit := func(action, id string) []*keyplanev1.AuditEvent {
		r, err := admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme", Action: action, TargetId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Events
	}
	freezes, expiries := audit("identity.freeze", orphan), audit("identity.expire", contractor)
	if len(freezes) != 1 || len(expiries) != 1 {
		t.Fatalf("%d freezes, %d expiries of the contractor; want exactly one each", len(freezes), len(expiries))
	}
	if freezes[0].Actor != "system" || freezes[0].After.AsMap()["reason"] != "owner_disabled" && freezes[0].After.AsMap()["reason"] != "owner_expired" {
		t.Errorf("freeze event: %v", freezes[0])
	}
	for _, action := range []string{"identity_freeze", "identity_expire"} {
		if n := metricValue(t, urlA+"/metrics", "keyplane_governance_actions_total", `action="`+action+`"`) +
			metricValue(t, urlB+"/metrics", "keyplane_governance_actions_total", `action="`+action+`"`); n != 1 {
			t.Errorf("%s counted %v times across the nodes, want 1", action, n)
		}
	}
	standby := metricValue(t, urlA+"/metrics", "keyplane_governance_sweeps_total", `result="standby"`) + metricValue(t, urlB+"/metrics", "keyplane_governance_sweeps_total", `result="standby"`)
	if standby == 0 {
		t.Error("no node ever stood by: both swept at once")
	}
	creds, err := admin.ListCredentials(ctx, connect.NewRequest(&keyplanev1.ListCredentialsRequest{TenantId: "acme", IdentityId: orphan}))
	if err != nil || len(creds.Msg.Credentials) != 1 || creds.Msg.Credentials[0].RevokeTime == nil || creds.Msg.Credentials[0].Id != key.Msg.Credential.Id {
		t.Fatalf("the frozen NHI's key: %v %v", creds, err)
	}

	// The holder stops; the other node takes the lease over and does the next job.
	lease, err := base.GetLease(ctx, schema.Scope{Region: "us-east"}, region.SweepLease)
	if err != nil {
		t.Fatal(err)
	}
	survivor := "us-east-2"
	if lease.Holder == "us-east-2" {
		stopB()
		survivor = "us-east-1"
	} else {
		stopA()
	}
	if _, err := base.Pool().Exec(ctx, `UPDATE identities SET expires_at = now() - INTERVAL '1 second' WHERE id = $1`, tomorrow); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the expired NHI disabled", func() bool { return status(tomorrow) == keyplanev1.Status_STATUS_DISABLED })
	evs := audit("identity.expire", tomorrow)
	if len(evs) != 1 || evs[0].Node != survivor {
		t.Fatalf("expiry after the takeover: %v, want one event by %s", evs, survivor)
	}
	if l, err := base.GetLease(ctx, schema.Scope{Region: "us-east"}, region.SweepLease); err != nil || l.Holder != survivor {
		t.Fatalf("lease after the takeover: %+v %v", l, err)
	}
}
