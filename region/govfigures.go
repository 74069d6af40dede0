package region

import (
	"context"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Governance figures (docs/governance.md, "Governance figures"): every node computes
// the figures of the tenants homed in its region every GovernanceFiguresEvery,
// exports them as keyplane_governance_* gauges labelled by tenant, and records the
// day's snapshot (the first node to compute a tenant's figures in a UTC day writes
// it). All nodes of a region export the same figures: aggregate with max by (tenant).

// DefaultFiguresEvery is how often a node computes the figures unless configured.
const DefaultFiguresEvery = 15 * time.Minute

// GovernanceWindow is how far back the flow figures look (provisioning, logins, use
// of grants, resources checked), shortened to the tenant's decision retention.
const GovernanceWindow = 30 * 24 * time.Hour

// governanceWindowStart is where a tenant's figures window starts at now.
func governanceWindowStart(now time.Time, retention time.Duration) time.Time {
	w := GovernanceWindow
	if retention > 0 && retention < w {
		w = retention
	}
	return now.Add(-w)
}

type governanceFigures struct {
	store  *schema.Store
	region string
	now    func() time.Time
	log    *slog.Logger
	every  time.Duration
	rounds *prometheus.CounterVec

	mu     sync.Mutex
	latest map[string]schema.GovernanceFigures // by tenant, from the last round
}

func newGovernanceFigures(n *Node, reg prometheus.Registerer) (*governanceFigures, error) {
	every := n.cfg.GovernanceFiguresEvery
	if every == 0 {
		every = DefaultFiguresEvery
	}
	labels := prometheus.Labels{"region": n.cfg.Region, "node": n.cfg.NodeID}
	g := &governanceFigures{store: n.store, region: n.cfg.Region, now: n.now, log: n.log, every: every,
		latest: map[string]schema.GovernanceFigures{},
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "governance_figure_rounds_total",
			Help: "Rounds of computing the governance figures of the tenants homed in this region, by result (ok, error).", ConstLabels: labels,
		}, []string{"result"})}
	for _, c := range []prometheus.Collector{g.rounds, &governanceCollector{g: g, labels: labels}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// run computes the figures every g.every (jittered) until ctx is done, the first
// round soon after start; a negative interval does nothing.
func (g *governanceFigures) run(ctx context.Context) {
	if g.every < 0 {
		return
	}
	wait := rand.N(g.every/4 + 1)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := g.round(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("governance figures", "err", err)
		}
		wait = g.every*3/4 + rand.N(g.every/2+1)
	}
}

// round computes every home tenant's figures (each bounded by a minute), keeps them
// for the gauges, and records the day's snapshots. A tenant that fails keeps its
// previous figures; the round reports the first error.
func (g *governanceFigures) round(ctx context.Context) error {
	ts, err := g.store.TenantsHomedIn(ctx, g.region)
	if err != nil {
		g.rounds.WithLabelValues("error").Inc()
		return err
	}
	latest := map[string]schema.GovernanceFigures{}
	g.mu.Lock()
	for _, t := range ts { // keep last figures of tenants still homed here
		if f, ok := g.latest[t.Scope.TenantID]; ok {
			latest[t.Scope.TenantID] = f
		}
	}
	g.mu.Unlock()
	var first error
	for _, t := range ts {
		now := g.now()
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		f, err := g.store.GovernanceFigures(tctx, t.Scope, governanceWindowStart(now, t.Retention), now)
		if err == nil {
			_, err = g.store.RecordGovernanceSnapshot(tctx, t.Scope, f)
			latest[t.Scope.TenantID] = f
		}
		cancel()
		if err != nil && first == nil {
			first = err
		}
	}
	g.mu.Lock()
	g.latest = latest
	g.mu.Unlock()
	result := "ok"
	if first != nil {
		result = "error"
	}
	g.rounds.WithLabelValues(result).Inc()
	return first
}

// governanceCollector exports the latest figures; a tenant no longer homed here
// disappears, and a ratio with nothing to divide by is left out rather than shown
// as 0.
type governanceCollector struct {
	g      *governanceFigures
	labels prometheus.Labels
}

// governanceGauge is one exported figure.
type governanceGauge struct {
	desc  *prometheus.Desc
	value func(schema.GovernanceFigures) []labelled
}

type labelled struct {
	v     float64
	extra string // the value of the gauge's extra label, if it has one
}

func one(v float64) []labelled { return []labelled{{v: v}} }

func (c *governanceCollector) gauges() []governanceGauge {
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("keyplane_governance_"+name, help, append([]string{"tenant"}, extra...), c.labels)
	}
	return []governanceGauge{
		{d("humans", "Active human identities of the tenant."), func(f schema.GovernanceFigures) []labelled { return one(float64(f.Humans)) }},
		{d("mfa_coverage_ratio", "Share of active humans with a confirmed second factor (TOTP)."),
			func(f schema.GovernanceFigures) []labelled { return one(f.MFACoverageRatio()) }},
		{d("nhis", "Non-human identities not disabled, by how they authenticate: static (API key or client secret), federated, static_and_federated, none.", "auth"),
			func(f schema.GovernanceFigures) []labelled {
				return []labelled{{float64(f.NHIStaticOnly), "static"}, {float64(f.NHIFederatedOnly), "federated"},
					{float64(f.NHIStaticAndFed), "static_and_federated"}, {float64(f.NHINoCredential), "none"}}
			}},
		{d("orphaned_nhis", "Non-human identities whose owner is disabled, frozen, offboarded, erased or expired."),
			func(f schema.GovernanceFigures) []labelled { return one(float64(f.OrphanedNHIs)) }},
		{d("frozen_nhis", "Non-human identities frozen until an owner is assigned."),
			func(f schema.GovernanceFigures) []labelled { return one(float64(f.FrozenNHIs)) }},
		{d("disabled_with_access", "Disabled identities, not offboarded, that still hold a binding or a group membership."),
			func(f schema.GovernanceFigures) []labelled { return one(float64(f.DisabledWithAccess)) }},
		{d("least_privilege_ratio", "Share of held grants (identity × allow binding) used by an allowed decision in the window."),
			func(f schema.GovernanceFigures) []labelled { return one(f.LeastPrivilegeRatio()) }},
		{d("policy_coverage_ratio", "Share of resources checked in the window that a live allow binding covers."),
			func(f schema.GovernanceFigures) []labelled { return one(f.PolicyCoverageRatio()) }},
		{d("owned_resources_ratio", "Share of resources checked in the window that a binding held by an active human covers."),
			func(f schema.GovernanceFigures) []labelled { return one(f.OwnershipRatio()) }},
		{d("provision_seconds", "Time from an identity's creation to its first access, for identities created in the window, by quantile.", "quantile"),
			func(f schema.GovernanceFigures) []labelled {
				if f.Provisioned == f.ProvisionedNoAccess {
					return nil
				}
				return []labelled{{f.ProvisionP50Seconds, "0.5"}, {f.ProvisionP95Seconds, "0.95"}}
			}},
		{d("deprovision_seconds", "Time from an identity's first disable to its offboarding, for identities offboarded in the window, by quantile.", "quantile"),
			func(f schema.GovernanceFigures) []labelled {
				if f.Deprovisioned == 0 {
					return nil
				}
				return []labelled{{f.DeprovisionP50Seconds, "0.5"}, {f.DeprovisionP95Seconds, "0.95"}}
			}},
		{d("login_success_ratio", "Share of password logins in the window that succeeded."),
			func(f schema.GovernanceFigures) []labelled { return one(f.LoginSuccessRatio()) }},
	}
}

func (c *governanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.gauges() {
		ch <- g.desc
	}
}

func (c *governanceCollector) Collect(ch chan<- prometheus.Metric) {
	c.g.mu.Lock()
	latest := maps.Clone(c.g.latest)
	c.g.mu.Unlock()
	for _, g := range c.gauges() {
		for tenant, f := range latest {
			for _, l := range g.value(f) {
				if math.IsNaN(l.v) || math.IsInf(l.v, 0) {
					continue
				}
				values := []string{tenant}
				if l.extra != "" {
					values = append(values, l.extra)
				}
				ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, l.v, values...)
			}
		}
	}
}

// GetGovernanceReport computes the tenant's figures for the call and returns them with
// the daily snapshots of the last days.
func (s *GovernanceService) GetGovernanceReport(ctx context.Context, req *connect.Request[keyplanev1.GetGovernanceReportRequest]) (*connect.Response[keyplanev1.GetGovernanceReportResponse], error) {
	m := req.Msg
	days := int(m.Days)
	switch {
	case days == 0:
		days = 90
	case days < 1 || days > 3660:
		return nil, fieldError("days", "must be between 1 and 3660 (0: 90)")
	}
	t, err := s.node.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	now := s.node.now()
	f, err := s.node.store.GovernanceFigures(ctx, t.Scope(), governanceWindowStart(now, t.DecisionRetention), now)
	if err != nil {
		return nil, err
	}
	snaps, err := s.node.store.GovernanceSnapshots(ctx, t.Scope(), now.AddDate(0, 0, -days))
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.GetGovernanceReportResponse{Current: figuresToProto(f)}
	for _, sn := range snaps {
		out.History = append(out.History, &keyplanev1.GovernanceSnapshot{Day: timestamppb.New(sn.Day), Figures: figuresToProto(sn.Figures)})
	}
	return connect.NewResponse(out), nil
}

func figuresToProto(f schema.GovernanceFigures) *keyplanev1.GovernanceFigures {
	failures := make(map[string]int32, len(f.LoginFailures))
	for k, v := range f.LoginFailures {
		failures[k] = int32(v)
	}
	i := func(v int) int32 { return int32(min(v, math.MaxInt32)) }
	return &keyplanev1.GovernanceFigures{
		ComputeTime: timestamppb.New(f.At), WindowStartTime: timestamppb.New(f.Since),
		Provisioned: i(f.Provisioned), ProvisionedWithoutAccess: i(f.ProvisionedNoAccess),
		ProvisionP50Seconds: f.ProvisionP50Seconds, ProvisionP95Seconds: f.ProvisionP95Seconds,
		Deprovisioned: i(f.Deprovisioned), DeprovisionP50Seconds: f.DeprovisionP50Seconds, DeprovisionP95Seconds: f.DeprovisionP95Seconds,
		DisabledWithAccess: i(f.DisabledWithAccess), Humans: i(f.Humans), HumansMfa: i(f.HumansMFA),
		Nhis: i(f.NHIs), OrphanedNhis: i(f.OrphanedNHIs), FrozenNhis: i(f.FrozenNHIs),
		NhisStaticOnly: i(f.NHIStaticOnly), NhisFederatedOnly: i(f.NHIFederatedOnly), NhisStaticAndFederated: i(f.NHIStaticAndFed),
		NhisWithoutCredentials: i(f.NHINoCredential), GrantsHeld: i(f.GrantsHeld), GrantsUsed: i(f.GrantsUsed),
		ResourcesChecked: i(f.ResourcesChecked), ResourcesCovered: i(f.ResourcesCovered), ResourcesOwned: i(f.ResourcesOwned),
		LoginSuccesses: i(f.LoginSuccesses), LoginFailures: failures,
	}
}
