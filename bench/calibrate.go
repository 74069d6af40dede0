package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/keyplane/keyplane/deploy"
)

// overshootProbe measures what the simulated links of a forward add beyond their
// configured round trips (the latency proxies' timers wake late on a loaded machine),
// under the load of the run it accompanies. A forward crosses two links, the client's
// to its region and the region's to the home region: the probe chains two proxies at
// those round trips in front of a trivial HTTP endpoint, and two at 0 in front of the
// same endpoint, calls each chain in turn, and the overshoot is the first's p50 minus
// both round trips minus the second's.
type overshootProbe struct {
	cancel   context.CancelFunc
	done     chan struct{}
	at, zero *recorder
	rtt      time.Duration
	err      error
}

// probeInterval paces the probe: a light load next to the workload's.
const probeInterval = 25 * time.Millisecond

// chain starts proxies at rtts, each in front of the next, the last in front of
// upstream, and returns the first one's URL and a function stopping them all.
func chain(upstream string, rtts ...time.Duration) (string, func(), error) {
	var links []*deploy.LatencyLink
	stop := func() {
		for _, l := range links {
			l.Close()
		}
	}
	for i := len(rtts) - 1; i >= 0; i-- {
		l, err := deploy.NewLatencyLink(upstream, rtts[i])
		if err != nil {
			stop()
			return "", nil, fmt.Errorf("overshoot probe: %w", err)
		}
		links = append(links, l)
		upstream = strings.TrimPrefix(l.URL(), "http://")
	}
	return "http://" + upstream, stop, nil
}

func startOvershootProbe(ctx context.Context, clientRTT, forwardRTT time.Duration) (*overshootProbe, error) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	upstream := strings.TrimPrefix(srv.URL, "http://")
	atURL, stopAt, err := chain(upstream, clientRTT, forwardRTT)
	if err != nil {
		srv.Close()
		return nil, err
	}
	zeroURL, stopZero, err := chain(upstream, 0, 0)
	if err != nil {
		stopAt()
		srv.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &overshootProbe{cancel: cancel, done: make(chan struct{}), at: newRecorder(), zero: newRecorder(), rtt: clientRTT + forwardRTT}
	hc := &http.Client{Transport: newTransport(), Timeout: 10 * time.Second}
	get := func(u string) (time.Duration, error) {
		start := time.Now()
		resp, err := hc.Get(u)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return time.Since(start), nil
	}
	go func() {
		defer close(p.done)
		defer srv.Close()
		defer stopAt()
		defer stopZero()
		tick := time.NewTicker(probeInterval)
		defer tick.Stop()
		for n := 0; n < 100_000; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, l := range []struct {
				url string
				rec *recorder
			}{{atURL, p.at}, {zeroURL, p.zero}} {
				d, err := get(l.url)
				if err != nil {
					if ctx.Err() == nil && p.err == nil {
						p.err = err
					}
					continue
				}
				l.rec.record(d, "", 0, nil)
			}
		}
	}()
	return p, nil
}

// stop ends the probe and returns the overshoot of the two links in milliseconds.
func (p *overshootProbe) stop() (float64, error) {
	p.cancel()
	<-p.done
	if p.err != nil {
		return 0, fmt.Errorf("overshoot probe: %w", p.err)
	}
	var at, zero Result
	p.at.fill(&at, time.Second)
	p.zero.fill(&zero, time.Second)
	if at.Ops < 10 || zero.Ops < 10 {
		return 0, fmt.Errorf("overshoot probe: only %d and %d probes", at.Ops, zero.Ops)
	}
	return at.Latency.P50 - float64(p.rtt.Microseconds())/1000 - zero.Latency.P50, nil
}
