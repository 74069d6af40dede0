package bench

import (
	"os"
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
