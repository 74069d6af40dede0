package region

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/schema"
)

// The governance sweeper (docs/governance.md, docs/decisions/0013-sweeper-lease.md):
// every node runs one; the node holding its region's lease row sweeps the tenants
// homed in the region (schema.SweepTenant): identities and credentials past their
// expiry, NHIs whose owner is gone, rotation deadlines ahead. The lease is judged by
// the database's clock, never the node's; every action is idempotent on its own, so
// two nodes that both believe they hold the lease still act once between them.

// SweepLease is the name of the region-wide lease the governance sweeper holds.
const SweepLease = "governance.sweep"

// Sweep results, the labels of keyplane_governance_sweeps_total.
const (
	sweepSwept   = "swept"   // this node held the lease and swept every tenant
	sweepStandby = "standby" // another node holds the lease
	sweepLost    = "lost"    // the lease was lost part way (renewal refused)
	sweepError   = "error"
)

// DefaultSweepEvery is Config.GovernanceSweepEvery's default.
const DefaultSweepEvery = time.Minute

type sweepMetrics struct {
	sweeps  *prometheus.CounterVec
	actions *prometheus.CounterVec
}

func newSweepMetrics(reg prometheus.Registerer, cfg Config) (*sweepMetrics, error) {
	labels := prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID}
	m := &sweepMetrics{
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "governance_sweeps_total",
			Help:        "Governance sweeper passes by result: swept (held the region's lease), standby (another node holds it), lost (lost it part way), error.",
			ConstLabels: labels,
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "governance_actions_total",
			Help:        "Governance sweeper actions by action: identity_expire, credential_expire, identity_freeze, credential_rotation_due.",
			ConstLabels: labels,
		}, []string{"action"}),
	}
	for _, c := range []prometheus.Collector{m.sweeps, m.actions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{sweepSwept, sweepStandby, sweepLost, sweepError} {
		m.sweeps.WithLabelValues(r)
	}
	for _, a := range []string{schema.SweepDisableExpired, schema.SweepExpireCred, schema.SweepFreezeOrphan, schema.SweepRotationDue} {
		m.actions.WithLabelValues(a)
	}
	return m, nil
}

// sweeper runs the governance sweep of one node. run is called once; it is not safe
// for concurrent use otherwise.
type sweeper struct {
	store   *schema.Store
	region  string
	holder  string // the node id
	every   time.Duration
	ttl     time.Duration
	limit   int           // actions of each kind per tenant and pass
	maxTime time.Duration // per pass
	log     *slog.Logger
	m       *sweepMetrics
	next    int // the tenant that goes first in the next pass
}

func newSweeper(n *Node, m *sweepMetrics) *sweeper {
	every := n.cfg.GovernanceSweepEvery
	if every == 0 {
		every = DefaultSweepEvery
	}
	return &sweeper{store: n.store, region: n.cfg.Region, holder: n.cfg.NodeID, every: every,
		ttl: max(3*every, schema.MinLeaseTTL), limit: 500, maxTime: max(every, 30*time.Second), log: n.log, m: m}
}

// run sweeps every s.every (± a quarter) until ctx is done, then releases the lease
// (so another node need not wait out the TTL); a negative interval does nothing.
func (s *sweeper) run(ctx context.Context) {
	if s.every < 0 {
		return
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := s.store.ReleaseLease(rctx, schema.Scope{Region: s.region}, SweepLease, s.holder); err != nil {
			s.log.Warn("release governance sweep lease", "err", err)
		}
	}()
	for {
		t := time.NewTimer(s.every*3/4 + rand.N(s.every/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.m.sweeps.WithLabelValues(s.pass(ctx)).Inc()
	}
}

// pass takes or renews the region's lease and, holding it, sweeps every tenant homed
// in the region, renewing the lease between tenants; it returns the pass's result.
func (s *sweeper) pass(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, s.maxTime)
	defer cancel()
	lease := schema.Scope{Region: s.region}
	ok, err := s.store.AcquireLease(ctx, lease, SweepLease, s.holder, s.ttl)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("governance sweep lease", "err", err)
		}
		return sweepError
	}
	if !ok {
		return sweepStandby
	}
	ts, err := s.store.TenantsHomedIn(ctx, s.region)
	if err != nil {
		s.log.Warn("governance sweep: list tenants", "err", err)
		return sweepError
	}
	if len(ts) == 0 {
		return sweepSwept
	}
	start := s.next % len(ts)
	s.next = start + 1
	for k := range ts {
		if k > 0 {
			if ok, err := s.store.AcquireLease(ctx, lease, SweepLease, s.holder, s.ttl); err != nil || !ok {
				return sweepLost
			}
		}
		sc := ts[(start+k)%len(ts)].Scope
		r, err := s.store.SweepTenant(ctx, sc, s.limit)
		for action, n := range r.Count() {
			s.m.actions.WithLabelValues(action).Add(float64(n))
		}
		if r.Total() > 0 {
			s.log.Info("governance sweep", "tenant", sc.TenantID, "disabled", len(r.Disabled), "credentials_expired", len(r.Expired),
				"frozen", len(r.Frozen), "rotation_due", len(r.RotationDue))
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("governance sweep", "tenant", sc.TenantID, "err", err)
			}
			return sweepError
		}
		// Recorded responses of idempotency keys older than a day go too.
		if _, err := s.store.PruneIdempotencyKeys(ctx, sc, 10*s.limit); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("governance sweep: prune idempotency keys", "tenant", sc.TenantID, "err", err)
			}
			return sweepError
		}
	}
	return sweepSwept
}
