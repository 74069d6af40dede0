package schema

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The decision log: every permission decision a node made, in the tenant's home
// partition, kept for the tenant's DecisionRetention. Reads take the instant before
// which decisions are expired (the caller's clock minus the retention), so retention
// is exact whether or not the pruner has run yet; PruneDecisions deletes them.

// Decision is one logged permission decision.
type Decision struct {
	ID          string
	TenantID    string
	Region      string // the tenant's home region (partition)
	At          time.Time
	PrincipalID string
	Permission  string
	Resource    string
	Allowed     bool
	Reason      string
	BindingIDs  []string
	Revision    int64
	Latency     time.Duration
	// Trace is the engine's explain trace (one line per candidate binding); nil when
	// the decision was not explained.
	Trace []string
	// ServingRegion and Node are the region and node that decided; WriteDecisions
	// records the store's own, reads return them.
	ServingRegion string
	Node          string
	// Where the request came from (migration 0020): the caller's network (/24 IPv4,
	// /48 IPv6; "" when unknown), the client the checked token was issued to, the
	// region the request entered keyplane in, and the checked token's session.
	SourceNetwork, ClientID, EntryRegion, SessionID string
}

// Bounds of a tenant's decision retention.
const (
	MinDecisionRetention     = 24 * time.Hour
	MaxDecisionRetention     = 10 * 365 * 24 * time.Hour
	DefaultDecisionRetention = 90 * 24 * time.Hour // the column default of migration 0009
)

func checkDecisionRetention(field string, d time.Duration) error {
	if d < MinDecisionRetention || d > MaxDecisionRetention || d%time.Second != 0 {
		return fieldErr(field, "must be whole seconds between %s and %s", MinDecisionRetention, MaxDecisionRetention)
	}
	return nil
}

// WriteDecisions appends decisions to the decision log, recording this node's region
// and id: one COPY for the batch (the cheapest write there is, for the database and the
// node alike). Writing a decision again (a retried batch whose first attempt may have
// committed) changes nothing: when the COPY fails, the batch is written again as
// INSERT … ON CONFLICT DO NOTHING statements.
func (s *Store) WriteDecisions(ctx context.Context, ds []Decision) error {
	if len(ds) == 0 {
		return nil
	}
	rows := make([][]any, len(ds))
	for i, d := range ds {
		rows[i] = s.decisionRow(d)
	}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"decisions"}, decisionWriteColumns, pgx.CopyFromRows(rows)); err == nil {
		return nil
	} else if ctx.Err() != nil {
		return classify(err)
	}
	batch := &pgx.Batch{}
	for _, r := range rows {
		batch.Queue(`INSERT INTO decisions (`+strings.Join(decisionWriteColumns, ", ")+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT DO NOTHING`, r...)
	}
	return classify(s.pool.SendBatch(ctx, batch).Close())
}

var decisionWriteColumns = []string{"tenant_id", "id", "crdb_region", "at", "principal_id", "permission", "resource", "allowed", "reason",
	"binding_ids", "revision", "region", "node", "latency_us", "trace", "source_network", "client_id", "entry_region", "session_id"}

// decisionRow is d's values in decisionWriteColumns' order.
func (s *Store) decisionRow(d Decision) []any {
	if d.BindingIDs == nil {
		d.BindingIDs = []string{}
	}
	if d.Trace == nil {
		d.Trace = []string{}
	}
	id, err := uuid.Parse(d.ID)
	var idv any = d.ID
	if err == nil {
		idv = id // COPY's binary format wants the UUID itself
	}
	return []any{d.TenantID, idv, d.Region, d.At, d.PrincipalID, d.Permission, d.Resource, d.Allowed, d.Reason, d.BindingIDs, d.Revision,
		s.region, s.node, d.Latency.Microseconds(), d.Trace, d.SourceNetwork, d.ClientID, d.EntryRegion, d.SessionID}
}

// CountDecisions counts the tenant's logged decisions, expired or not (for tests and
// operators).
func (s *Store) CountDecisions(ctx context.Context, sc Scope) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM decisions WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID).Scan(&n)
	return n, classify(err)
}

const decisionColumns = `tenant_id, id::TEXT, crdb_region::TEXT, at, principal_id, permission, resource, allowed, reason, binding_ids,
 revision, region, node, latency_us, trace, source_network, client_id, entry_region, session_id`

func scanDecision(r pgx.Row) (Decision, error) {
	var d Decision
	var latency int64
	err := r.Scan(&d.TenantID, &d.ID, &d.Region, &d.At, &d.PrincipalID, &d.Permission, &d.Resource, &d.Allowed, &d.Reason, &d.BindingIDs,
		&d.Revision, &d.ServingRegion, &d.Node, &latency, &d.Trace, &d.SourceNetwork, &d.ClientID, &d.EntryRegion, &d.SessionID)
	d.Latency = time.Duration(latency) * time.Microsecond
	if len(d.Trace) == 0 {
		d.Trace = nil
	}
	return d, err
}

// GetDecision reads one of the tenant's decisions made at or after notBefore (the
// retention horizon); an older one is ErrNotFound, like one that does not exist.
func (s *Store) GetDecision(ctx context.Context, sc Scope, id string, notBefore time.Time) (Decision, error) {
	if _, err := parseID("decision_id", id); err != nil {
		return Decision{}, err
	}
	d, err := scanDecision(s.pool.QueryRow(ctx, `SELECT `+decisionColumns+` FROM decisions
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 AND at >= $4`, sc.Region, sc.TenantID, id, notBefore))
	if errors.Is(err, pgx.ErrNoRows) {
		return Decision{}, fmt.Errorf("%w: decision %s", ErrNotFound, id)
	}
	if err != nil {
		return Decision{}, classify(err)
	}
	return d, nil
}

// DecisionFilter selects decisions; zero fields select everything. The caller has
// validated Permission, Resource and ResourcePrefix as permission and resource syntax.
type DecisionFilter struct {
	PrincipalID    string
	Permission     string
	Resource       string // exact; at most one of Resource and ResourcePrefix
	ResourcePrefix string
	Allowed        *bool
	Start, End     time.Time // at >= Start, at < End
}

// ListDecisions pages through the tenant's decisions matching f, newest first (by
// time, then id), and never those made before notBefore (the retention horizon).
func (s *Store) ListDecisions(ctx context.Context, sc Scope, f DecisionFilter, notBefore time.Time, p Page) ([]Decision, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	if f.PrincipalID != "" {
		if _, err := parseID("principal_id", f.PrincipalID); err != nil {
			return nil, "", err
		}
	}
	for _, v := range []struct{ field, v string }{{"permission", f.Permission}, {"resource", f.Resource}, {"resource_prefix", f.ResourcePrefix}} {
		if len(v.v) > 1024 || !utf8.ValidString(v.v) || strings.ContainsRune(v.v, 0) {
			return nil, "", fieldErr(v.field, "must be valid UTF-8 without NUL, at most 1024 bytes")
		}
	}
	if f.Resource != "" && f.ResourcePrefix != "" {
		return nil, "", fieldErr("resource_prefix", "give either resource or resource_prefix, not both")
	}
	if !f.Start.IsZero() && !f.End.IsZero() && !f.Start.Before(f.End) {
		return nil, "", fieldErr("start_time", "must be before end_time")
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
	// Only the filters given become predicates, so the planner sees which index fits
	// (a "$n = '' OR column = $n" predicate can hide it from a generic plan).
	args := []any{sc.Region, sc.TenantID, notBefore}
	where := []string{"crdb_region = $1", "tenant_id = $2", "at >= $3"}
	add := func(pred string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(pred, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.PrincipalID != "" {
		add("principal_id = ?", f.PrincipalID)
	}
	if f.Permission != "" {
		add("permission = ?", f.Permission)
	}
	if f.Resource != "" {
		add("resource = ?", f.Resource)
	}
	if f.ResourcePrefix != "" {
		add(`resource LIKE ? ESCAPE '\'`, likePrefix(f.ResourcePrefix))
	}
	if f.Allowed != nil {
		add("allowed = ?", *f.Allowed)
	}
	if !f.Start.IsZero() {
		add("at >= ?", f.Start)
	}
	if !f.End.IsZero() {
		add("at < ?", f.End)
	}
	if p.Token != "" {
		args = append(args, before.At, before.ID)
		where = append(where, fmt.Sprintf("(at, id) < ($%d, $%d::UUID)", len(args)-1, len(args)))
	}
	args = append(args, limit+1)
	rows, err := s.pool.Query(ctx, `SELECT `+decisionColumns+` FROM decisions WHERE `+strings.Join(where, " AND ")+
		fmt.Sprintf(" ORDER BY at DESC, id DESC LIMIT $%d", len(args)), args...)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Decision, error) { return scanDecision(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(d Decision) timeKey { return timeKey{d.At, d.ID} })
	return out, next, nil
}

// likePrefix is a LIKE pattern matching the strings that start with prefix.
func likePrefix(prefix string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(prefix) + "%"
}

// ExpiringTenant is a tenant whose decisions the pruner of its home region expires.
type ExpiringTenant struct {
	Scope     Scope
	Retention time.Duration
}

// TenantsHomedIn lists the tenants homed in region with their decision retention,
// for that region's pruner.
func (s *Store) TenantsHomedIn(ctx context.Context, region string) ([]ExpiringTenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, decision_retention_seconds FROM tenants WHERE home_region = $1 ORDER BY id`, region)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ExpiringTenant, error) {
		var t ExpiringTenant
		var secs int64
		err := r.Scan(&t.Scope.TenantID, &secs)
		t.Scope.Region, t.Retention = region, time.Duration(secs)*time.Second
		return t, err
	})
	return out, classify(err)
}

// PruneDecisions deletes at most limit of the tenant's decisions made before
// cutoff, oldest first, in one statement (a keyed subselect: PostgreSQL has no
// DELETE … LIMIT), and returns how many it deleted. Nodes may run it concurrently:
// a row another node deleted first is simply not deleted twice.
func (s *Store) PruneDecisions(ctx context.Context, sc Scope, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM decisions WHERE crdb_region = $1 AND tenant_id = $2 AND id IN (
  SELECT id FROM decisions WHERE crdb_region = $1 AND tenant_id = $2 AND at < $3 ORDER BY at, id LIMIT $4)`,
			sc.Region, sc.TenantID, cutoff, limit)
		if err != nil {
			return fmt.Errorf("prune decisions: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return int(n), err
}
