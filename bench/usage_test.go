package bench

import (
	"os"
	"strings"
	"testing"
)

func TestReadProc(t *testing.T) {
	t.Parallel()
	fixture := fixtureProc(t)
	tests := []struct {
		name string
		pid  int
		want proc
	}{
		// utime 1234 + stime 266 ticks of 1/100 s; 25600 resident pages.
		{"process", 4242, proc{cpu: 15, rss: float64(25600*os.Getpagesize()) / (1 << 20)}},
		{"gone", 4243, proc{}},
		{"no pid", 0, proc{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := readProc(fixture, tt.pid); got != tt.want {
				t.Errorf("readProc(%d) = %+v, want %+v", tt.pid, got, tt.want)
			}
		})
	}
	if got := readProc(nil, 4242); got != (proc{}) {
		t.Errorf("without /proc: %+v, want zero", got)
	}
	if fs := procFS(); fs != nil {
		if got := readProc(fs, os.Getpid()); got.rss <= 0 {
			t.Errorf("this process: %+v, want a resident size", got)
		}
	}
}

// TestUsageKeepsRSSPerMinute: every 60th sample adds each node's RSS to its series,
// after the starting value, and the report lists the series.
func TestUsageKeepsRSSPerMinute(t *testing.T) {
	t.Parallel()
	u := &usage{names: []string{"n"}, pids: []func() int{func() int { return 0 }}, start: []proc{{}}, peak: []float64{0}, minutes: [][]float64{{42}}}
	for range 150 {
		u.tick()
	}
	if got := u.minutes[0]; len(got) != 3 || got[0] != 42 {
		t.Fatalf("after 150 samples: %v, want the start and two minutes", got)
	}
	var b strings.Builder
	writeResult(&b, Result{Workload: "mixed", Nodes: []NodeUsage{{Node: "n1", RSSPerMinute: []float64{50, 51.5, 52}}}})
	if !strings.Contains(b.String(), "RSS of n1 at the start and every minute (MiB): 50.0, 51.5, 52.0") {
		t.Fatalf("report lacks the series:\n%s", b.String())
	}
}
