package bench_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/bench"
)

func TestWriteTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rep  bench.Report
		want []string // lines
	}{
		{"no workloads", bench.Report{}, []string{
			"  workload  mode  conc  ops  ops/s  p50 ms  p99 ms  p99.9 ms  errors  floor/s  floor p99  ratio  bindings/s  b.ratio",
		}},
		{"baseline and targets", bench.Report{Results: []bench.Result{{
			Workload: "validate", Mode: "closed", Concurrency: 16, Ops: 120000, Throughput: 3999.6,
			Latency:  bench.Latency{P50: 0.8123, P90: 1.5, P99: 3.14159, P999: 7, Max: 12.346},
			Errors:   map[string]int64{"unavailable": 2, "transport": 1},
			Baseline: &bench.Baseline{Throughput: 8000.4, Latency: bench.Latency{P50: 0.5, P99: 2.1}},
			Ratio:    0.4999,
			Targets: []bench.Target{
				{Name: "p99 within baseline + 1 ms", Want: "≤ 3.10 ms", Got: "3.14 ms", Met: false},
				{Name: "throughput ≥ 0.5 × baseline", Want: "≥ 4000/s", Got: "4000/s", Met: true},
			},
		}}}, []string{
			"  workload    mode  conc     ops  ops/s  p50 ms  p99 ms  p99.9 ms  errors  floor/s  floor p99  ratio  bindings/s  b.ratio",
			"  validate  closed    16  120000   4000    0.81    3.14      7.00       3     8000       2.10   0.50           -        -",
			"validate: p99 within baseline + 1 ms: want ≤ 3.10 ms, got 3.14 ms: MISSED",
			"validate: throughput ≥ 0.5 × baseline: want ≥ 4000/s, got 4000/s: met",
		}},
		{"routes sorted and a ladder, no baselines", bench.Report{Results: []bench.Result{
			{
				Workload: "check-reload", Mode: "open", Concurrency: 64, Rate: 2000, Ops: 60000, Throughput: 2000,
				Latency: bench.Latency{P50: 1, P99: 4, P999: 8},
				Routes: map[string]bench.Route{
					"local":     {Ops: 39990, Latency: bench.Latency{P50: 0.9, P99: 3}},
					"forwarded": {Ops: 20000, Latency: bench.Latency{P50: 42.5, P99: 60}, RTTms: 40},
					"degraded":  {Ops: 10, Latency: bench.Latency{P50: 2, P99: 3}, RTTms: 1},
				},
			},
			{
				Workload: "mixed", Mode: "ladder", Concurrency: 16, Ops: 1000, Throughput: 900,
				Latency: bench.Latency{P50: 2, P99: 9, P999: 12}, Errors: map[string]int64{"deadline_exceeded": 4}, MaxRate: 750,
			},
		}}, []string{
			"      workload    mode  conc    ops  ops/s  p50 ms  p99 ms  p99.9 ms  errors  floor/s  floor p99  ratio  bindings/s  b.ratio",
			"  check-reload    open    64  60000   2000    1.00    4.00      8.00       0        -          -      -           -        -",
			"         mixed  ladder    16   1000    900    2.00    9.00     12.00       4        -          -      -           -        -",
			"check-reload route degraded       10 ops  p50    2.00 ms  p99    3.00 ms  configured RTT   1.00 ms",
			"check-reload route forwarded   20000 ops  p50   42.50 ms  p99   60.00 ms  configured RTT  40.00 ms",
			"check-reload route local       39990 ops  p50    0.90 ms  p99    3.00 ms  configured RTT   0.00 ms",
			"mixed: max sustainable rate 750/s",
		}},
		{"floor, bindings baseline and zero-latency overhead", bench.Report{Results: []bench.Result{{
			Workload: "check", Mode: "closed", Concurrency: 16, Ops: 90000, Throughput: 3000,
			Latency:          bench.Latency{P50: 71.25, P99: 80, P999: 90},
			Baseline:         &bench.Baseline{Throughput: 10000, Latency: bench.Latency{P99: 2.5}},
			Ratio:            0.3,
			BindingsBaseline: &bench.Baseline{Throughput: 1500, Latency: bench.Latency{P99: 4}},
			BindingsRatio:    2,
			Routes: map[string]bench.Route{
				"forwarded 71ms": {Ops: 60000, Latency: bench.Latency{P50: 73.5, P99: 80}, RTTms: 71, ZeroLatencyP50: ptr(1.75), OverheadMS: ptr(0.75)},
				"local 1ms":      {Ops: 30000, Latency: bench.Latency{P50: 2.25, P99: 4}, RTTms: 1},
			},
		}}}, []string{
			"  workload    mode  conc    ops  ops/s  p50 ms  p99 ms  p99.9 ms  errors  floor/s  floor p99  ratio  bindings/s  b.ratio",
			"     check  closed    16  90000   3000   71.25   80.00     90.00       0    10000       2.50   0.30        1500     2.00",
			"check route forwarded 71ms   60000 ops  p50   73.50 ms  p99   80.00 ms  configured RTT  71.00 ms  zero-latency p50  1.75 ms  overhead +0.75 ms",
			"check route local 1ms   30000 ops  p50    2.25 ms  p99    4.00 ms  configured RTT   1.00 ms",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			if err := bench.WriteTable(&b, tt.rep); err != nil {
				t.Fatal(err)
			}
			if got, want := b.String(), strings.Join(tt.want, "\n")+"\n"; got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestWriteTableError(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "table"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := bench.WriteTable(f, bench.Report{}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WriteTable into a closed file: %v, want os.ErrClosed", err)
	}
}

func ptr(v float64) *float64 { return &v }
