package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Identity analytics (docs/analytics.md): each identity's baseline of access, the
// alerts raised on deviations from it, the sessions' last regions (impossible travel)
// and the policy drift digests. The nodes aggregate features in memory and write them
// here in batches; nothing here runs on a check's path.

// Feature is one value of one feature of an identity's baseline: how often it was
// seen and when first and last.
type Feature struct {
	IdentityID string
	Kind       string // events, region, network, hour, client, permission, resource, denies
	Value      string
	Count      int64
	First      time.Time
	Last       time.Time
}

// Feature kinds of the baseline.
const (
	FeatureEvents     = "events" // value "": every decision and token issued
	FeatureDenies     = "denies" // value "": denied decisions
	FeatureRegion     = "region"
	FeatureNetwork    = "network"
	FeatureHour       = "hour"
	FeatureClient     = "client"
	FeaturePermission = "permission"
	FeatureResource   = "resource"
)

// LoadFeatures reads the baselines of the given identities (at most 1000 ids).
func (s *Store) LoadFeatures(ctx context.Context, sc Scope, identityIDs []string) ([]Feature, error) {
	if len(identityIDs) == 0 {
		return nil, nil
	}
	if len(identityIDs) > 1000 {
		return nil, fieldErr("identity_ids", "at most 1000, got %d", len(identityIDs))
	}
	rows, err := s.pool.Query(ctx, `SELECT identity_id, kind, value, count, first_seen, last_seen FROM analytics_features
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = ANY($3)`, sc.Region, sc.TenantID, identityIDs)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Feature, error) {
		var f Feature
		err := r.Scan(&f.IdentityID, &f.Kind, &f.Value, &f.Count, &f.First, &f.Last)
		return f, err
	})
	return out, classify(err)
}

// AddFeatures adds counts to baselines, one upsert statement per 1000 features:
// counts add up, first_seen keeps the earliest, last_seen the latest. Not idempotent
// (a retried batch counts twice, which a baseline tolerates).
func (s *Store) AddFeatures(ctx context.Context, sc Scope, fs []Feature) error {
	for chunk := range slices.Chunk(fs, 1000) {
		n := len(chunk)
		ids, kinds, values := make([]string, n), make([]string, n), make([]string, n)
		counts, firsts, lasts := make([]int64, n), make([]time.Time, n), make([]time.Time, n)
		for i, f := range chunk {
			ids[i], kinds[i], values[i], counts[i], firsts[i], lasts[i] = f.IdentityID, f.Kind, f.Value, f.Count, f.First, f.Last
		}
		// One statement per chunk: the (identity, kind, value) keys of a batch are
		// distinct (the flusher sums them), as ON CONFLICT DO UPDATE requires.
		if _, err := s.pool.Exec(ctx, `INSERT INTO analytics_features AS f (tenant_id, crdb_region, identity_id, kind, value, count, first_seen, last_seen)
SELECT $1, $2, u.identity_id, u.kind, u.value, u.count, u.first_seen, u.last_seen
FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::INT8[], $7::TIMESTAMPTZ[], $8::TIMESTAMPTZ[]) AS u (identity_id, kind, value, count, first_seen, last_seen)
ON CONFLICT (crdb_region, tenant_id, identity_id, kind, value) DO UPDATE SET count = f.count + excluded.count,
  first_seen = least(f.first_seen, excluded.first_seen), last_seen = greatest(f.last_seen, excluded.last_seen)`,
			sc.TenantID, sc.Region, ids, kinds, values, counts, firsts, lasts); err != nil {
			return classify(err)
		}
	}
	return nil
}

// SessionUse is where and when a session was used.
type SessionUse struct {
	SessionID string
	Region    string
	At        time.Time
}

// SwapSessionUse records u as its session's last use and returns the previous one
// (ok false when there was none). A use older than the recorded one is not recorded.
func (s *Store) SwapSessionUse(ctx context.Context, sc Scope, u SessionUse) (SessionUse, bool, error) {
	var prev SessionUse
	found := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		found = false
		err := tx.QueryRow(ctx, `SELECT session_id, region, at FROM analytics_sessions WHERE crdb_region = $1 AND tenant_id = $2 AND session_id = $3`,
			sc.Region, sc.TenantID, u.SessionID).Scan(&prev.SessionID, &prev.Region, &prev.At)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read session use: %w", err)
		default:
			found = true
		}
		_, err = tx.Exec(ctx, `INSERT INTO analytics_sessions AS s (tenant_id, crdb_region, session_id, region, at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (crdb_region, tenant_id, session_id) DO UPDATE SET region = excluded.region, at = excluded.at WHERE s.at <= excluded.at`,
			sc.TenantID, sc.Region, u.SessionID, u.Region, u.At)
		if err != nil {
			return fmt.Errorf("write session use: %w", err)
		}
		return nil
	})
	return prev, found, err
}

// PruneAnalytics deletes session uses older than sessionsBefore and drift digests
// older than driftBefore (at most limit rows of each) and returns how many.
func (s *Store) PruneAnalytics(ctx context.Context, sc Scope, sessionsBefore, driftBefore time.Time, limit int) (int, error) {
	total := 0
	for _, q := range []struct {
		sql    string
		cutoff time.Time
	}{
		{`DELETE FROM analytics_sessions WHERE crdb_region = $1 AND tenant_id = $2 AND session_id IN (
  SELECT session_id FROM analytics_sessions WHERE crdb_region = $1 AND tenant_id = $2 AND at < $3 LIMIT $4)`, sessionsBefore},
		{`DELETE FROM analytics_drift WHERE crdb_region = $1 AND tenant_id = $2 AND (revision, sample_id, node) IN (
  SELECT revision, sample_id, node FROM analytics_drift WHERE crdb_region = $1 AND tenant_id = $2 AND at < $3 LIMIT $4)`, driftBefore},
	} {
		tag, err := s.pool.Exec(ctx, q.sql, sc.Region, sc.TenantID, q.cutoff, limit)
		if err != nil {
			return total, classify(err)
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}

// Alert is one anomaly alert.
type Alert struct {
	ID         string
	TenantID   string
	At         time.Time
	IdentityID string // "" for policy drift
	Kind       string
	Value      string
	Reason     string
	Region     string // the region and node that raised it
	Node       string
	Deliveries []Delivery
}

// Delivery is an alert's delivery to one webhook.
type Delivery struct {
	AlertID     string
	WebhookID   string
	State       string // pending, sending, delivered, failed
	Attempts    int
	LastError   string
	DeliveredAt time.Time
}

// RaiseAlert records a unless the same identity, kind and value raised one less than
// suppress ago by the database's clock (then it returns false): in one transaction,
// the alert, its audit event (analytics.alert) and one pending delivery per webhook
// of the tenant. Nodes raising the same alert at once raise it once.
func (s *Store) RaiseAlert(ctx context.Context, sc Scope, a Alert, suppress time.Duration) (Alert, bool, error) {
	a.ID, a.TenantID, a.Region, a.Node = uuid.NewString(), sc.TenantID, s.region, s.node
	raised := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		raised = false
		var fresh bool
		err := tx.QueryRow(ctx, `INSERT INTO analytics_alert_keys AS k (tenant_id, crdb_region, identity_id, kind, value, last_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (crdb_region, tenant_id, identity_id, kind, value) DO UPDATE SET last_at = now()
WHERE k.last_at <= now() - make_interval(secs => $6)
RETURNING true`, sc.TenantID, sc.Region, a.IdentityID, a.Kind, a.Value, suppress.Seconds()).Scan(&fresh)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // suppressed
		}
		if err != nil {
			return fmt.Errorf("suppression key: %w", err)
		}
		if err := tx.QueryRow(ctx, `INSERT INTO analytics_alerts (tenant_id, id, crdb_region, identity_id, kind, value, reason, region, node)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING at`, sc.TenantID, a.ID, sc.Region, a.IdentityID, a.Kind, a.Value, a.Reason, s.region, s.node).Scan(&a.At); err != nil {
			return fmt.Errorf("insert alert: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_deliveries (tenant_id, crdb_region, alert_id, webhook_id)
SELECT tenant_id, crdb_region, $3, id FROM analytics_webhooks WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID, a.ID); err != nil {
			return fmt.Errorf("queue deliveries: %w", err)
		}
		raised = true
		target, targetID := "identity", a.IdentityID
		if targetID == "" {
			target, targetID = "tenant", sc.TenantID // policy drift is about the tenant's policy
		}
		return s.writeAudit(ctx, tx, sc, Change{Actor: "system", ActorKind: "system"}, audit{action: "analytics.alert", targetKind: target,
			targetID: targetID, after: map[string]any{"alert_id": a.ID, "kind": a.Kind, "value": a.Value, "reason": a.Reason}})
	})
	return a, raised, err
}

// AlertFilter selects alerts; zero fields select all.
type AlertFilter struct {
	IdentityID string
	Kind       string
}

// ListAlerts pages through the tenant's alerts, newest first, with their deliveries.
func (s *Store) ListAlerts(ctx context.Context, sc Scope, f AlertFilter, p Page) ([]Alert, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	if f.IdentityID != "" {
		if _, err := parseID("identity_id", f.IdentityID); err != nil {
			return nil, "", err
		}
	}
	var before timeKey
	if err := p.decode(&before); err != nil {
		return nil, "", err
	}
	if p.Token != "" {
		if _, err := parseID("page_token", before.ID); err != nil {
			return nil, "", fieldErr("page_token", "not a token returned by this listing")
		}
	}
	args := []any{sc.Region, sc.TenantID}
	where := []string{"crdb_region = $1", "tenant_id = $2"}
	add := func(pred string, vs ...any) {
		for _, v := range vs {
			args = append(args, v)
			pred = strings.Replace(pred, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		where = append(where, pred)
	}
	if f.IdentityID != "" {
		add("identity_id = ?", f.IdentityID)
	}
	if f.Kind != "" {
		add("kind = ?", f.Kind)
	}
	if p.Token != "" {
		add("(at, id) < (?, ?::UUID)", before.At, before.ID)
	}
	args = append(args, limit+1)
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, at, identity_id, kind, value, reason, region, node FROM analytics_alerts WHERE `+
		strings.Join(where, " AND ")+fmt.Sprintf(" ORDER BY at DESC, id DESC LIMIT $%d", len(args)), args...)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Alert, error) {
		a := Alert{TenantID: sc.TenantID}
		err := r.Scan(&a.ID, &a.At, &a.IdentityID, &a.Kind, &a.Value, &a.Reason, &a.Region, &a.Node)
		return a, err
	})
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(a Alert) timeKey { return timeKey{a.At, a.ID} })
	if len(out) == 0 {
		return out, next, nil
	}
	ids := make([]string, len(out))
	at := make(map[string]int, len(out))
	for i, a := range out {
		ids[i], at[a.ID] = a.ID, i
	}
	drows, err := s.pool.Query(ctx, `SELECT alert_id::TEXT, webhook_id::TEXT, state, attempts, last_error, delivered_at FROM analytics_deliveries
WHERE crdb_region = $1 AND tenant_id = $2 AND alert_id = ANY($3::UUID[]) ORDER BY webhook_id`, sc.Region, sc.TenantID, ids)
	if err != nil {
		return nil, "", classify(err)
	}
	ds, err := pgx.CollectRows(drows, scanDelivery)
	if err != nil {
		return nil, "", classify(err)
	}
	for _, d := range ds {
		out[at[d.AlertID]].Deliveries = append(out[at[d.AlertID]].Deliveries, d)
	}
	return out, next, nil
}

func scanDelivery(r pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	var delivered *time.Time
	err := r.Scan(&d.AlertID, &d.WebhookID, &d.State, &d.Attempts, &d.LastError, &delivered)
	if delivered != nil {
		d.DeliveredAt = *delivered
	}
	return d, err
}

// DriftDigest is one node's digest of a decision sample at a policy revision.
type DriftDigest struct {
	Revision int64
	SampleID string
	Digest   string
	Node     string
	Region   string
}

// RecordDrift writes this node's digest (replacing its earlier one of the same
// revision and sample) and returns the other nodes' digests of that revision and
// sample that differ from it.
func (s *Store) RecordDrift(ctx context.Context, sc Scope, d DriftDigest) ([]DriftDigest, error) {
	var out []DriftDigest
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_drift AS d (tenant_id, crdb_region, revision, sample_id, node, region, digest)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (crdb_region, tenant_id, revision, sample_id, node) DO UPDATE SET digest = excluded.digest, region = excluded.region, at = now()`,
			sc.TenantID, sc.Region, d.Revision, d.SampleID, s.node, s.region, d.Digest); err != nil {
			return fmt.Errorf("write drift digest: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT revision, sample_id, digest, node, region FROM analytics_drift
WHERE crdb_region = $1 AND tenant_id = $2 AND revision = $3 AND sample_id = $4 AND node <> $5 AND digest <> $6 ORDER BY node`,
			sc.Region, sc.TenantID, d.Revision, d.SampleID, s.node, d.Digest)
		if err != nil {
			return fmt.Errorf("read drift digests: %w", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (DriftDigest, error) {
			var x DriftDigest
			err := r.Scan(&x.Revision, &x.SampleID, &x.Digest, &x.Node, &x.Region)
			return x, err
		})
		if err != nil {
			return fmt.Errorf("read drift digests: %w", err)
		}
		return nil
	})
	return out, err
}

// AllTenants lists every tenant with its home region (drift compares every tenant a
// node serves, wherever it is homed).
func (s *Store) AllTenants(ctx context.Context) ([]Scope, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, home_region FROM tenants WHERE status = 'active' ORDER BY id`)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Scope, error) {
		var sc Scope
		err := r.Scan(&sc.TenantID, &sc.Region)
		return sc, err
	})
	return out, classify(err)
}
