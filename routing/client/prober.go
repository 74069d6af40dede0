package client

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// probeTimeout bounds one readiness probe.
const probeTimeout = time.Second

// probeLoop probes every endpoint at once, then every interval after the previous
// round ended, until ctx is done. The first round starts at once.
func (c *Client) probeLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for _, ep := range c.eps {
			wg.Go(func() { c.probe(ctx, ep) })
		}
		wg.Wait()
		t.Reset(interval)
	}
}

// probe sends GET /readyz to ep and records the answer: ready on 200, not ready on
// any other status or error; the round trip of any answer feeds the RTT average.
func (c *Client) probe(ctx context.Context, ep *endpoint) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, ep.scheme+"://"+ep.host+"/readyz", nil)
	if err != nil {
		return // unreachable: the URL was validated
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		_ = resp.Body.Close()
	}
	rtt := time.Since(start)
	if ctx.Err() != nil {
		return // closing: the failure is ours, not the endpoint's
	}
	ready := err == nil && resp.StatusCode == http.StatusOK

	c.mu.Lock()
	wasProbed, wasReady := ep.probed, ep.ready
	if err == nil {
		ep.observe(rtt, ready)
	} else {
		ep.probed, ep.ready = true, false
	}
	c.mu.Unlock()

	if wasReady != ready && (wasProbed || !ready) { // log changes, and a first "not ready"
		attrs := []slog.Attr{slog.String("region", ep.region), slog.String("url", ep.url), slog.Bool("ready", ready)}
		if err != nil {
			attrs = append(attrs, slog.Any("error", err))
		} else if !ready {
			attrs = append(attrs, slog.Int("status", resp.StatusCode))
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "keyplane endpoint readiness changed", attrs...)
	}
}
