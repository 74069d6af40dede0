package region_test

import (
	"sync"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

// recordedHistory is a history recorded by concurrent readers and one revoker, which
// marks when its last revocation was acknowledged; readers go on until enough reads
// started after that mark (a loaded machine makes them slow: a fixed window could end
// before any).
type recordedHistory struct {
	mu     sync.Mutex
	ops    []history.Op
	marked time.Time // the last revocation's acknowledgement; zero before
	after  int       // reads that started after marked
}

func (h *recordedHistory) record(op history.Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	if op.Kind == history.Read && !h.marked.IsZero() && op.Start.After(h.marked) {
		h.after++
	}
}

// waitAfterLast marks now as the last revocation and waits until n reads started after
// it, or until deadline.
func (h *recordedHistory) waitAfterLast(n int, deadline time.Time) {
	h.mu.Lock()
	h.marked = time.Now()
	h.mu.Unlock()
	for time.Now().Before(deadline) {
		h.mu.Lock()
		enough := h.after >= n
		h.mu.Unlock()
		if enough {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// history returns the recorded operations (call after the readers stopped).
func (h *recordedHistory) history() []history.Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ops
}
