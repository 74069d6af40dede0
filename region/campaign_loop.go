package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/schema"
)

// reviewMetrics are the access reviews' series.
type reviewMetrics struct {
	items     *prometheus.CounterVec // decisions recorded, by decision (defaults included)
	reminders prometheus.Counter     // items reminded
}

func newReviewMetrics(reg prometheus.Registerer, cfg Config) (*reviewMetrics, error) {
	labels := prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID}
	m := &reviewMetrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Subsystem: "review", Name: "items_total",
			Help: "Access review items decided on this node, by decision (keep, revoke, modify), the deadline's defaults included.", ConstLabels: labels,
		}, []string{"decision"}),
		reminders: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Subsystem: "review", Name: "reminders_total",
			Help: "Access review items this node sent a reminder for (at most one per item per reminder interval, cluster-wide).", ConstLabels: labels,
		}),
	}
	for _, c := range []prometheus.Collector{m.items, m.reminders} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// countDefaulted counts the decisions the deadline (or a close) made.
func (n *Node) countDefaulted(items []schema.ReviewItem) {
	for _, it := range items {
		n.reviewMetrics.items.WithLabelValues(it.Decision).Inc()
	}
}

// reviewLoop sends reminders and ends campaigns past their deadline, for the tenants
// homed in the node's region. Every node runs one: reminders and closes are
// conditional updates decided by the database's clock, so racing nodes act once.
// Each round is bounded (items reminded, campaigns closed, time).
type reviewLoop struct {
	n         *Node
	every     time.Duration // between rounds, ± a quarter
	reminders int           // items reminded per tenant per round
	closes    int           // campaigns closed per tenant per round
	maxTime   time.Duration // per round
	log       *slog.Logger
}

func newReviewLoop(n *Node) *reviewLoop {
	every := n.cfg.ReviewEvery
	if every == 0 {
		every = time.Minute
	}
	return &reviewLoop{n: n, every: every, reminders: 500, closes: 10, maxTime: 30 * time.Second, log: n.log}
}

// run runs rounds every l.every (jittered) until ctx is done; a negative interval does
// nothing.
func (l *reviewLoop) run(ctx context.Context) {
	if l.every < 0 {
		return
	}
	for {
		t := time.NewTimer(l.every*3/4 + rand.N(l.every/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := l.round(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("access review round", "err", err)
		}
	}
}

// round reminds and closes, tenant by tenant, within maxTime.
func (l *reviewLoop) round(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.maxTime)
	defer cancel()
	ts, err := l.n.store.TenantsHomedIn(ctx, l.n.cfg.Region)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range ts {
		if ctx.Err() != nil {
			break
		}
		if err := l.tenant(ctx, t.Scope); err != nil {
			// One tenant's failure does not hold up the others' reminders and deadlines.
			errs = append(errs, fmt.Errorf("tenant %s: %w", t.Scope.TenantID, err))
		}
	}
	return errors.Join(errs...)
}

// tenant runs one round for one tenant.
func (l *reviewLoop) tenant(ctx context.Context, sc schema.Scope) error {
	rs, err := l.n.store.RemindReviewers(ctx, sc, l.reminders)
	if err != nil {
		return err
	}
	for _, r := range rs {
		l.n.reviewMetrics.reminders.Add(float64(r.Items))
		l.log.Info("access review reminder", "tenant", sc.TenantID, "campaign", r.CampaignID, "reviewer", r.ReviewerID, "items", r.Items)
	}
	due, err := l.n.store.DueCampaigns(ctx, sc, l.closes)
	if err != nil {
		return err
	}
	for _, id := range due {
		_, defaulted, closed, err := l.n.store.CloseCampaign(ctx, schema.Change{Actor: "system", ActorKind: "system"}, sc, id, true)
		if err != nil {
			return err
		}
		if closed {
			l.n.countDefaulted(defaulted)
			l.log.Info("access review campaign closed at its deadline", "tenant", sc.TenantID, "campaign", id, "defaulted", len(defaulted))
		}
	}
	return nil
}
