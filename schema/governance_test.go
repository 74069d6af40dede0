package schema_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestLeaseDatabaseClock: a lease is held by one holder at a time, renewed by it,
// refused to others while live, and taken over once its TTL has passed by the
// database's clock; a release frees it at once.
func TestLeaseDatabaseClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := schema.Scope{Region: "us-east"}
	const name = "governance.sweep"
	if ok, err := s.AcquireLease(ctx, sc, name, "node-a", 400*time.Millisecond); err != nil || !ok {
		t.Fatalf("a acquires a free lease: %v %v", ok, err)
	}
	first, err := s.GetLease(ctx, sc, name)
	if err != nil || first.Holder != "node-a" {
		t.Fatalf("lease: %+v %v", first, err)
	}
	if ok, err := s.AcquireLease(ctx, sc, name, "node-b", time.Hour); err != nil || ok {
		t.Fatalf("b acquires a's live lease: %v %v", ok, err)
	}
	if ok, err := s.AcquireLease(ctx, sc, name, "node-a", 400*time.Millisecond); err != nil || !ok {
		t.Fatalf("a renews: %v %v", ok, err)
	}
	renewed, err := s.GetLease(ctx, sc, name)
	if err != nil || !renewed.AcquiredAt.Equal(first.AcquiredAt) || !renewed.ExpiresAt.After(first.ExpiresAt) {
		t.Fatalf("renewal: first %+v, renewed %+v (%v)", first, renewed, err)
	}
	// a stops renewing: b gets the lease once it expired by the database's clock,
	// never before.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := s.AcquireLease(ctx, sc, name, "node-b", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never took over the expired lease")
		}
		time.Sleep(50 * time.Millisecond)
	}
	taken, err := s.GetLease(ctx, sc, name)
	if err != nil || taken.Holder != "node-b" || taken.AcquiredAt.Before(renewed.ExpiresAt) {
		t.Fatalf("takeover at %v before a's lease expired at %v (%+v, %v)", taken.AcquiredAt, renewed.ExpiresAt, taken, err)
	}
	if ok, err := s.AcquireLease(ctx, sc, name, "node-a", time.Hour); err != nil || ok {
		t.Fatalf("a gets b's lease back: %v %v", ok, err)
	}
	if err := s.ReleaseLease(ctx, sc, name, "node-a"); err != nil { // not a's: nothing happens
		t.Fatal(err)
	}
	if ok, _ := s.AcquireLease(ctx, sc, name, "node-a", time.Hour); ok {
		t.Fatal("a released b's lease")
	}
	if err := s.ReleaseLease(ctx, sc, name, "node-b"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireLease(ctx, sc, name, "node-a", time.Hour); err != nil || !ok {
		t.Fatalf("a after b released: %v %v", ok, err)
	}
	// Leases of another tenant or name are separate.
	if ok, err := s.AcquireLease(ctx, schema.Scope{Region: "us-east", TenantID: "acme"}, name, "node-b", time.Hour); err != nil || !ok {
		t.Fatalf("tenant lease: %v %v", ok, err)
	}
	for _, tc := range []struct {
		field  string
		sc     schema.Scope
		name   string
		holder string
		ttl    time.Duration
	}{
		{"region", schema.Scope{}, name, "x", time.Second},
		{"name", sc, "", "x", time.Second},
		{"holder", sc, name, "", time.Second},
		{"ttl", sc, name, "x", 0},
		{"ttl", sc, name, "x", -time.Second},
		{"ttl", sc, name, "x", 48 * time.Hour},
	} {
		_, err := s.AcquireLease(ctx, tc.sc, tc.name, tc.holder, tc.ttl)
		wantField(t, err, tc.field)
	}
}

// sweepWorld is a tenant with one target of every sweep action: an expired service
// account, an expired API key, an NHI whose owner expired (the owner is disabled and
// the NHI frozen in one sweep) and an API key due for rotation.
type sweepWorld struct {
	sc                                      schema.Scope
	owner, orphan, expiredNHI, healthy      schema.Identity
	expiredKey, dueKey, freshKey, orphanKey string
}

func newSweepWorld(t *testing.T, s *schema.Store) sweepWorld {
	t.Helper()
	ctx := context.Background()
	tn := mustTenant(t, s, "acme", "us-east")
	w := sweepWorld{sc: tn.Scope()}
	boss := mustHuman(t, s, w.sc, "Boss")
	var err error
	w.owner, err = s.CreateIdentity(ctx, op, w.sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Contractor", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	nhi := func(name, owner string) schema.Identity {
		i, err := s.CreateIdentity(ctx, op, w.sc, schema.NewIdentity{Kind: schema.KindServiceAccount, DisplayName: name, OwnerID: owner,
			Purpose: "tests", ExpiresAt: time.Now().Add(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	key := func(i schema.Identity, keyID string) string {
		c, err := s.CreateKeyCredential(ctx, op, w.sc, schema.NewKeyCredential{IdentityID: i.ID, Kind: schema.CredAPIKey, KeyID: keyID,
			Hash: []byte(keyID), ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	w.orphan, w.expiredNHI, w.healthy = nhi("orphan", w.owner.ID), nhi("expired", boss.ID), nhi("healthy", boss.ID)
	w.orphanKey = key(w.orphan, "orphan-key")
	w.expiredKey, w.dueKey, w.freshKey = key(w.healthy, "expired-key"), key(w.healthy, "due-key"), key(w.healthy, "fresh-key")
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE identities SET expires_at = now() - INTERVAL '1 minute' WHERE id = ANY($1::UUID[])`, []string{w.owner.ID, w.expiredNHI.ID})
	exec(`UPDATE credentials SET expires_at = now() - INTERVAL '1 minute' WHERE id = $1`, w.expiredKey)
	// Created 85 days ago: the normal tier's 90-day deadline is within the 7-day notice.
	exec(`UPDATE credentials SET created_at = now() - INTERVAL '85 days' WHERE id = $1`, w.dueKey)
	return w
}

// TestSweepRacingSweepers: six sweepers on two stores (two nodes' worth) sweep the
// same tenant at once, twice over; every action happens exactly once (one audit
// event each) and a healthy identity and a fresh key are left alone.
func TestSweepRacingSweepers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	w := newSweepWorld(t, s)
	other := schema.New(s.Pool(), schema.Config{Region: "us-east", Node: "us-east-2"})
	var mu sync.Mutex
	total := schema.SweepReport{}
	for round := range 2 {
		var wg sync.WaitGroup
		for k := range 6 {
			store := s
			if k%2 == 1 {
				store = other
			}
			wg.Go(func() {
				r, err := store.SweepTenant(ctx, w.sc, 100)
				if err != nil {
					t.Errorf("round %d sweeper %d: %v", round, k, err)
				}
				mu.Lock()
				defer mu.Unlock()
				total.Disabled = append(total.Disabled, r.Disabled...)
				total.Expired = append(total.Expired, r.Expired...)
				total.Frozen = append(total.Frozen, r.Frozen...)
				total.RotationDue = append(total.RotationDue, r.RotationDue...)
			})
		}
		wg.Wait()
	}
	sortAll := func(ss ...[]string) []string { out := slices.Concat(ss...); slices.Sort(out); return out }
	if got, want := sortAll(total.Disabled), sortAll([]string{w.owner.ID, w.expiredNHI.ID}); !slices.Equal(got, want) {
		t.Errorf("disabled %v, want %v", got, want)
	}
	if got, want := total.Expired, []string{w.expiredKey}; !slices.Equal(got, want) {
		t.Errorf("expired %v, want %v", got, want)
	}
	if got, want := total.Frozen, []string{w.orphan.ID}; !slices.Equal(got, want) {
		t.Errorf("frozen %v, want %v", got, want)
	}
	if got, want := total.RotationDue, []string{w.dueKey}; !slices.Equal(got, want) {
		t.Errorf("rotation due %v, want %v", got, want)
	}
	count := map[string]int{}
	evs, _, err := s.ListAuditEvents(ctx, w.sc, schema.AuditFilter{Actor: "system"}, schema.Page{Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		count[e.Action+" "+e.TargetID]++
	}
	for _, want := range []string{"identity.expire " + w.owner.ID, "identity.expire " + w.expiredNHI.ID, "credential.expire " + w.expiredKey,
		"identity.freeze " + w.orphan.ID, "credential.rotation_due " + w.dueKey} {
		if count[want] != 1 {
			t.Errorf("%s: %d audit events, want exactly 1 (all: %v)", want, count[want], count)
		}
	}
	if len(evs) != 5 {
		t.Errorf("%d system audit events, want 5: %v", len(evs), count)
	}
	orphan, err := s.GetIdentity(ctx, w.sc, w.orphan.ID)
	if err != nil || orphan.Status != schema.StatusFrozen || orphan.TokensValidAfter.IsZero() {
		t.Fatalf("orphan: %+v %v", orphan, err)
	}
	if c, err := s.GetCredential(ctx, w.sc, w.orphanKey); err != nil || c.RevokedAt.IsZero() {
		t.Fatalf("the orphan's key stays usable: %+v %v", c, err)
	}
	if h, err := s.GetIdentity(ctx, w.sc, w.healthy.ID); err != nil || h.Status != schema.StatusActive {
		t.Fatalf("healthy NHI touched: %+v %v", h, err)
	}
	if c, err := s.GetCredential(ctx, w.sc, w.freshKey); err != nil || !c.RevokedAt.IsZero() {
		t.Fatalf("fresh key touched: %+v %v", c, err)
	}
	// A frozen NHI gets no new credential, binding or elevation until it has an owner.
	_, err = s.CreateKeyCredential(ctx, op, w.sc, schema.NewKeyCredential{IdentityID: w.orphan.ID, Kind: schema.CredAPIKey, KeyID: "again",
		Hash: []byte("x"), ExpiresAt: time.Now().Add(time.Hour)})
	if !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("credential for a frozen NHI: %v", err)
	}
	boss := mustHuman(t, s, w.sc, "New owner")
	newOwner := boss.ID
	if u, err := s.UpdateIdentity(ctx, op, w.sc, w.orphan.ID, schema.IdentityUpdate{OwnerID: &newOwner}); err != nil || u.Status != schema.StatusActive {
		t.Fatalf("unfreeze by a new owner: %+v %v", u, err)
	}
	// A later sweep finds nothing to do.
	r, err := s.SweepTenant(ctx, w.sc, 100)
	if err != nil || r.Total() != 0 {
		t.Fatalf("sweep after: %+v %v", r, err)
	}
}

// TestSweepRotationNoticeOncePerDeadline: a new deadline (the policy changed) is
// announced again; the same one never twice.
func TestSweepRotationNoticeOncePerDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	w := newSweepWorld(t, s)
	if r, err := s.SweepTenant(ctx, w.sc, 100); err != nil || !slices.Equal(r.RotationDue, []string{w.dueKey}) {
		t.Fatalf("first sweep: %+v %v", r, err)
	}
	if r, err := s.SweepTenant(ctx, w.sc, 100); err != nil || len(r.RotationDue) != 0 {
		t.Fatalf("second sweep: %+v %v", r, err)
	}
	p := schema.DefaultGovernancePolicy()
	p.RotationDaysNormal = 60 // the deadline moves (and has passed)
	if _, err := s.UpdateGovernancePolicy(ctx, op, w.sc, p); err != nil {
		t.Fatal(err)
	}
	if r, err := s.SweepTenant(ctx, w.sc, 100); err != nil || !slices.Equal(r.RotationDue, []string{w.dueKey}) {
		t.Fatalf("after the policy change: %+v %v", r, err)
	}
	evs, _, err := s.ListAuditEvents(ctx, w.sc, schema.AuditFilter{Action: "credential.rotation_due"}, schema.Page{Size: 100})
	if err != nil || len(evs) != 2 {
		t.Fatalf("%d rotation_due events (%v), want 2", len(evs), err)
	}
	if evs[0].After["overdue"] != true || evs[1].After["overdue"] != false {
		t.Fatalf("overdue flags: newest %v, oldest %v", evs[0].After["overdue"], evs[1].After["overdue"])
	}
}

func TestGovernancePolicyValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	got, err := s.GetGovernancePolicy(ctx, sc)
	if err != nil || got != schema.DefaultGovernancePolicy() {
		t.Fatalf("default: %+v %v", got, err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*schema.GovernancePolicy)
	}{
		{"expiring_days", func(p *schema.GovernancePolicy) { p.ExpiringDays = 0 }},
		{"unused_days", func(p *schema.GovernancePolicy) { p.UnusedDays = -1 }},
		{"least_privilege_days", func(p *schema.GovernancePolicy) { p.LeastPrivilegeDays = schema.MaxGovernanceDays + 1 }},
		{"rotation_days_high", func(p *schema.GovernancePolicy) { p.RotationDaysHigh = 120 }},
		{"rotation_notice_days", func(p *schema.GovernancePolicy) { p.RotationNoticeDays = 30 }},
		{"min_least_privilege_percent", func(p *schema.GovernancePolicy) { p.MinLeastPrivilegePercent = 101 }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			p := schema.DefaultGovernancePolicy()
			tc.edit(&p)
			_, err := s.UpdateGovernancePolicy(ctx, op, sc, p)
			wantField(t, err, tc.field)
		})
	}
	p := schema.DefaultGovernancePolicy()
	p.UnusedDays = 10
	out, err := s.UpdateGovernancePolicy(ctx, op, sc, p)
	if err != nil || out.UnusedDays != 10 || out.UpdatedAt.IsZero() {
		t.Fatalf("update: %+v %v", out, err)
	}
	if _, err := s.UpdateGovernancePolicy(ctx, op, sc, p); err != nil { // the same again: no event
		t.Fatal(err)
	}
	evs, _, err := s.ListAuditEvents(ctx, sc, schema.AuditFilter{Action: "governance.policy.update"}, schema.Page{Size: 10})
	if err != nil || len(evs) != 1 || fmt.Sprint(evs[0].After["unused_days"]) != "10" {
		t.Fatalf("audit: %v %v", evs, err)
	}
}

// TestFrozenRequesterGetsNoElevation: an NHI's elevation requested before its owner
// was offboarded (no manager: the NHI is frozen) cannot be approved afterwards; and
// the sweeper denies the pending elevations of an NHI it freezes.
func TestFrozenRequesterGetsNoElevation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	owner, approver := mustHuman(t, s, sc, "Owner"), mustHuman(t, s, sc, "Approver")
	role, _, err := s.CreateRole(ctx, op, sc, schema.Role{Name: "editor", Permissions: []string{"docs.*"}})
	if err != nil {
		t.Fatal(err)
	}
	nhi := func(name, owner string) schema.Identity {
		i, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindServiceAccount, DisplayName: name, OwnerID: owner,
			Purpose: "tests", ExpiresAt: time.Now().Add(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	request := func(id string) schema.Elevation {
		e, err := s.RequestElevation(ctx, op, sc, schema.Elevation{RequesterID: id, RoleID: role.ID, Scope: "docs/", Duration: time.Hour,
			Justification: "incident"})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	bot := nhi("bot", owner.ID)
	pending := request(bot.ID)
	if _, err := s.OffboardIdentity(ctx, op, sc, owner.ID, "left"); err != nil {
		t.Fatal(err)
	}
	if b, err := s.GetIdentity(ctx, sc, bot.ID); err != nil || b.Status != schema.StatusFrozen {
		t.Fatalf("bot after its owner's offboarding: %+v %v", b, err)
	}
	_, _, err = s.DecideElevation(ctx, op, sc, pending.ID, approver.ID, true, 0)
	if !errors.Is(err, schema.ErrPrecondition) || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("approving a frozen NHI's elevation: %v", err)
	}

	// The sweeper: an owner whose expiry passes; its NHI's pending elevation is denied
	// when the NHI is frozen.
	temp, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Temp", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	other := nhi("other", temp.ID)
	asked := request(other.ID)
	if _, err := s.Pool().Exec(ctx, `UPDATE identities SET expires_at = now() - INTERVAL '1 second' WHERE id = $1`, temp.ID); err != nil {
		t.Fatal(err)
	}
	if r, err := s.SweepTenant(ctx, sc, 10); err != nil || !slices.Contains(r.Frozen, other.ID) {
		t.Fatalf("sweep: %+v %v", r, err)
	}
	if e, err := s.GetElevation(ctx, sc, asked.ID); err != nil || e.Status != schema.ElevationDenied {
		t.Fatalf("the frozen NHI's pending elevation: %+v %v", e, err)
	}
}
