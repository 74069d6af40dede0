package region

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// lastUsed coalesces credentials' last-use times: a request records the use in memory
// and a flusher writes each credential at most once per interval, so authenticating is
// never a write. Safe for concurrent use.
type lastUsed struct {
	mu      sync.Mutex
	pending map[schema.Scope]map[string]time.Time
}

func (l *lastUsed) touch(sc schema.Scope, credID string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[schema.Scope]map[string]time.Time{}
	}
	m := l.pending[sc]
	if m == nil {
		m = map[string]time.Time{}
		l.pending[sc] = m
	}
	m[credID] = at
}

// flush writes what is pending; what fails to be written is kept for the next flush
// unless newer uses replaced it.
func (l *lastUsed) flush(ctx context.Context, store *schema.Store, log *slog.Logger) {
	l.mu.Lock()
	batch := l.pending
	l.pending = nil
	l.mu.Unlock()
	for sc, m := range batch {
		if err := store.TouchCredentials(ctx, sc, m); err != nil {
			log.Warn("record credential last use", "tenant", sc.TenantID, "err", err)
			for id, at := range m {
				l.touchIfNewer(sc, id, at)
			}
		}
	}
}

func (l *lastUsed) touchIfNewer(sc schema.Scope, id string, at time.Time) {
	l.mu.Lock()
	cur, ok := l.pending[sc][id]
	l.mu.Unlock()
	if !ok || cur.Before(at) {
		l.touch(sc, id, at)
	}
}

// run flushes every interval until ctx is done, then once more.
func (l *lastUsed) run(ctx context.Context, every time.Duration, store *schema.Store, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			l.flush(fctx, store, log)
			cancel()
			return
		case <-t.C:
			l.flush(ctx, store, log)
		}
	}
}
