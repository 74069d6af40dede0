package client

import (
	"testing"
	"time"
)

// spread takes turns among a region's endpoints whose round trips differ by noise
// (up to twice the best + 5 ms), and never puts a farther one, or another region's,
// first.
func TestSpread(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ep := func(index int, region string, rtt time.Duration) *endpoint {
		e := newEndpoint(index, Endpoint{Region: region, URL: "http://node.test"})
		e.observe(rtt, true)
		return e
	}
	firsts := map[int]int{}
	for range 400 {
		ordered := []*endpoint{
			ep(0, "eu", 1*time.Millisecond),
			ep(1, "eu", 6*time.Millisecond), // a busy probe: noise
			ep(2, "eu", 8*time.Millisecond), // beyond 2 × 1 ms + 5 ms
			ep(3, "us", 1*time.Millisecond), // another region
		}
		spread(ordered, now)
		firsts[ordered[0].index]++
		if ordered[2].index != 2 || ordered[3].index != 3 {
			t.Fatalf("spread moved an endpoint outside the near run: order %d %d %d %d",
				ordered[0].index, ordered[1].index, ordered[2].index, ordered[3].index)
		}
	}
	if firsts[0] == 0 || firsts[1] == 0 {
		t.Errorf("first endpoint over 400 spreads: %v, want endpoints 0 and 1 taking turns", firsts)
	}
}
