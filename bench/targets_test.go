package bench

import (
	"strings"
	"testing"
)

func TestTargetsAgainstTheFloor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		workload  string
		ratio     float64
		p99Diff   float64
		multi     bool
		wantRatio string // "" when no floor target applies
		wantGot   []string
		wantMet   []bool // throughput, p99
	}{
		{name: "validate met", workload: "validate", ratio: 0.5, p99Diff: 1, wantRatio: "≥ 0.50",
			wantGot: []string{"0.50", "+1.00 ms"}, wantMet: []bool{true, true}},
		{name: "validate missed says by how much", workload: "validate", ratio: 0.16, p99Diff: 3.1, wantRatio: "≥ 0.50",
			wantGot: []string{"0.16 (short by 0.34)", "+3.10 ms (over by 2.10 ms)"}, wantMet: []bool{false, false}},
		{name: "introspect wants 0.4", workload: "introspect", ratio: 0.45, p99Diff: 0.2, wantRatio: "≥ 0.40",
			wantGot: []string{"0.45", "+0.20 ms"}, wantMet: []bool{true, true}},
		{name: "check-token wants 0.5", workload: "check-token", ratio: 0.45, p99Diff: -0.5, wantRatio: "≥ 0.50",
			wantGot: []string{"0.45 (short by 0.05)", "-0.50 ms"}, wantMet: []bool{false, true}},
		{name: "check wants 0.5", workload: "check", ratio: 2.5, p99Diff: 1.01, wantRatio: "≥ 0.50",
			wantGot: []string{"2.50", "+1.01 ms (over by 0.01 ms)"}, wantMet: []bool{true, false}},
		{name: "check-reload has none", workload: "check-reload", ratio: 0.1, p99Diff: 5},
		{name: "none in multi-region mode", workload: "validate", ratio: 0.1, p99Diff: 5, multi: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Result{Workload: tt.workload, Baseline: &Baseline{}, Ratio: tt.ratio, P99DiffMS: tt.p99Diff}
			got := targets(r, Config{MultiRegion: tt.multi}, 1)
			if tt.wantRatio == "" {
				if len(got) != 0 {
					t.Fatalf("got targets %+v, want none", got)
				}
				return
			}
			if len(got) != 2 {
				t.Fatalf("got %d targets %+v, want 2", len(got), got)
			}
			if got[0].Want != tt.wantRatio || got[1].Want != "≤ +1.00 ms" {
				t.Errorf("want: got %q, %q; want %q, ≤ +1.00 ms", got[0].Want, got[1].Want, tt.wantRatio)
			}
			for i := range got {
				if got[i].Got != tt.wantGot[i] || got[i].Met != tt.wantMet[i] {
					t.Errorf("%s: got %q met %v; want %q met %v", got[i].Name, got[i].Got, got[i].Met, tt.wantGot[i], tt.wantMet[i])
				}
			}
		})
	}
}

func TestForwardedOverheadAgainstZeroLatency(t *testing.T) {
	t.Parallel()
	res := Result{Workload: "validate", Routes: map[string]Route{
		"local 1ms":       {Ops: 100, Latency: Latency{P50: 1.5}, RTTms: 1},
		"forwarded 71ms":  {Ops: 100, Latency: Latency{P50: 73.5}, RTTms: 71},   // 73.5 − 71 − 1.75 = 0.75
		"forwarded 201ms": {Ops: 100, Latency: Latency{P50: 204.5}, RTTms: 201}, // 204.5 − 201 − 1.75 = 1.75
	}, ZeroLatency: &ZeroLatency{Routes: map[string]Route{
		"local":     {Ops: 50, Latency: Latency{P50: 0.5}},
		"forwarded": {Ops: 50, Latency: Latency{P50: 1.75}},
	}}}
	compareZeroLatency(&res)
	if rt := res.Routes["local 1ms"]; rt.ZeroLatencyP50 != nil || rt.OverheadMS != nil {
		t.Errorf("local route: got zero-latency p50 %v, overhead %v; want neither", rt.ZeroLatencyP50, rt.OverheadMS)
	}
	for k, want := range map[string]float64{"forwarded 71ms": 0.75, "forwarded 201ms": 1.75} {
		rt := res.Routes[k]
		if rt.ZeroLatencyP50 == nil || rt.OverheadMS == nil {
			t.Fatalf("%s: no zero-latency comparison", k)
		}
		if *rt.ZeroLatencyP50 != 1.75 || *rt.OverheadMS != want {
			t.Errorf("%s: got zero-latency p50 %v, overhead %v; want 1.75, %v", k, *rt.ZeroLatencyP50, *rt.OverheadMS, want)
		}
	}
	got := targets(res, Config{MultiRegion: true}, 3)
	if len(got) != 2 {
		t.Fatalf("got %d targets %+v, want one per forwarded route", len(got), got)
	}
	// Sorted by route: "forwarded 201ms" < "forwarded 71ms".
	if got[0].Met || !strings.Contains(got[0].Got, "over by 0.75 ms") || got[0].Want != "≤ 1.00 ms" {
		t.Errorf("201 ms route: got %+v, want missed, over by 0.75 ms", got[0])
	}
	if !got[1].Met || got[1].Got != "0.75 ms (p50 73.50 − RTT 71.00 − zero-latency p50 1.75)" {
		t.Errorf("71 ms route: got %+v, want met with its figures", got[1])
	}
}

// TestForwardedOverheadNetOfTheProxies: with the proxies' overshoot measured, a
// forward's net overhead takes it off, and the target judges that.
func TestForwardedOverheadNetOfTheProxies(t *testing.T) {
	t.Parallel()
	over := 1.0
	res := Result{Workload: "check", ProxyOvershootMS: &over, Routes: map[string]Route{
		"forwarded 201ms": {Ops: 100, Latency: Latency{P50: 205}, RTTms: 201}, // 205 − 201 − 1.75 = 2.25; − 1 = 1.25
		"forwarded 71ms":  {Ops: 100, Latency: Latency{P50: 74}, RTTms: 71},   // 74 − 71 − 1.75 = 1.25; − 1 = 0.25
	}, ZeroLatency: &ZeroLatency{Routes: map[string]Route{"forwarded": {Ops: 50, Latency: Latency{P50: 1.75}}}}}
	compareZeroLatency(&res)
	for k, want := range map[string]float64{"forwarded 201ms": 1.25, "forwarded 71ms": 0.25} {
		if rt := res.Routes[k]; rt.NetOverheadMS == nil || *rt.NetOverheadMS != want {
			t.Errorf("%s: net overhead %v, want %v", k, rt.NetOverheadMS, want)
		}
	}
	got := targets(res, Config{MultiRegion: true}, 3)
	if len(got) != 2 || got[0].Met || !strings.Contains(got[0].Got, "the proxies' overshoot 1.00") || !strings.Contains(got[0].Got, "over by 0.25 ms") ||
		!got[1].Met || !strings.HasPrefix(got[1].Got, "0.25 ms") {
		t.Errorf("targets %+v: want 201 ms missed by 0.25 ms net of 1.00, 71 ms met at 0.25 ms", got)
	}
}

func TestForwardedOverheadNeedsAZeroLatencyPass(t *testing.T) {
	t.Parallel()
	res := Result{Workload: "revoke", Routes: map[string]Route{"forwarded 71ms": {Ops: 100, Latency: Latency{P50: 80}, RTTms: 71}}}
	compareZeroLatency(&res) // no pass: nothing to compare with
	res.ZeroLatency = &ZeroLatency{Routes: map[string]Route{"local": {Ops: 5}}}
	compareZeroLatency(&res) // a pass without forwards: still nothing
	if rt := res.Routes["forwarded 71ms"]; rt.OverheadMS != nil {
		t.Errorf("got overhead %v without a zero-latency forwarded p50", *rt.OverheadMS)
	}
	if got := targets(res, Config{MultiRegion: true}, 3); len(got) != 0 {
		t.Errorf("got targets %+v, want none without a zero-latency forwarded p50", got)
	}
}
