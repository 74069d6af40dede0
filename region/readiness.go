package region

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// readinessTTL is how long one database ping answers readiness probes for: /readyz,
// gRPC health checks and the gossip readiness report all share it.
const readinessTTL = time.Second

// readiness answers "does the database answer?" for any number of concurrent probes
// with at most one ping per readinessTTL: concurrent probes wait for the one ping in
// flight (singleflight), and later ones reuse its answer while it is younger than the
// TTL, counted from when the ping was sent, so a success is never reported more than
// the TTL after the database last answered. A failure is shared the same way. Safe
// for concurrent use.
type readiness struct {
	ping func(context.Context) error
	ttl  time.Duration
	now  func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	sent   time.Time // when the cached answer's ping was sent; zero: none yet
	err    error
}

func newReadiness(ping func(context.Context) error, ttl time.Duration, now func() time.Time) *readiness {
	return &readiness{ping: ping, ttl: ttl, now: now}
}

// check returns the cached answer while it is fresh, or pings (once for all the
// callers that arrive meanwhile). The ping does not end with the first caller's
// context: the others wait for it too. A caller whose context ends first gets its
// context's error.
func (r *readiness) check(ctx context.Context) error {
	r.mu.Lock()
	if !r.sent.IsZero() && r.now().Sub(r.sent) < r.ttl {
		err := r.err
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	ch := r.flight.DoChan("ping", func() (any, error) {
		sent := r.now()
		err := r.ping(context.WithoutCancel(ctx)) // Store.Ping bounds itself (2 s)
		r.mu.Lock()
		if sent.After(r.sent) {
			r.sent, r.err = sent, err
		}
		r.mu.Unlock()
		return nil, err
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}
