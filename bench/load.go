package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
)

// op is one operation of a workload, run by worker w. It reports the route the
// request took ("" when it does not matter) and the configured round trip it had to
// pay (0 outside multi-region mode).
type op func(ctx context.Context, w int) (route string, rtt time.Duration, err error)

// maxOps bounds every loop whatever its duration.
const maxOps = 20_000_000

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3) // µs, 1 µs .. 1 min
}

// recorder collects latencies (µs), errors, routes and a per-second timeline. Safe for
// concurrent use.
type recorder struct {
	mu       sync.Mutex
	start    time.Time
	all      *hdrhistogram.Histogram
	sec      *hdrhistogram.Histogram
	secOK    int64
	secErr   int64
	ok       int64
	errors   map[string]int64
	routes   map[string]*hdrhistogram.Histogram
	rttSum   map[string]time.Duration
	timeline []Point
}

func newRecorder() *recorder {
	return &recorder{start: time.Now(), all: newHist(), sec: newHist(), errors: map[string]int64{},
		routes: map[string]*hdrhistogram.Histogram{}, rttSum: map[string]time.Duration{}}
}

func (r *recorder) record(lat time.Duration, route string, rtt time.Duration, err error) {
	us := max(lat.Microseconds(), 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors[errorCode(err)]++
		r.secErr++
		return
	}
	r.ok++
	r.secOK++
	_ = r.all.RecordValue(us)
	_ = r.sec.RecordValue(us)
	if route != "" {
		// Forwards to different regions pay different round trips: one entry per
		// route and round trip, so each compares with its own.
		key := route
		if rtt > 0 {
			key = fmt.Sprintf("%s %.0fms", route, float64(rtt.Microseconds())/1000)
		}
		h := r.routes[key]
		if h == nil {
			h = newHist()
			r.routes[key] = h
		}
		_ = h.RecordValue(us)
		r.rttSum[key] += rtt
	}
}

// tick closes the current second of the timeline.
func (r *recorder) tick(now time.Time) Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Point{T: now.Sub(r.start).Seconds(), Throughput: float64(r.secOK), Errors: r.secErr, P99: ms(r.sec.ValueAtQuantile(99))}
	r.timeline = append(r.timeline, p)
	r.sec.Reset()
	r.secOK, r.secErr = 0, 0
	return p
}

func ms(us int64) float64 { return float64(us) / 1000 }

func latencyOf(h *hdrhistogram.Histogram) Latency {
	return Latency{P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max())}
}

// fill writes what the recorder saw into res.
func (r *recorder) fill(res *Result, elapsed time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.DurationS = elapsed.Seconds()
	res.Ops = r.ok + sum(r.errors)
	res.Throughput = float64(r.ok) / elapsed.Seconds()
	res.Latency = latencyOf(r.all)
	res.Errors = maps.Clone(r.errors)
	res.Timeline = slices.Clone(r.timeline)
	if len(r.routes) > 0 {
		res.Routes = map[string]Route{}
		for name, h := range r.routes {
			res.Routes[name] = Route{Ops: h.TotalCount(), Latency: latencyOf(h),
				RTTms: float64(r.rttSum[name].Microseconds()) / 1000 / float64(max(h.TotalCount(), 1))}
		}
	}
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// errorCode names an error for the report: its Connect code, or "transport".
func errorCode(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code().String()
	}
	var ie inactiveError
	if errors.As(err, &ie) {
		return "wrong_answer"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded"
	}
	return "transport"
}

// inactiveError is an answer the workload did not expect (a live token reported
// inactive): counted as an error, never as a success.
type inactiveError struct{ what string }

func (e inactiveError) Error() string { return e.what }

// progress prints a live line every second until ctx ends, and closes the timeline.
func progress(ctx context.Context, w io.Writer, label string, rec *recorder, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var total int64
	for {
		select {
		case <-ctx.Done():
			if w != nil {
				fmt.Fprintln(w)
			}
			return
		case now := <-t.C:
			p := rec.tick(now)
			total += int64(p.Throughput)
			if w != nil {
				fmt.Fprintf(w, "\r%-28s %4.0fs  %9d ok  %7.0f/s  p99 %7.2f ms  errors %d   ", label, p.T, total, p.Throughput, p.P99, p.Errors)
			}
		}
	}
}

// closedLoop runs conc workers back to back for d. Calls in flight at the end finish
// (they are not cut by the run's deadline, which would count as errors).
func closedLoop(ctx context.Context, conc int, d time.Duration, f op, rec *recorder) {
	deadline := time.Now().Add(d)
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) && n.Add(1) <= maxOps {
				start := time.Now()
				route, rtt, err := f(ctx, w)
				if ctx.Err() != nil {
					return // the run was cancelled mid-call: not an error of the system
				}
				rec.record(time.Since(start), route, rtt, err)
			}
		}()
	}
	wg.Wait()
}

// openLoop starts operations at a constant rate for d, whatever the latency, at most
// maxInFlight at once. Latency is measured from each operation's intended start, so a
// stall shows up in every operation it delayed (no coordinated omission).
func openLoop(ctx context.Context, rate float64, d time.Duration, maxInFlight int, f op, rec *recorder) {
	interval := time.Duration(float64(time.Second) / rate)
	total := min(int64(rate*d.Seconds()), maxOps)
	slots := make(chan int, maxInFlight)
	for w := range maxInFlight {
		slots <- w
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	for i := range total {
		intended := start.Add(time.Duration(i) * interval)
		if wait := time.Until(intended); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		var w int
		select {
		case w = <-slots:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { slots <- w }()
			route, rtt, err := f(ctx, w)
			if ctx.Err() != nil {
				return
			}
			rec.record(time.Since(intended), route, rtt, err)
		}()
	}
}
