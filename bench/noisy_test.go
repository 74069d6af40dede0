package bench

import (
	"strings"
	"testing"
)

func TestNoisyNeighbourTarget(t *testing.T) {
	t.Parallel()
	pass := func(p99 float64) NoisyPass { return NoisyPass{Quiet: NoisyCalls{Latency: Latency{P99: p99}}} }
	tests := []struct {
		name    string
		alone   float64
		with    float64
		rounds  []float64
		wantMet bool
		wantGot string
	}{
		{name: "within 20 %", alone: 2, with: 2.4, rounds: []float64{1.3, 1.2, 1.1}, wantMet: true,
			wantGot: "1.20 (2.40 ms over 2.00 ms; median of the rounds' ratios 1.20)"},
		{name: "over says by how much", alone: 2, with: 3, rounds: []float64{1.5, 1.4, 1.6, 1.5}, wantMet: false,
			wantGot: "1.50 (3.00 ms over 2.00 ms; median of the rounds' ratios 1.50), over by 0.30"},
		{name: "the whole passes decide, not the rounds", alone: 2, with: 20, rounds: []float64{10, 1.0, 1.1}, wantMet: false,
			wantGot: "10.00 (20.00 ms over 2.00 ms; median of the rounds' ratios 1.10), over by 8.80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nn := &NoisyNeighbour{Alone: pass(tt.alone), WithNoisy: pass(tt.with), P99Ratio: tt.with / tt.alone,
				RoundRatios: tt.rounds, MedianRoundRatio: median(tt.rounds)}
			got := targets(Result{Workload: "noisy-neighbour", NoisyNeighbour: nn}, Config{}, 1)
			if len(got) != 1 {
				t.Fatalf("got %d targets, want 1: %+v", len(got), got)
			}
			if got[0].Met != tt.wantMet || !strings.HasPrefix(got[0].Got, tt.wantGot) || got[0].Want != "≤ 1.20" {
				t.Fatalf("got %+v, want met %v, got %q, want ≤ 1.20", got[0], tt.wantMet, tt.wantGot)
			}
		})
	}
	if got := targets(Result{Workload: "validate"}, Config{}, 1); len(got) != 0 {
		t.Fatalf("a result without the workload's figures got targets %+v", got)
	}
}

func TestNoisyNeighbourReport(t *testing.T) {
	t.Parallel()
	nn := &NoisyNeighbour{QuietTenants: 3, QuietRate: 50, NoisyRate: 500, Limit: 100,
		Alone:     NoisyPass{Quiet: NoisyCalls{Ops: 1500, Latency: Latency{P99: 2}}},
		WithNoisy: NoisyPass{Quiet: NoisyCalls{Ops: 1500, Latency: Latency{P99: 2.2}}, Noisy: &NoisyCalls{Ops: 5000, Throughput: 100, Errors: map[string]int64{"resource_exhausted": 4000}}},
		P99Ratio:  1.1, RoundRatios: []float64{1.0, 1.2}, MedianRoundRatio: 1.1}
	var b strings.Builder
	writeNoisy(&b, nn)
	for _, want := range []string{"3 quiet tenants at 50 validations/s each", "| with the noisy tenant (limited) | 1500 |", "| 4000 |", "alone: 1.10 over the whole passes; by round (interleaved) 1.00, 1.20, median 1.10"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
