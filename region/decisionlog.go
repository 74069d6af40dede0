package region

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// decisionLog writes permission decisions in batches. Record blocks when the buffer is
// full (backpressure: checks slow down, nothing is dropped); a failed batch is retried
// until it is written or the node stops. Safe for concurrent use.
type decisionLog struct {
	ch    chan schema.Decision
	store *schema.Store
	log   *slog.Logger
	m     *metrics
}

func newDecisionLog(store *schema.Store, log *slog.Logger, m *metrics, size int) *decisionLog {
	return &decisionLog{ch: make(chan schema.Decision, size), store: store, log: log, m: m}
}

// record queues d, waiting while the buffer is full.
func (l *decisionLog) record(ctx context.Context, d schema.Decision) error {
	select {
	case l.ch <- d:
		return nil
	default:
	}
	l.m.decisionBackpressure.Inc()
	select {
	case l.ch <- d:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes batches of up to 500 decisions, at least every 100 ms, until ctx is done;
// then it drains what is queued (for at most 10 s).
func (l *decisionLog) run(ctx context.Context) {
	batch := make([]schema.Decision, 0, 500)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	flush := func(ctx context.Context) {
		for len(batch) > 0 {
			err := l.store.WriteDecisions(ctx, batch)
			if err == nil {
				l.m.decisionsWritten.Add(float64(len(batch)))
				batch = batch[:0]
				return
			}
			l.log.Warn("write decision log; retrying", "decisions", len(batch), "err", err)
			select {
			case <-ctx.Done():
				l.log.Error("decision log: decisions not written at shutdown", "decisions", len(batch))
				return
			case <-time.After(time.Second):
			}
		}
	}
	for {
		select {
		case d := <-l.ch:
			batch = append(batch, d)
			if len(batch) == cap(batch) {
				flush(ctx)
			}
		case <-tick.C:
			flush(ctx)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				select {
				case d := <-l.ch:
					batch = append(batch, d)
					if len(batch) == cap(batch) {
						flush(dctx)
					}
				default:
					flush(dctx)
					return
				}
			}
		}
	}
}

// decisionPruner deletes the decisions that are past their tenant's retention, for
// the tenants homed in the node's region (whose decisions live there). Reads already
// hide them (DecisionService filters by the retention), so the pruner only reclaims
// space and may lag. Every node of a region runs one: their deletes may overlap, and
// a row is deleted once whoever gets there first (a conflict is retried by the
// store). A round is bounded in rows and time; tenants take turns being first, so one
// tenant's backlog cannot starve the others across rounds. Used by one goroutine.
type decisionPruner struct {
	store   *schema.Store
	region  string
	now     func() time.Time
	log     *slog.Logger
	m       *metrics
	every   time.Duration // between rounds, ± a quarter (jitter keeps a region's nodes apart)
	batch   int           // rows per DELETE
	maxRows int           // per round
	maxTime time.Duration // per round
	next    int           // the tenant that goes first in the next round
}

func newDecisionPruner(n *Node) *decisionPruner {
	every := n.cfg.DecisionPruneEvery
	if every == 0 {
		every = 5 * time.Minute
	}
	return &decisionPruner{store: n.store, region: n.cfg.Region, now: n.now, log: n.log, m: n.metrics, every: every,
		batch: 1000, maxRows: 100_000, maxTime: 30 * time.Second}
}

// run prunes every p.every (jittered) until ctx is done; a negative interval does
// nothing.
func (p *decisionPruner) run(ctx context.Context) {
	if p.every < 0 {
		return
	}
	for {
		t := time.NewTimer(p.every*3/4 + rand.N(p.every/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n, err := p.round(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("prune decision log", "pruned", n, "err", err)
		}
	}
}

// round deletes up to maxRows expired decisions within maxTime and returns how many.
func (p *decisionPruner) round(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.maxTime)
	defer cancel()
	ts, err := p.store.TenantsHomedIn(ctx, p.region)
	if err != nil || len(ts) == 0 {
		return 0, err
	}
	now := p.now()
	start := p.next % len(ts)
	p.next = start + 1
	total := 0
	for i := range ts {
		t := ts[(start+i)%len(ts)]
		cutoff := now.Add(-t.Retention)
		for total < p.maxRows {
			n, err := p.store.PruneDecisions(ctx, t.Scope, cutoff, min(p.batch, p.maxRows-total))
			total += n
			p.m.decisionsPruned.Add(float64(n))
			if err != nil {
				return total, fmt.Errorf("tenant %s: %w", t.Scope.TenantID, err)
			}
			if n < p.batch {
				break
			}
		}
	}
	return total, nil
}
