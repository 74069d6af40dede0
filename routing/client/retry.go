package client

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// budget is a retry token bucket in the manner of gRPC retry throttling: it starts
// full with size tokens, every successful call earns perSuccess tokens (never past
// size), and every retry spends one. When fewer than one token is left, calls are
// not retried, so a region outage cannot multiply the load on the survivors by more
// than about 1+perSuccess once the initial burst is spent. Safe for concurrent use.
type budget struct {
	mu         sync.Mutex
	tokens     float64
	size       float64
	perSuccess float64
}

func newBudget(size int, perSuccess float64) *budget {
	return &budget{tokens: float64(size), size: float64(size), perSuccess: perSuccess}
}

// success records a call that needed no retry of its outcome.
func (b *budget) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.size, b.tokens+b.perSuccess)
}

// spend takes a token for one retry and reports whether there was one.
func (b *budget) spend() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// backoff returns the pause before retry number retry (1 for the first retry):
// uniformly random in [0, min(ceiling, base·2^(retry-1))] ("full jitter").
func backoff(retry int, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if shift := retry - 1; shift < 32 && base<<shift > 0 && base<<shift < ceiling {
		d = base << shift
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// sleep waits for d or until ctx is done, and reports whether the whole d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
