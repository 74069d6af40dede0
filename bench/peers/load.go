package peers

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/procfs"
	"google.golang.org/grpc/status"
)

// checkFunc answers whether identity i may view resource r, for worker w. Safe for
// concurrent use by distinct workers.
type checkFunc func(ctx context.Context, w, i, r int) (allowed bool, err error)

// Bounds of every loop, whatever its duration.
const (
	maxOps      = 20_000_000
	callTimeout = 10 * time.Second
)

// tally is what one closed-loop run saw.
type tally struct {
	hist     *hdrhistogram.Histogram // µs of the successful calls
	ok       int64
	allowed  int64
	errors   map[string]int64
	firstErr string
	elapsed  time.Duration
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3) // µs, 1 µs .. 1 min, as the load bench
}

// closedLoop runs conc workers back to back for d. Worker w draws its pairs uniformly
// from a random stream seeded with (seed, w), so every system sees the same pairs in
// the same order per worker.
func closedLoop(ctx context.Context, conc int, d time.Duration, identities, resources int, seed uint64, f checkFunc) tally {
	deadline := time.Now().Add(d)
	var n atomic.Int64
	var mu sync.Mutex
	t := tally{hist: newHist(), errors: map[string]int64{}}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			h := newHist()
			var ok, allowed int64
			errs := map[string]int64{}
			var first string
			for ctx.Err() == nil && time.Now().Before(deadline) && n.Add(1) <= maxOps {
				i, r := rng.IntN(identities), rng.IntN(resources)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				begin := time.Now()
				yes, err := f(cctx, w, i, r)
				lat := time.Since(begin)
				cancel()
				if ctx.Err() != nil {
					break // the run was cancelled mid-call: not the system's error
				}
				if err != nil {
					errs[errorKind(err)]++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				ok++
				if yes {
					allowed++
				}
				_ = h.RecordValue(max(lat.Microseconds(), 1))
			}
			mu.Lock()
			defer mu.Unlock()
			t.hist.Merge(h)
			t.ok += ok
			t.allowed += allowed
			for k, v := range errs {
				t.errors[k] += v
			}
			if t.firstErr == "" {
				t.firstErr = first
			}
		}()
	}
	wg.Wait()
	t.elapsed = time.Since(start)
	return t
}

// errorKind names an error for the report: its Connect or gRPC code,
// deadline_exceeded, or transport.
func errorKind(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code().String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded"
	}
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	return "transport"
}

// loadAvg is the machine's 1-minute load average, 0 when it cannot be read.
func loadAvg() float64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return 0
	}
	return l.Load1
}
