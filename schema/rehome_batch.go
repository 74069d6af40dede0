package schema

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultRehomeBatch is the rows a batched rehome moves per transaction when the
// caller names no batch size; MaxRehomeBatch is the most it accepts.
const (
	DefaultRehomeBatch = 1000
	MaxRehomeBatch     = 50_000
)

// rehomeLease is how long (at least: twice the fence wait when that is longer, as no
// batch renews it during a wait) a batched rehome run holds a tenant's move after its last
// renewal: a second run is refused until then, so a crashed run blocks others for at
// most this long.
const rehomeLease = 30 * time.Second

// RehomeOptions tune RehomeTenantBatched.
type RehomeOptions struct {
	// BatchSize is the most rows of one table a batch transaction moves (cascading
	// children move with their parents); 0 means DefaultRehomeBatch.
	BatchSize int
	// FenceWait is how long to wait after raising the fence before the first row
	// moves, and after the flip before lifting it: long enough for every node's cached
	// tenant row to expire (routing.Directory's TTL, 5 s) and for a request that
	// started before the fence to finish. 0 waits not at all (tests, single node).
	FenceWait time.Duration
	// Progress, when set, is called after every batch transaction.
	Progress func(RehomeProgress)
}

// RehomeProgress reports one batch of a batched rehome.
type RehomeProgress struct {
	Phase string // "hold", "move", "put back"
	Table string
	Rows  int64         // rows of Table this batch moved
	Moved int64         // rows this run moved so far (all tables and phases)
	Took  time.Duration // the batch transaction, from begin to commit
}

// RehomeReport sums up a RehomeTenantBatched run.
type RehomeReport struct {
	Resumed      bool // the run continued a rehome a previous run had started
	Rows         int64
	Batches      int
	LongestBatch time.Duration
	Took         time.Duration
}

// RehomeStatus is a tenant's batched rehome as the database records it.
type RehomeStatus struct {
	TenantID   string
	HomeRegion string
	// To is where the tenant is being moved; "" when no rehome is in progress. When
	// To equals HomeRegion the rows have moved and the fence is about to be lifted.
	To           string
	StartedAt    time.Time
	Runner       string    // the run holding the lease, "" when none
	LeaseUntil   time.Time // zero when no run holds it
	LeftInOld    int64     // the tenant's rows still in the old home (0 after the flip)
	HeldTwoParts int64     // two-parent rows taken out and not yet put back
}

// RehomeTenantBatched moves a tenant of any size to region without a long transaction
// (docs/decisions/0019-batched-rehome.md):
//
//  1. one transaction raises the fence (tenants.rehome_to), bumps the placement epoch
//     and writes the tenant.rehome.start event; from then on every change of the
//     tenant is refused with ErrRehoming, and nodes refuse its calls;
//  2. it waits opts.FenceWait for nodes to see the fence;
//  3. rows move in batches of at most opts.BatchSize, each batch its own transaction:
//     two-parent rows into rehome_held, then every per-tenant table (children cascade
//     with their parents), then the held rows back;
//  4. one transaction moves any straggler, flips home_region, bumps the epoch and
//     writes the tenant.rehome event; the fence stays up for opts.FenceWait more, so
//     a node still holding the old placement refuses rather than read the emptied
//     old partition, and a last transaction lifts it (tenant.rehome.unfence).
//
// A run that stops (crash, cancelled context) leaves the tenant fenced; running it
// again with the same region continues where it stopped. A run holds a lease on the
// move: a second run while the first is alive is refused with ErrPrecondition. A
// tenant already homed in region and not fenced is returned unchanged.
func (s *Store) RehomeTenantBatched(ctx context.Context, c Change, id, region string, opts RehomeOptions) (Tenant, RehomeReport, error) {
	start := time.Now()
	var rep RehomeReport
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, rep, err
	}
	if region == "" {
		return Tenant{}, rep, fieldErr("home_region", "required")
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultRehomeBatch
	}
	if opts.BatchSize < 1 || opts.BatchSize > MaxRehomeBatch {
		return Tenant{}, rep, fieldErr("batch_size", "want 1 to %d, got %d", MaxRehomeBatch, opts.BatchSize)
	}
	if opts.FenceWait < 0 {
		return Tenant{}, rep, fieldErr("fence_wait", "must not be negative")
	}
	runner := rand.Text()[:12]
	lease := max(rehomeLease, 2*opts.FenceWait)
	var before Tenant
	var from string
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		rep.Resumed = false
		before, err = s.rehomeTarget(ctx, tx, id, region)
		if err != nil {
			return err
		}
		if before.RehomingTo != "" && before.RehomingTo != region {
			return fieldErr("home_region", "tenant %q is being rehomed to %s: run that rehome again to finish it first", id, before.RehomingTo)
		}
		if before.HomeRegion == region && before.RehomingTo == "" {
			return nil // nothing to do
		}
		var holder string
		var held bool
		if err := tx.QueryRow(ctx, `SELECT COALESCE(rehome_runner, ''), COALESCE(rehome_lease_until > now(), false) FROM tenants WHERE id = $1`,
			id).Scan(&holder, &held); err != nil {
			return fmt.Errorf("read rehome lease: %w", err)
		}
		if holder != "" && held {
			return fmt.Errorf("%w: tenant %q is being rehomed by another run (%s) right now; wait for it, or run again after it stops", ErrPrecondition, id, holder)
		}
		if before.RehomingTo != "" {
			rep.Resumed = true
			_, err := tx.Exec(ctx, `UPDATE tenants SET rehome_runner = $2, rehome_lease_until = now() + $3::INTERVAL WHERE id = $1`,
				id, runner, intervalOf(lease))
			return err
		}
		// The event is written while the tenant is still unfenced in its old home.
		if err := s.writeAudit(ctx, tx, before.Scope(), c, audit{action: "tenant.rehome.start", targetKind: "tenant", targetID: id,
			before: map[string]any{"home_region": before.HomeRegion, "placement_epoch": before.PlacementEpoch},
			after:  map[string]any{"rehome_to": region, "placement_epoch": before.PlacementEpoch + 1, "batch_size": opts.BatchSize}}); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
UPDATE tenants SET rehome_to = $2, rehome_started_at = now(), rehome_runner = $3, rehome_lease_until = now() + $4::INTERVAL,
  placement_epoch = placement_epoch + 1, updated_at = now()
WHERE id = $1`, id, region, runner, intervalOf(lease))
		return err
	})
	if err != nil {
		return Tenant{}, rep, err
	}
	if before.HomeRegion == region && before.RehomingTo == "" {
		return before, rep, nil
	}
	from = before.HomeRegion
	defer func() { // give the lease up, whatever happened, so a rerun need not wait for it
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = s.pool.Exec(rctx, `UPDATE tenants SET rehome_runner = NULL, rehome_lease_until = NULL WHERE id = $1 AND rehome_runner = $2`, id, runner)
	}()
	r := &rehomeRun{s: s, id: id, from: from, to: region, runner: runner, lease: lease, opts: opts, rep: &rep, renewed: time.Now()}
	// The fence waits are taken again by a resumed run: the run before may have
	// stopped right after raising the fence or flipping.
	if err := sleepCtx(ctx, opts.FenceWait); err != nil {
		return Tenant{}, rep, err
	}
	if from != region { // not yet flipped
		if err := r.moveInBatches(ctx); err != nil {
			return Tenant{}, rep, err
		}
		if err := r.flip(ctx, c, before); err != nil {
			return Tenant{}, rep, err
		}
		if err := sleepCtx(ctx, opts.FenceWait); err != nil {
			return Tenant{}, rep, err
		}
	}
	out, err := r.unfence(ctx, c)
	rep.Took = time.Since(start)
	return out, rep, err
}

// relinkManagers puts a batch of held manager links back. The identities are looked
// up by primary key (= ANY), whatever the planner thinks of the freshly moved rows'
// statistics: a join with the held rows was planned as a nested loop over all of them.
func (r *rehomeRun) relinkManagers(ctx context.Context, tx pgx.Tx) (int64, error) {
	rows, err := tx.Query(ctx, `
DELETE FROM rehome_held WHERE (crdb_region, tenant, table_name, id) IN (
  SELECT crdb_region, tenant, table_name, id FROM rehome_held WHERE crdb_region = $4 AND tenant = $1 AND table_name = $2 LIMIT $3)
RETURNING (row_data->>'id')::UUID, (row_data->>'manager_id')::UUID`, r.id, managerLinks, r.opts.BatchSize, r.to)
	if err != nil {
		return 0, err
	}
	var ids, managers []string
	var id, manager string
	if _, err := pgx.ForEachRow(rows, []any{&id, &manager}, func() error {
		ids, managers = append(ids, id), append(managers, manager)
		return nil
	}); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `
UPDATE identities SET manager_id = ($4::UUID[])[array_position($3::UUID[], id)]
WHERE crdb_region = $2 AND tenant_id = $1 AND id = ANY($3::UUID[])`, r.id, r.to, ids, managers)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return 0, fmt.Errorf("relink managers: %d of %d identities found in %s", tag.RowsAffected(), len(ids), r.to)
	}
	return tag.RowsAffected(), nil
}

// managerLinks names the held identities.manager_id links in rehome_held.
const managerLinks = "identities.manager_id"

// rehomeRun is one run of a batched rehome.
type rehomeRun struct {
	s            *Store
	id, from, to string
	runner       string
	lease        time.Duration
	opts         RehomeOptions
	rep          *RehomeReport
	renewed      time.Time
	pkCols       map[string]string
}

// intervalOf is d as a SQL interval literal, in whole seconds.
func intervalOf(d time.Duration) string { return fmt.Sprintf("%d seconds", int64(d.Seconds())) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// stillOurs checks, inside a batch transaction, that the tenant is still fenced for
// this move and that this run still holds the lease.
func (r *rehomeRun) stillOurs(ctx context.Context, tx pgx.Tx) error {
	var to, runner string
	err := tx.QueryRow(ctx, `SELECT COALESCE(rehome_to, ''), COALESCE(rehome_runner, '') FROM tenants WHERE id = $1`, r.id).Scan(&to, &runner)
	if err != nil {
		return fmt.Errorf("read tenant: %w", err)
	}
	if to != r.to || runner != r.runner {
		return fmt.Errorf("%w: tenant %q: this run lost its rehome lease (now rehoming to %q, run %q)", ErrPrecondition, r.id, to, runner)
	}
	return nil
}

// renew extends the lease when half of it has gone.
func (r *rehomeRun) renew(ctx context.Context) error {
	if time.Since(r.renewed) < r.lease/2 {
		return nil
	}
	err := r.s.tx(ctx, func(tx pgx.Tx) error {
		if err := r.stillOurs(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tenants SET rehome_lease_until = now() + $2::INTERVAL WHERE id = $1`, r.id, intervalOf(r.lease))
		return err
	})
	if err == nil {
		r.renewed = time.Now()
	}
	return err
}

// primaryKeys reads each per-tenant table's primary key columns, comma-separated.
func (r *rehomeRun) primaryKeys(ctx context.Context) error {
	rows, err := r.s.pool.Query(ctx, `
SELECT k.table_name, k.column_name FROM information_schema.table_constraints t
JOIN information_schema.key_column_usage k
  ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema AND k.table_name = t.table_name
WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = current_schema()
ORDER BY k.table_name, k.ordinal_position`)
	if err != nil {
		return fmt.Errorf("read primary keys: %w", err)
	}
	cols := map[string][]string{}
	var table, col string
	if _, err := pgx.ForEachRow(rows, []any{&table, &col}, func() error {
		cols[table] = append(cols[table], col)
		return nil
	}); err != nil {
		return fmt.Errorf("read primary keys: %w", err)
	}
	r.pkCols = map[string]string{}
	for _, t := range append(append([]string{}, tenantTables...), twoParentTables...) {
		if len(cols[t]) == 0 {
			return fmt.Errorf("table %s: no primary key found", t)
		}
		r.pkCols[t] = strings.Join(cols[t], ", ")
	}
	return nil
}

// batch runs one batch transaction: sql with $1 tenant, $2 from, $3 to, $4 limit (and
// $5 the table name for rehome_held), returning the rows it moved.
func (r *rehomeRun) batch(ctx context.Context, phase, table, sql string) (int64, error) {
	var n int64
	var took time.Duration
	err := r.s.tx(ctx, func(tx pgx.Tx) error {
		began := time.Now()
		if err := r.stillOurs(ctx, tx); err != nil {
			return err
		}
		var err error
		if sql == "" {
			n, err = r.relinkManagers(ctx, tx)
		} else {
			var tag pgconn.CommandTag
			tag, err = tx.Exec(ctx, sql, r.id, r.from, r.to, r.opts.BatchSize, table)
			n = tag.RowsAffected()
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", phase, table, err)
		}
		took = time.Since(began)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	r.rep.Rows += n
	r.rep.Batches++
	r.rep.LongestBatch = max(r.rep.LongestBatch, took)
	if r.opts.Progress != nil {
		r.opts.Progress(RehomeProgress{Phase: phase, Table: table, Rows: n, Moved: r.rep.Rows, Took: took})
	}
	return n, r.renew(ctx)
}

// moveInBatches moves every row of the tenant out of the old home in batches.
func (r *rehomeRun) moveInBatches(ctx context.Context) error {
	if err := r.primaryKeys(ctx); err != nil {
		return err
	}
	type step struct{ phase, table, sql string }
	var steps []step
	for _, t := range twoParentTables {
		pk := r.pkCols[t]
		steps = append(steps, step{"hold", t, `
WITH d AS (
  DELETE FROM ` + t + ` WHERE (` + pk + `) IN (
    SELECT ` + pk + ` FROM ` + t + ` WHERE tenant_id = $1 AND crdb_region = $2 AND $3::TEXT IS NOT NULL LIMIT $4)
  RETURNING *)
INSERT INTO rehome_held (tenant, table_name, crdb_region, row_data) SELECT $1, $5, $3, to_jsonb(d) FROM d`})
	}
	// identities.manager_id links identities to identities to any depth: moving a
	// manager would cascade to every report below it in one batch, and moving a report
	// first would break its link. The links are taken out and put back like two-parent
	// rows. owner_id is one level deep (owners are humans, who have none): humans move
	// first and their owned identities cascade with them.
	steps = append(steps, step{"hold", managerLinks, `
WITH u AS (
  SELECT id, manager_id FROM identities
  WHERE tenant_id = $1 AND crdb_region = $2 AND manager_id IS NOT NULL AND $3::TEXT IS NOT NULL LIMIT $4),
h AS (INSERT INTO rehome_held (tenant, table_name, crdb_region, row_data) SELECT $1, $5, $3, jsonb_build_object('id', id, 'manager_id', manager_id) FROM u)
UPDATE identities SET manager_id = NULL WHERE (crdb_region, tenant_id, id) IN (SELECT $2, $1, id FROM u)`})
	for _, t := range tenantTables {
		pk := r.pkCols[t]
		move := `
UPDATE ` + t + ` SET crdb_region = $3 WHERE (` + pk + `) IN (
  SELECT ` + pk + ` FROM ` + t + ` WHERE tenant_id = $1 AND crdb_region = $2 AND $5::TEXT IS NOT NULL %s LIMIT $4)`
		if t == "identities" {
			steps = append(steps, step{"move", t, fmt.Sprintf(move, "AND owner_id IS NULL")})
		}
		steps = append(steps, step{"move", t, fmt.Sprintf(move, "")})
	}
	steps = append(steps, step{"put back", managerLinks, ""}) // relinkManagers
	for _, t := range twoParentTables {
		steps = append(steps, step{"put back", t, `
WITH h AS (
  DELETE FROM rehome_held WHERE (crdb_region, tenant, table_name, id) IN (
    SELECT crdb_region, tenant, table_name, id FROM rehome_held
    WHERE crdb_region = $3 AND tenant = $1 AND table_name = $5 AND $2::TEXT IS NOT NULL LIMIT $4)
  RETURNING row_data)
INSERT INTO ` + t + ` SELECT (jsonb_populate_record(NULL::` + t + `, h.row_data || jsonb_build_object('crdb_region', $3::TEXT))).* FROM h`})
	}
	for _, st := range steps {
		for {
			n, err := r.batch(ctx, st.phase, st.table, st.sql)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
	}
	return nil
}

// flip moves any straggler (a row written without an audit event while the fence
// was up) in one transaction, checks nothing is left held, makes region the home and
// bumps the epoch, with the tenant.rehome event. The fence stays up.
func (r *rehomeRun) flip(ctx context.Context, c Change, before Tenant) error {
	return r.s.tx(ctx, func(tx pgx.Tx) error {
		if err := r.stillOurs(ctx, tx); err != nil {
			return err
		}
		var held int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM rehome_held WHERE tenant = $1`, r.id).Scan(&held); err != nil {
			return fmt.Errorf("count held rows: %w", err)
		}
		if held != 0 {
			return fmt.Errorf("tenant %q: %d two-parent rows are still held; run the rehome again", r.id, held)
		}
		if err := moveTenantRows(ctx, tx, r.id, r.from, r.to); err != nil {
			return err
		}
		// Lift the fence for the event's guard, and raise it again: one transaction,
		// so no other transaction ever sees the tenant unfenced here.
		out, err := scanTenant(tx.QueryRow(ctx, `
UPDATE tenants SET home_region = $2, placement_epoch = placement_epoch + 1, rehome_to = NULL, updated_at = now()
WHERE id = $1
RETURNING `+tenantColumns, r.id, r.to))
		if err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		if err := r.s.writeAudit(ctx, tx, out.Scope(), c, audit{action: "tenant.rehome", targetKind: "tenant", targetID: r.id,
			before: map[string]any{"home_region": r.from, "placement_epoch": before.PlacementEpoch},
			after:  map[string]any{"home_region": out.HomeRegion, "placement_epoch": out.PlacementEpoch, "batched": true}}); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tenants SET rehome_to = $2 WHERE id = $1`, r.id, r.to)
		return err
	})
}

// unfence lifts the fence of a flipped tenant.
func (r *rehomeRun) unfence(ctx context.Context, c Change) (Tenant, error) {
	var out Tenant
	err := r.s.tx(ctx, func(tx pgx.Tx) error {
		if err := r.stillOurs(ctx, tx); err != nil {
			return err
		}
		var err error
		out, err = scanTenant(tx.QueryRow(ctx, `
UPDATE tenants SET rehome_to = NULL, rehome_started_at = NULL, rehome_runner = NULL, rehome_lease_until = NULL, updated_at = now()
WHERE id = $1 AND home_region = $2
RETURNING `+tenantColumns, r.id, r.to))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("tenant %q: not yet homed in %s; run the rehome again", r.id, r.to)
		}
		if err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		return r.s.writeAudit(ctx, tx, out.Scope(), c, audit{action: "tenant.rehome.unfence", targetKind: "tenant", targetID: r.id,
			after: map[string]any{"home_region": out.HomeRegion, "placement_epoch": out.PlacementEpoch}})
	})
	return out, err
}

// TenantRehomeStatus reads a tenant's batched rehome: where to, since when, which run
// holds it, and how many rows are left to move.
func (s *Store) TenantRehomeStatus(ctx context.Context, id string) (RehomeStatus, error) {
	if err := checkTenantID("tenant", id); err != nil {
		return RehomeStatus{}, err
	}
	st := RehomeStatus{TenantID: id}
	var started, lease *time.Time
	var runner *string
	err := s.pool.QueryRow(ctx, `
SELECT home_region, COALESCE(rehome_to, ''), rehome_started_at, rehome_runner, CASE WHEN rehome_lease_until > now() THEN rehome_lease_until END
FROM tenants WHERE id = $1`, id).Scan(&st.HomeRegion, &st.To, &started, &runner, &lease)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, classify(fmt.Errorf("%w: tenant %q", ErrNotFound, id))
	}
	if err != nil {
		return st, classify(fmt.Errorf("read tenant: %w", err))
	}
	if started != nil {
		st.StartedAt = *started
	}
	if lease != nil && runner != nil {
		st.Runner, st.LeaseUntil = *runner, *lease
	}
	if st.To == "" || st.To == st.HomeRegion {
		return st, nil
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		var err error
		if st.LeftInOld, err = countTenantRows(ctx, tx, id, st.HomeRegion, 1<<62); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM rehome_held WHERE tenant = $1`, id).Scan(&st.HeldTwoParts)
	})
	return st, err
}
