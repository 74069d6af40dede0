package schema_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// fillTenant bulk-inserts about n rows for tenant in region with generate_series:
// humans in one long manager chain (each managed by the one before), service
// accounts owned by humans (so they cascade with them), groups with every human a
// member (a two-parent table), roles, bindings, decisions and audit events.
func fillTenant(t testing.TB, s *schema.Store, tenant, region string, n int) {
	t.Helper()
	humans, accounts, groups := max(n/20, 2), max(n/40, 1), max(n/1000, 1)
	decisions := n * 3 / 10
	audits := n - 2*humans - accounts - groups - 2*groups - decisions
	stmts := []string{
		`INSERT INTO identities (tenant_id, id, crdb_region, kind, display_name, manager_id)
SELECT $1, md5($1 || 'h' || i)::UUID, $2::TEXT, 'human', 'Human ' || i, CASE WHEN i > 1 THEN md5($1 || 'h' || (i - 1))::UUID END
FROM generate_series(1, ` + strconv.Itoa(humans) + `) AS i`,
		`INSERT INTO identities (tenant_id, id, crdb_region, kind, display_name, owner_id, purpose, expires_at)
SELECT $1, md5($1 || 's' || i)::UUID, $2::TEXT, 'service_account', 'Robot ' || i, md5($1 || 'h' || (1 + i % ` + strconv.Itoa(humans) + `))::UUID,
  'batch job', now() + INTERVAL '30 days'
FROM generate_series(1, ` + strconv.Itoa(accounts) + `) AS i`,
		`INSERT INTO groups (tenant_id, id, crdb_region, name)
SELECT $1, md5($1 || 'g' || i)::UUID, $2::TEXT, 'group-' || i FROM generate_series(1, ` + strconv.Itoa(groups) + `) AS i`,
		`INSERT INTO group_members (tenant_id, group_id, identity_id, crdb_region)
SELECT $1, md5($1 || 'g' || (1 + i % ` + strconv.Itoa(groups) + `))::UUID, md5($1 || 'h' || i)::UUID, $2::TEXT
FROM generate_series(1, ` + strconv.Itoa(humans) + `) AS i`,
		`INSERT INTO roles (tenant_id, id, crdb_region, name)
SELECT $1, md5($1 || 'r' || i)::UUID, $2::TEXT, 'role-' || i FROM generate_series(1, ` + strconv.Itoa(groups) + `) AS i`,
		`INSERT INTO bindings (tenant_id, crdb_region, principal_kind, principal_id, role_id, scope, granted_by)
SELECT $1, $2::TEXT, 'group', md5($1 || 'g' || i)::UUID, md5($1 || 'r' || i)::UUID, '*', 'operator'
FROM generate_series(1, ` + strconv.Itoa(groups) + `) AS i`,
		`INSERT INTO decisions (tenant_id, id, crdb_region, at, principal_id, permission, resource, allowed, reason, revision, region, node, latency_us)
SELECT $1, md5($1 || 'd' || i)::UUID, $2::TEXT, now(), 'identity:x', 'docs.document.read', 'doc/' || i, i % 2 = 0, 'test', 1, $2::TEXT, 'n1', i
FROM generate_series(1, ` + strconv.Itoa(decisions) + `) AS i`,
		`INSERT INTO audit_events (tenant_id, crdb_region, actor, action, target_kind, target_id, region, node)
SELECT $1, $2::TEXT, 'operator', 'test.fill', 'row', i::TEXT, $2::TEXT, 'n1' FROM generate_series(1, ` + strconv.Itoa(max(audits, 1)) + `) AS i`,
	}
	for _, q := range stmts {
		if _, err := s.Pool().Exec(context.Background(), q, tenant, region); err != nil {
			t.Fatalf("fill %s: %v", tenant, err)
		}
	}
}

// tableState is what a table holds of a tenant: rows per region, and an
// order-independent fingerprint of the rows without their crdb_region (and without
// the rehome's own audit events), which a move must not change.
type tableState struct {
	byRegion    map[string]int64
	fingerprint int64
}

func tenantState(t testing.TB, s *schema.Store, tenant string) map[string]tableState {
	t.Helper()
	ctx := context.Background()
	out := map[string]tableState{}
	for _, table := range schema.RehomedTables() {
		st := tableState{byRegion: map[string]int64{}}
		rows, err := s.Pool().Query(ctx, `SELECT crdb_region::TEXT, count(*) FROM `+table+` WHERE tenant_id = $1 GROUP BY 1`, tenant)
		if err != nil {
			t.Fatal(err)
		}
		var region string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&region, &n}, func() error { st.byRegion[region] = n; return nil }); err != nil {
			t.Fatal(err)
		}
		filter := ""
		if table == "audit_events" {
			filter = ` AND action NOT LIKE 'tenant.rehome%'`
		}
		if err := s.Pool().QueryRow(ctx, `SELECT COALESCE(sum(hashtextextended((to_jsonb(r) - 'crdb_region')::TEXT, 0) % 1000000007), 0)::INT8
FROM `+table+` AS r WHERE tenant_id = $1`+filter, tenant).Scan(&st.fingerprint); err != nil {
			t.Fatal(err)
		}
		out[table] = st
	}
	return out
}

func totalRows(st map[string]tableState) int64 {
	var n int64
	for _, ts := range st {
		for _, c := range ts.byRegion {
			n += c
		}
	}
	return n
}

// checkMoved: every row of before is now in region to and nowhere else, unchanged;
// audit_events holds the rehome's own events on top.
func checkMoved(t testing.TB, before, after map[string]tableState, from, to string, rehomeEvents int64) {
	t.Helper()
	for table, b := range before {
		a := after[table]
		want := b.byRegion[from] + b.byRegion[to]
		if table == "audit_events" {
			want += rehomeEvents
		}
		if a.byRegion[to] != want || len(a.byRegion) > 1 {
			t.Errorf("%s: rows by region after the move %v, want %d in %s only (before: %v)", table, a.byRegion, want, to, b.byRegion)
		}
		if a.fingerprint != b.fingerprint {
			t.Errorf("%s: rows changed by the move (fingerprint %d, was %d)", table, a.fingerprint, b.fingerprint)
		}
	}
}

func rehomeEvents(t testing.TB, s *schema.Store, tenant string) map[string]int {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT action, count(*) FROM audit_events WHERE tenant_id = $1 AND action LIKE 'tenant.rehome%' GROUP BY 1`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var a string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&a, &n}, func() error { out[a] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRehomeTenantBatched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tn := mustTenant(t, s, "bulk", "us-east")
	fillTenant(t, s, "bulk", "us-east", 10_000)
	other := mustTenant(t, s, "other", "us-east")
	fillTenant(t, s, "other", "us-east", 200)
	before, otherBefore := tenantState(t, s, "bulk"), tenantState(t, s, "other")
	if n := totalRows(before); n < 10_000 {
		t.Fatalf("filled %d rows, want at least 10000", n)
	}

	var checked bool
	var batches int
	progress := func(p schema.RehomeProgress) {
		batches++
		if p.Rows < 1 || p.Rows > 250 {
			t.Errorf("batch of %d rows of %s, want 1 to 250", p.Rows, p.Table)
		}
		if checked || p.Moved < 2000 {
			return
		}
		checked = true // in the middle of the move: the tenant is fenced
		_, err := s.CreateIdentity(ctx, op, tn.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Late"})
		if !errors.Is(err, schema.ErrRehoming) {
			t.Errorf("a change during the move: %v, want ErrRehoming", err)
		}
		got, err := s.GetTenant(ctx, "bulk")
		if err != nil || got.RehomingTo != "eu-west" || got.HomeRegion != "us-east" || got.PlacementEpoch != tn.PlacementEpoch+1 {
			t.Errorf("tenant during the move: %+v, %v; want fenced for eu-west, still homed in us-east, epoch +1", got, err)
		}
		st, err := s.TenantRehomeStatus(ctx, "bulk")
		if err != nil || st.To != "eu-west" || st.Runner == "" || st.LeftInOld == 0 || st.StartedAt.IsZero() {
			t.Errorf("status during the move: %+v, %v", st, err)
		}
		if _, _, err := s.RehomeTenantBatched(ctx, op, "bulk", "eu-west", schema.RehomeOptions{}); !errors.Is(err, schema.ErrPrecondition) {
			t.Errorf("a second run during the first: %v, want ErrPrecondition", err)
		}
		if _, _, err := s.RehomeTenantBatched(ctx, op, "bulk", "ap-south", schema.RehomeOptions{}); err == nil {
			t.Error("a rehome elsewhere during the move was accepted")
		} else {
			wantField(t, err, "home_region")
		}
		if _, err := s.RehomeTenant(ctx, op, "bulk", "eu-west"); !errors.Is(err, schema.ErrPrecondition) {
			t.Errorf("a one-transaction rehome during the batched one: %v, want ErrPrecondition", err)
		}
		if _, err := s.CreateIdentity(ctx, op, other.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Unfenced"}); err != nil {
			t.Errorf("another tenant's change during the move: %v", err)
		}
	}
	moved, rep, err := s.RehomeTenantBatched(ctx, op, "bulk", "eu-west", schema.RehomeOptions{BatchSize: 250, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the move never reached 2000 rows")
	}
	if moved.HomeRegion != "eu-west" || moved.RehomingTo != "" || moved.PlacementEpoch != tn.PlacementEpoch+2 {
		t.Errorf("after the move: %+v, want homed in eu-west, unfenced, epoch +2 (fence, flip)", moved)
	}
	if rep.Resumed || rep.Batches != batches || rep.Rows < 9000 {
		t.Errorf("report %+v after %d batches", rep, batches)
	}
	checkMoved(t, before, tenantState(t, s, "bulk"), "us-east", "eu-west", 3)
	if ev := rehomeEvents(t, s, "bulk"); ev["tenant.rehome.start"] != 1 || ev["tenant.rehome"] != 1 || ev["tenant.rehome.unfence"] != 1 {
		t.Errorf("rehome events %v, want one start, one rehome (the flip), one unfence", ev)
	}
	otherAfter := tenantState(t, s, "other")
	for _, table := range []string{"groups", "group_members", "decisions", "roles", "bindings"} {
		if otherAfter[table].fingerprint != otherBefore[table].fingerprint || len(otherAfter[table].byRegion) != 1 {
			t.Errorf("other tenant's %s changed: %+v, was %+v", table, otherAfter[table], otherBefore[table])
		}
	}
	// The manager chain survived: every human but the first has its manager back.
	var managed int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM identities WHERE tenant_id = 'bulk' AND kind = 'human' AND manager_id IS NOT NULL`).Scan(&managed); err != nil {
		t.Fatal(err)
	}
	if managed != 500-1 {
		t.Errorf("%d humans have a manager after the move, want %d", managed, 500-1)
	}
	if st, err := s.TenantRehomeStatus(ctx, "bulk"); err != nil || st.To != "" || st.Runner != "" {
		t.Errorf("status after the move: %+v, %v", st, err)
	}
	if _, err := s.CreateIdentity(ctx, op, moved.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "After"}); err != nil {
		t.Errorf("a change after the move: %v", err)
	}

	t.Run("moving to the current home changes nothing", func(t *testing.T) {
		again, rep, err := s.RehomeTenantBatched(ctx, op, "bulk", "eu-west", schema.RehomeOptions{})
		if err != nil || again.PlacementEpoch != moved.PlacementEpoch || rep.Batches != 0 {
			t.Errorf("again: %+v %+v %v", again, rep, err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		_, _, err := s.RehomeTenantBatched(ctx, op, "bulk", "us-east", schema.RehomeOptions{BatchSize: -1})
		wantField(t, err, "batch_size")
		_, _, err = s.RehomeTenantBatched(ctx, op, "bulk", "us-east", schema.RehomeOptions{BatchSize: schema.MaxRehomeBatch + 1})
		wantField(t, err, "batch_size")
		_, _, err = s.RehomeTenantBatched(ctx, op, "bulk", "mars", schema.RehomeOptions{})
		wantField(t, err, "home_region")
		_, _, err = s.RehomeTenantBatched(ctx, op, "Not A Tenant", "us-east", schema.RehomeOptions{})
		wantField(t, err, "id")
		if _, _, err := s.RehomeTenantBatched(ctx, op, "nobody", "us-east", schema.RehomeOptions{}); !errors.Is(err, schema.ErrNotFound) {
			t.Errorf("unknown tenant: %v, want ErrNotFound", err)
		}
	})
}

// TestRehomeTenantBatchedResumes: a run cancelled in the middle leaves the tenant
// fenced and half moved; the next run continues and completes, and every row ends up
// in the new home once.
func TestRehomeTenantBatchedResumes(t *testing.T) {
	t.Parallel()
	s := schematest.NewStore(t, "us-east")
	tn := mustTenant(t, s, "crash", "us-east")
	fillTenant(t, s, "crash", "us-east", 10_000)
	before := tenantState(t, s, "crash")

	for i, stopAfter := range []int64{300, 6000} { // in the two-parent hold phase; in the move phase
		ctx, cancel := context.WithCancel(context.Background())
		_, _, err := s.RehomeTenantBatched(ctx, op, "crash", "eu-west", schema.RehomeOptions{BatchSize: 200,
			Progress: func(p schema.RehomeProgress) {
				if p.Moved >= stopAfter {
					cancel()
				}
			}})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("run %d: %v, want it cancelled", i, err)
		}
		st, err := s.TenantRehomeStatus(context.Background(), "crash")
		if err != nil || st.To != "eu-west" || st.HomeRegion != "us-east" || st.Runner != "" {
			t.Fatalf("status after run %d stopped: %+v, %v; want fenced for eu-west, lease given up", i, st, err)
		}
		if st.LeftInOld == 0 && st.HeldTwoParts == 0 {
			t.Errorf("run %d moved everything before it was cancelled", i)
		}
		if _, err := s.CreateIdentity(context.Background(), op, tn.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Late"}); !errors.Is(err, schema.ErrRehoming) {
			t.Errorf("a change while the stopped rehome is fenced: %v, want ErrRehoming", err)
		}
	}
	moved, rep, err := s.RehomeTenantBatched(context.Background(), op, "crash", "eu-west", schema.RehomeOptions{BatchSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Resumed || moved.HomeRegion != "eu-west" || moved.RehomingTo != "" || moved.PlacementEpoch != tn.PlacementEpoch+2 {
		t.Errorf("resumed run: %+v %+v, want it resumed, homed in eu-west, epoch +2", moved, rep)
	}
	checkMoved(t, before, tenantState(t, s, "crash"), "us-east", "eu-west", 3)
	if ev := rehomeEvents(t, s, "crash"); ev["tenant.rehome.start"] != 1 || ev["tenant.rehome"] != 1 {
		t.Errorf("rehome events %v, want one start and one flip over three runs", ev)
	}
}

// TestRehomeTenantBatchedMillion moves a tenant of 10⁶ rows (KEYPLANE_REHOME_ROWS
// overrides the count). It takes minutes on a small machine, so it runs only when
// KEYPLANE_REHOME_ROWS is set: see docs/operations.md, "Rehoming a large tenant".
func TestRehomeTenantBatchedMillion(t *testing.T) {
	rowsEnv := os.Getenv("KEYPLANE_REHOME_ROWS")
	if rowsEnv == "" {
		t.Skip("set KEYPLANE_REHOME_ROWS=1000000 to move a tenant of a million rows")
	}
	n, err := strconv.Atoi(rowsEnv)
	if err != nil || n < 1000 {
		t.Fatalf("KEYPLANE_REHOME_ROWS=%q: want a row count of at least 1000", rowsEnv)
	}
	batch := schema.DefaultRehomeBatch
	if b := os.Getenv("KEYPLANE_REHOME_BATCH"); b != "" {
		if batch, err = strconv.Atoi(b); err != nil {
			t.Fatalf("KEYPLANE_REHOME_BATCH=%q: %v", b, err)
		}
	}
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tn := mustTenant(t, s, "huge", "us-east")
	fillStart := time.Now()
	fillTenant(t, s, "huge", "us-east", n)
	if _, err := s.Pool().Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	before := tenantState(t, s, "huge")
	t.Logf("filled %d rows in %v", totalRows(before), time.Since(fillStart).Round(time.Millisecond))

	slow := map[string]time.Duration{} // the longest batch of each phase and table, over both runs
	// Crash in the middle: cancel at half way, then run again.
	cctx, cancel := context.WithCancel(ctx)
	_, first, err := s.RehomeTenantBatched(cctx, op, "huge", "eu-west", schema.RehomeOptions{BatchSize: batch,
		Progress: func(p schema.RehomeProgress) {
			k := p.Phase + " " + p.Table
			slow[k] = max(slow[k], p.Took)
			if p.Moved >= int64(n/2) {
				cancel()
			}
		}})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want it cancelled half way", err)
	}
	start := time.Now()
	moved, rep, err := s.RehomeTenantBatched(ctx, op, "huge", "eu-west", schema.RehomeOptions{BatchSize: batch,
		Progress: func(p schema.RehomeProgress) {
			k := p.Phase + " " + p.Table
			slow[k] = max(slow[k], p.Took)
		}})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !rep.Resumed || moved.HomeRegion != "eu-west" || moved.PlacementEpoch != tn.PlacementEpoch+2 {
		t.Errorf("after the move: %+v %+v", moved, rep)
	}
	checkMoved(t, before, tenantState(t, s, "huge"), "us-east", "eu-west", 3)
	if ev := rehomeEvents(t, s, "huge"); ev["tenant.rehome"] != 1 {
		t.Errorf("rehome events %v, want one flip", ev)
	}
	t.Logf("longest batch by table: %v", slow)
	rows := first.Rows + rep.Rows
	t.Logf("moved %d rows (batch size %d): first run %d rows in %d batches, longest batch %v; second run %d rows in %d batches in %v (%.0f rows/s), longest batch %v",
		rows, batch, first.Rows, first.Batches, first.LongestBatch.Round(time.Millisecond),
		rep.Rows, rep.Batches, took.Round(time.Millisecond), float64(rep.Rows)/took.Seconds(), rep.LongestBatch.Round(time.Millisecond))
}
