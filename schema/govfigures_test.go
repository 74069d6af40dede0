package schema_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestGovernanceFigures builds a tenant whose every figure has a known answer (rows
// written with chosen timestamps) next to a noisy tenant, and checks each figure.
func TestGovernanceFigures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "govfig", "us-east").Scope()
	noise := mustTenant(t, s, "govnoise", "us-east").Scope()
	now := time.Now().UTC().Truncate(time.Second)
	since := now.Add(-30 * 24 * time.Hour)

	id := map[string]string{}
	for _, n := range []string{"alice", "bob", "carol", "dave", "erin", "ci", "etl", "bot", "kube", "gone-owner", "leaver"} {
		id[n] = uuid.NewString()
	}
	role, group := uuid.NewString(), uuid.NewString()
	exec := func(sc schema.Scope, sql string, args ...any) {
		t.Helper()
		err := s.RunTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sql, append([]any{sc.Region, sc.TenantID}, args...)...)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	human := func(sc schema.Scope, name, status string, created time.Time) {
		exec(sc, `INSERT INTO identities (crdb_region, tenant_id, id, kind, display_name, status, created_at) VALUES ($1, $2, $3, 'human', $4, $5, $6)`,
			id[name], name, status, created)
	}
	nhi := func(sc schema.Scope, name, owner, status string) {
		exec(sc, `INSERT INTO identities (crdb_region, tenant_id, id, kind, display_name, status, owner_id, expires_at, created_at)
VALUES ($1, $2, $3, 'workload', $4, $5, $6, $7, $8)`, id[name], name, status, id[owner], now.Add(90*24*time.Hour), since.Add(-time.Hour))
	}
	binding := func(sc schema.Scope, kind, principal, scope string, created time.Time) string {
		b := uuid.NewString()
		exec(sc, `INSERT INTO bindings (crdb_region, tenant_id, id, principal_kind, principal_id, role_id, scope, granted_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'test', $8)`, b, kind, principal, role, scope, created)
		return b
	}
	old := since.Add(-24 * time.Hour)
	for _, sc := range []schema.Scope{sc, noise} {
		exec(sc, `INSERT INTO roles (crdb_region, tenant_id, id, name, permissions) VALUES ($1, $2, $3, 'reader', '{docs.document.read}')`, role)
		exec(sc, `INSERT INTO groups (crdb_region, tenant_id, id, name) VALUES ($1, $2, $3, 'eng')`, group)
	}
	// Humans: alice (MFA), bob and carol created in the window, dave disabled with a
	// binding left (deprovisioning unfinished), erin offboarded in the window after a
	// disable 2 h before, leaver offboarded at once, gone-owner disabled (owns bot).
	human(sc, "alice", "active", old)
	human(sc, "bob", "active", now.Add(-10*time.Hour))
	human(sc, "carol", "active", now.Add(-5*time.Hour))
	human(sc, "dave", "disabled", old)
	human(sc, "erin", "disabled", old)
	human(sc, "leaver", "disabled", old)
	human(sc, "gone-owner", "disabled", old)
	exec(sc, `UPDATE identities SET offboarded_at = $4 WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, id["erin"], now.Add(-time.Hour))
	exec(sc, `UPDATE identities SET offboarded_at = $4 WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, id["leaver"], now.Add(-3*time.Hour))
	exec(sc, `INSERT INTO audit_events (crdb_region, tenant_id, at, actor, action, target_kind, target_id, region, node)
VALUES ($1, $2, $3, 'test', 'identity.disable', 'identity', $4, 'us-east', 'n1')`, now.Add(-3*time.Hour), id["erin"])
	exec(sc, `INSERT INTO credentials (crdb_region, tenant_id, identity_id, kind, secret_encrypted, confirmed_at) VALUES ($1, $2, $3, 'totp', '\x00', now())`, id["alice"])
	exec(sc, `INSERT INTO credentials (crdb_region, tenant_id, identity_id, kind, secret_encrypted) VALUES ($1, $2, $3, 'totp', '\x00')`, id["bob"]) // unconfirmed
	// NHIs: ci (static key, owner alice), etl (static + federated), kube (federated
	// only), bot (no credential, owner disabled: orphaned), gone (frozen, orphaned).
	nhi(sc, "ci", "alice", "active")
	nhi(sc, "etl", "alice", "active")
	nhi(sc, "kube", "bob", "active")
	nhi(sc, "bot", "gone-owner", "active")
	id["frozen"] = uuid.NewString()
	nhi(sc, "frozen", "leaver", "frozen")
	for _, n := range []string{"ci", "etl"} {
		exec(sc, `INSERT INTO credentials (crdb_region, tenant_id, identity_id, kind, key_id, secret_hash) VALUES ($1, $2, $3, 'api_key', $4, '\x00')`, id[n], "k-"+n)
	}
	exec(sc, `INSERT INTO credentials (crdb_region, tenant_id, identity_id, kind, key_id, secret_hash, revoked_at) VALUES ($1, $2, $3, 'api_key', 'k-kube', '\x00', now())`, id["kube"])
	for _, n := range []string{"etl", "kube"} {
		exec(sc, `INSERT INTO federation_policies (crdb_region, tenant_id, name, issuer, audiences, algorithms, condition, max_age_seconds, identity_id)
VALUES ($1, $2, $3, 'https://ci.example', '{x}', '{RS256}', 'true', 600, $4)`, "p-"+n, id[n])
	}

	// Grants: alice direct on docs/ (used), bob through the group since 1 h after his
	// creation (used), carol none, ci direct on docs/a (unused), dave's leftover.
	aliceB := binding(sc, "identity", id["alice"], "docs/", old)
	groupB := binding(sc, "group", group, "docs/", old)
	binding(sc, "identity", id["ci"], "docs/a", now.Add(-2*time.Hour))
	binding(sc, "identity", id["dave"], "docs/", old)
	exec(sc, `INSERT INTO group_members (crdb_region, tenant_id, group_id, identity_id, created_at) VALUES ($1, $2, $3, $4, $5)`, group, id["bob"], now.Add(-9*time.Hour))
	exec(sc, `INSERT INTO group_members (crdb_region, tenant_id, group_id, identity_id, created_at) VALUES ($1, $2, $3, $4, $5)`, group, id["alice"], now.Add(-9*time.Hour))

	var ds []schema.Decision
	decide := func(sc schema.Scope, who, resource string, allowed bool, bindings ...string) {
		ds = append(ds, schema.Decision{ID: uuid.NewString(), TenantID: sc.TenantID, Region: sc.Region, At: now.Add(-time.Minute),
			PrincipalID: who, Permission: "docs.document.read", Resource: resource, Allowed: allowed, Reason: "r", BindingIDs: bindings, Revision: 1})
	}
	decide(sc, id["alice"], "docs/1", true, aliceB)
	decide(sc, id["bob"], "docs/2", true, groupB)
	decide(sc, id["carol"], "other/1", false)
	decide(sc, id["ci"], "docs/a", false) // denied: not a use of its grant
	decide(noise, id["alice"], "docs/9", true, aliceB)
	if err := s.WriteDecisions(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bad_password", "bad_password", "locked"} {
		if err := s.RecordLoginFailure(ctx, op, sc, schema.LoginFailure{Reason: r, Source: "password"}); err != nil {
			t.Fatal(err)
		}
	}
	exec(sc, `INSERT INTO audit_events (crdb_region, tenant_id, actor, action, target_kind, target_id, region, node)
VALUES ($1, $2, 'alice', 'login.success', 'session', 'x', 'us-east', 'n1')`)

	// The window ends an hour ahead: the audit events written above carry the
	// database's now(), seconds after now on a loaded machine.
	f, err := s.GovernanceFigures(ctx, sc, since, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want float64
	}{
		// created in the window: bob (access 1 h after creation), carol (none), and
		// the NHIs? no: created before the window.
		{"provisioned", float64(f.Provisioned), 2},
		{"provisioned without access", float64(f.ProvisionedNoAccess), 1},
		{"provision p50 seconds", f.ProvisionP50Seconds, 3600},
		{"provision p95 seconds", f.ProvisionP95Seconds, 3600},
		{"deprovisioned", float64(f.Deprovisioned), 2},
		{"deprovision p50 seconds", f.DeprovisionP50Seconds, 0},
		{"deprovision p95 seconds", f.DeprovisionP95Seconds, 7200},
		{"disabled with access", float64(f.DisabledWithAccess), 1},
		{"humans", float64(f.Humans), 3},
		{"humans with MFA", float64(f.HumansMFA), 1},
		{"NHIs", float64(f.NHIs), 5},
		{"orphaned NHIs", float64(f.OrphanedNHIs), 2},
		{"frozen NHIs", float64(f.FrozenNHIs), 1},
		{"static only", float64(f.NHIStaticOnly), 1},
		{"federated only", float64(f.NHIFederatedOnly), 1},
		{"static and federated", float64(f.NHIStaticAndFed), 1},
		{"no credential", float64(f.NHINoCredential), 2},
		// alice: direct + group; bob: group; ci: direct (dave is disabled).
		{"grants held", float64(f.GrantsHeld), 4},
		{"grants used", float64(f.GrantsUsed), 2},
		{"least privilege", f.LeastPrivilegeRatio(), 0.5},
		// docs/1, docs/2, docs/a covered (and by humans' bindings except docs/a,
		// which docs/ covers too); other/1 not.
		{"resources checked", float64(f.ResourcesChecked), 4},
		{"resources covered", float64(f.ResourcesCovered), 3},
		{"resources owned", float64(f.ResourcesOwned), 3},
		{"MFA coverage", f.MFACoverageRatio(), 1.0 / 3},
		{"login successes", float64(f.LoginSuccesses), 1},
		{"bad_password failures", float64(f.LoginFailures["bad_password"]), 2},
		{"locked failures", float64(f.LoginFailures["locked"]), 1},
		{"login success ratio", f.LoginSuccessRatio(), 0.25},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	empty, err := s.GovernanceFigures(ctx, mustTenant(t, s, "govempty", "us-east").Scope(), since, now)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(empty.LeastPrivilegeRatio()) || !math.IsNaN(empty.MFACoverageRatio()) {
		t.Errorf("an empty tenant's ratios = %v, %v; want NaN (no data, not 0 %%)", empty.LeastPrivilegeRatio(), empty.MFACoverageRatio())
	}
	if _, err := s.GovernanceFigures(ctx, sc, now, now); err == nil {
		t.Errorf("an empty window was accepted")
	}
}

// TestGovernanceSnapshots: one snapshot per tenant and UTC day, the first one kept.
func TestGovernanceSnapshots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "govsnap", "us-east").Scope()
	other := mustTenant(t, s, "govsnap2", "us-east").Scope()
	day := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	write := func(sc schema.Scope, at time.Time, orphaned int) bool {
		t.Helper()
		ok, err := s.RecordGovernanceSnapshot(ctx, sc, schema.GovernanceFigures{At: at, OrphanedNHIs: orphaned, LoginFailures: map[string]int{}})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !write(sc, day.Add(time.Hour), 1) || write(sc, day.Add(20*time.Hour), 9) {
		t.Fatalf("the first snapshot of a day must be written and the second refused")
	}
	if !write(sc, day.Add(25*time.Hour), 2) || !write(other, day.Add(time.Hour), 7) {
		t.Fatalf("the next day's snapshot, or another tenant's, was refused")
	}
	got, err := s.GovernanceSnapshots(ctx, sc, day.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Day.Equal(day) || got[0].Figures.OrphanedNHIs != 1 || got[1].Figures.OrphanedNHIs != 2 {
		t.Fatalf("snapshots = %+v, want day 1 with 1 orphaned and day 2 with 2", got)
	}
	if got, _ := s.GovernanceSnapshots(ctx, sc, day.Add(24*time.Hour)); len(got) != 1 {
		t.Errorf("since the second day: %d snapshots, want 1", len(got))
	}
}
