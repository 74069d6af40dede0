package region

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// stateReader coalesces the decision reads of concurrent requests (docs/decisions/
// 0014-coalesced-decision-reads.md). Each region's partition has a queue: a request
// that finds fewer than maxInFlight reads in flight starts one at once with whatever
// is queued (a lone request waits for nobody); otherwise it queues, and the next read
// to start takes every queued key, up to maxKeys, in one statement.
//
// A request only ever joins a read that starts after it arrived, because queued keys
// are taken when a read starts, never added to one in flight. A read therefore sees
// every write acknowledged before the request arrived: sharing costs no staleness.
// Safe for concurrent use.
type stateReader struct {
	readStates  func(ctx context.Context, region string, keys []schema.StateKey) ([]schema.DecisionState, error)
	maxInFlight int
	maxKeys     int
	timeout     time.Duration // of one read, whatever its waiters' deadlines
	observe     func(keys int, err error)

	mu     sync.Mutex
	queues map[string]*stateQueue // by region
}

type stateQueue struct {
	inFlight int
	pending  []*stateWaiter
}

// A stateWaiter is one request's keys and, once done is closed, their states.
type stateWaiter struct {
	keys []schema.StateKey
	out  []schema.DecisionState
	err  error
	done chan struct{}
}

func newStateReader(store *schema.Store, maxInFlight, maxKeys int, timeout time.Duration, observe func(int, error)) *stateReader {
	return &stateReader{readStates: store.ReadDecisionStates, maxInFlight: max(maxInFlight, 1), maxKeys: min(max(maxKeys, 1), schema.MaxStateKeys),
		timeout: timeout, observe: observe, queues: map[string]*stateQueue{}}
}

// errTooManyKeys is a programming error: one request asked for more keys than a read
// may carry.
var errTooManyKeys = errors.New("decision read: more keys than one read may carry")

// read returns the states of keys, all homed in region, read by one statement that
// started after this call began. A request waiting for a read another request started
// returns early with ctx's error when ctx ends first; the read itself goes on for the
// requests sharing it.
func (r *stateReader) read(ctx context.Context, region string, keys ...schema.StateKey) ([]schema.DecisionState, error) {
	if len(keys) > r.maxKeys {
		return nil, errTooManyKeys
	}
	w := &stateWaiter{keys: keys, done: make(chan struct{})}
	r.mu.Lock()
	q := r.queues[region]
	if q == nil {
		q = &stateQueue{}
		r.queues[region] = q
	}
	q.pending = append(q.pending, w)
	var batch []*stateWaiter
	if q.inFlight < r.maxInFlight {
		q.inFlight++
		batch = q.take(r.maxKeys)
	}
	r.mu.Unlock()
	if batch != nil {
		// The request that starts a read makes it itself (no hand-off to another
		// goroutine and back); what queued meanwhile is read by a goroutine of its
		// own, so this request returns as soon as its own read is done.
		r.readBatch(region, batch)
		if next := r.next(q); next != nil {
			go r.run(region, q, next)
		}
		return w.out, w.err
	}
	select {
	case <-w.done:
		return w.out, w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take removes waiters from the front of the queue while their keys fit in maxKeys
// (at least one waiter).
func (q *stateQueue) take(maxKeys int) []*stateWaiter {
	n, keys := 0, 0
	for n < len(q.pending) && (n == 0 || keys+len(q.pending[n].keys) <= maxKeys) {
		keys += len(q.pending[n].keys)
		n++
	}
	batch := make([]*stateWaiter, n)
	copy(batch, q.pending)
	rest := copy(q.pending, q.pending[n:])
	clear(q.pending[rest:])
	q.pending = q.pending[:rest]
	return batch
}

// run reads batch, hands every waiter its states, then keeps reading what queued
// meanwhile until the queue is empty.
func (r *stateReader) run(region string, q *stateQueue, batch []*stateWaiter) {
	for batch != nil {
		r.readBatch(region, batch)
		batch = r.next(q)
	}
}

// next takes the next batch of q after a read finished, or gives the read's slot back
// when nothing is queued.
func (r *stateReader) next(q *stateQueue) []*stateWaiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(q.pending) == 0 {
		q.inFlight--
		return nil
	}
	return q.take(r.maxKeys)
}

func (r *stateReader) readBatch(region string, batch []*stateWaiter) {
	var keys []schema.StateKey
	if len(batch) == 1 {
		keys = batch[0].keys
	} else {
		for _, w := range batch {
			keys = append(keys, w.keys...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	states, err := r.readStates(ctx, region, keys)
	cancel()
	if r.observe != nil {
		r.observe(len(keys), err)
	}
	off := 0
	for _, w := range batch {
		if err != nil {
			w.err = err
		} else {
			w.out = states[off : off+len(w.keys) : off+len(w.keys)]
		}
		off += len(w.keys)
		close(w.done)
	}
}
