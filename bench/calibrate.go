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

// overshootProbe measures what one simulated link adds beyond its configured round
// trip (the latency proxies' timers wake late on a loaded machine), under the load of
// the run it accompanies: a trivial HTTP endpoint is called back to back through a
// proxy at rtt and through one at 0, alternately, and the overshoot is the first's p50
// minus rtt minus the second's. A forwarded request crosses two such links (client to
// its region, region to home), so its net overhead subtracts two overshoots.
type overshootProbe struct {
	cancel   context.CancelFunc
	done     chan struct{}
	at, zero *recorder
	rtt      time.Duration
	err      error
}

// probeInterval paces the probe: a light load next to the workload's.
const probeInterval = 25 * time.Millisecond

func startOvershootProbe(ctx context.Context, rtt time.Duration) (*overshootProbe, error) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	upstream := strings.TrimPrefix(srv.URL, "http://")
	at, err := deploy.NewLatencyLink(upstream, rtt)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("overshoot probe: %w", err)
	}
	zero, err := deploy.NewLatencyLink(upstream, 0)
	if err != nil {
		at.Close()
		srv.Close()
		return nil, fmt.Errorf("overshoot probe: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &overshootProbe{cancel: cancel, done: make(chan struct{}), at: newRecorder(), zero: newRecorder(), rtt: rtt}
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
		defer at.Close()
		defer zero.Close()
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
			}{{at.URL(), p.at}, {zero.URL(), p.zero}} {
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

// stop ends the probe and returns the overshoot of one link in milliseconds.
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
