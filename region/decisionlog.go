package region

import (
	"context"
	"log/slog"
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
