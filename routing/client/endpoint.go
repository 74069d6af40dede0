package client

import (
	"cmp"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"time"
)

// rttWeight is the weight of a new probe sample in the RTT moving average.
const rttWeight = 0.3

// EndpointStatus is what a Client knows about one endpoint.
type EndpointStatus struct {
	Region, URL string
	// RTT is the moving average of probe round trips; zero until a probe got an
	// answer.
	RTT time.Duration
	// Ready reports that the last probe answered 200. It is false before the first
	// probe, when the endpoint is nonetheless used.
	Ready bool
	// DownUntil is when the cooldown after a transport failure ends; zero or past
	// when the endpoint is not down.
	DownUntil time.Time
}

// endpoint is one configured endpoint and what the client learned about it. The
// fields after host are guarded by Client.mu.
type endpoint struct {
	index        int // in Config.Endpoints
	region, url  string
	scheme, host string

	rtt       time.Duration
	probed    bool
	ready     bool
	downUntil time.Time
}

func newEndpoint(index int, e Endpoint) *endpoint {
	u, _ := url.Parse(e.URL) // checked by Validate
	return &endpoint{index: index, region: e.Region, url: e.URL, scheme: u.Scheme, host: u.Host}
}

// usable reports whether the endpoint may be tried before others: not known to be
// unready and not cooling down. Callers hold Client.mu.
func (e *endpoint) usable(now time.Time) bool {
	return (!e.probed || e.ready) && !now.Before(e.downUntil)
}

// observe folds a probe answer into the endpoint. Callers hold Client.mu.
func (e *endpoint) observe(rtt time.Duration, ready bool) {
	rtt = max(rtt, time.Nanosecond) // zero means "never measured"
	if e.rtt == 0 {
		e.rtt = rtt
	} else {
		e.rtt += time.Duration(rttWeight * float64(rtt-e.rtt))
	}
	e.probed, e.ready = true, ready
}

func (e *endpoint) String() string { return e.region + " " + e.url }

func (e *endpoint) status() EndpointStatus {
	return EndpointStatus{Region: e.region, URL: e.url, RTT: e.rtt, Ready: e.ready, DownUntil: e.downUntil}
}

// order returns eps in preference order at now: usable endpoints before the others;
// within each group, regions listed in prefer (by their rank there), then the other
// regions nearest first, and within a region its endpoints nearest first. Ties go to
// configuration order, and unmeasured round trips count as infinite, so before any
// probe answer the order is prefer, then configuration order (regions in the order
// they first appear). Callers hold Client.mu.
func order(eps []*endpoint, prefer map[string]int, now time.Time) []*endpoint {
	const unmeasured = time.Duration(math.MaxInt64)
	rttOf := func(e *endpoint) time.Duration {
		if e.rtt == 0 {
			return unmeasured
		}
		return e.rtt
	}
	// A region is as near as its nearest usable endpoint, or, when none is usable,
	// its nearest endpoint.
	usableRTT := make(map[string]time.Duration)
	anyRTT := make(map[string]time.Duration)
	first := make(map[string]int)
	for _, e := range eps {
		if _, ok := first[e.region]; !ok {
			first[e.region] = e.index
		}
		rtt := rttOf(e)
		if prev, ok := anyRTT[e.region]; !ok || rtt < prev {
			anyRTT[e.region] = rtt
		}
		if e.usable(now) {
			if prev, ok := usableRTT[e.region]; !ok || rtt < prev {
				usableRTT[e.region] = rtt
			}
		}
	}
	regionRTT := func(region string) time.Duration {
		if rtt, ok := usableRTT[region]; ok {
			return rtt
		}
		return anyRTT[region]
	}
	rank := func(region string) int {
		if r, ok := prefer[region]; ok {
			return r
		}
		return len(prefer)
	}
	out := slices.Clone(eps)
	slices.SortStableFunc(out, func(a, b *endpoint) int {
		ua, ub := a.usable(now), b.usable(now)
		if ua != ub {
			if ua {
				return -1
			}
			return 1
		}
		return cmp.Or(
			cmp.Compare(rank(a.region), rank(b.region)),
			cmp.Compare(regionRTT(a.region), regionRTT(b.region)),
			cmp.Compare(first[a.region], first[b.region]),
			cmp.Compare(rttOf(a), rttOf(b)),
			cmp.Compare(a.index, b.index),
		)
	})
	return out
}

// spread reorders, in place, the leading run of usable endpoints of the first
// region whose round trips are within twice the best + 5 ms: nodes of one region sit
// in one place, so their RTT differences are noise (a busy client's probe answered a
// few milliseconds late is not a farther node; at 25% + 2 ms, such a sample kept every
// call on one node), and spreading calls over them spreads the load. Callers hold
// Client.mu.
func spread(ordered []*endpoint, now time.Time) {
	if len(ordered) < 2 || !ordered[0].usable(now) {
		return
	}
	best := ordered[0].rtt
	n := 1
	for n < len(ordered) {
		e := ordered[n]
		if e.region != ordered[0].region || !e.usable(now) || e.rtt > 2*best+5*time.Millisecond {
			break
		}
		n++
	}
	rand.Shuffle(n, func(i, j int) { ordered[i], ordered[j] = ordered[j], ordered[i] })
}
