// Package canary is the revocation canary (`keyplane canary`): it watches keyplane's
// promise that a revoked token is inactive everywhere the moment revocation returns,
// in production, from outside, through the standard OAuth endpoints only.
//
// Each round, for every ordered pair of regions (A, B), it gets a token from A's token
// endpoint (client credentials), checks it is active at every region (introspection,
// RFC 7662), revokes it at B (RFC 7009), and as soon as the revocation has returned
// introspects it at every region at once. An answer "active" after that is a stale
// read: keyplane_canary_revocation_stale_total{revoke_region, validate_region} counts
// them, and it must stay 0. The time from the revocation's start to each region's
// "inactive" answer is keyplane_canary_revocation_visible_seconds per pair.
package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Region is one region's API URL as applications reach it.
type Region struct {
	Name string
	URL  string // e.g. https://us-east.iam.example
}

// Config configures a canary.
type Config struct {
	Regions []Region
	Tenant  string
	// The canary's OAuth client (any client of the tenant: a client may introspect and
	// revoke its own tokens). Give it no permission: its tokens are never used.
	ClientID, ClientSecret string
	// Timeout bounds each call; 0 means 10 s.
	Timeout time.Duration
	// HTTP is the client for every call; nil means one with no redirects followed.
	HTTP     *http.Client
	Registry prometheus.Registerer // where the canary's metrics go; nil: none
	Log      *slog.Logger          // nil: no logging
}

// Canary runs rounds.
type Canary struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	calls   *prometheus.HistogramVec
	visible *prometheus.HistogramVec
	stale   *prometheus.CounterVec
	errs    *prometheus.CounterVec
	rounds  *prometheus.CounterVec
	last    prometheus.Gauge
}

// New validates cfg and registers the canary's metrics.
func New(cfg Config) (*Canary, error) {
	if len(cfg.Regions) == 0 {
		return nil, errors.New("canary: at least one region is required")
	}
	seen := map[string]bool{}
	for _, r := range cfg.Regions {
		u, err := url.Parse(r.URL)
		if r.Name == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("canary: region %q: want NAME=URL with an http(s) URL, got %q", r.Name, r.URL)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("canary: region %q given twice", r.Name)
		}
		seen[r.Name] = true
	}
	switch {
	case cfg.Tenant == "":
		return nil, errors.New("canary: the tenant is required")
	case cfg.ClientID == "" || cfg.ClientSecret == "":
		return nil, errors.New("canary: the client id and secret are required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Canary{cfg: cfg, client: hc, log: log,
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "keyplane", Subsystem: "canary", Name: "call_seconds",
			Help:    "Latency of the canary's calls, by operation (issue, revoke, introspect) and the region called.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"op", "region"}),
		visible: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "keyplane", Subsystem: "canary", Name: "revocation_visible_seconds",
			Help:    "Time from the start of a revocation at revoke_region to validate_region answering the token is inactive.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"revoke_region", "validate_region"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "keyplane", Subsystem: "canary", Name: "revocation_stale_total",
			Help: "Tokens a region still called active after their revocation had returned: a broken revocation promise. Must stay 0."},
			[]string{"revoke_region", "validate_region"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "keyplane", Subsystem: "canary", Name: "errors_total",
			Help: "Canary calls that failed (not an answer about the token), by operation and region."}, []string{"op", "region"}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "keyplane", Subsystem: "canary", Name: "rounds_total",
			Help: "Canary rounds by result: ok, stale (a stale read was seen) or error (a call failed)."}, []string{"result"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "keyplane", Subsystem: "canary", Name: "last_ok_timestamp_seconds",
			Help: "When the last round without a stale read or an error ended (Unix time): alert when it grows old."}),
	}
	if cfg.Registry != nil {
		for _, m := range []prometheus.Collector{c.calls, c.visible, c.stale, c.errs, c.rounds, c.last} {
			if err := cfg.Registry.Register(m); err != nil {
				return nil, err
			}
		}
	}
	// Pre-create the stale series so that rate() and absence work from the start.
	for _, a := range cfg.Regions {
		for _, b := range cfg.Regions {
			c.stale.WithLabelValues(a.Name, b.Name)
		}
	}
	return c, nil
}

// Result is what one round saw.
type Result struct {
	Pairs  int      // (issue, revoke) region pairs exercised
	Stale  []string // "revoked at B, active at R" findings
	Errors []error
}

// Run runs a round every interval until ctx ends or, when rounds > 0, that many
// rounds are done; it returns the results of the rounds.
func (c *Canary) Run(ctx context.Context, interval time.Duration, rounds int) []Result {
	var out []Result
	for i := 0; rounds <= 0 || i < rounds; i++ {
		if i > 0 {
			t := time.NewTimer(interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return out
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return out
		}
		r := c.Round(ctx)
		if rounds > 0 { // running forever keeps nothing
			out = append(out, r)
		}
	}
	return out
}

// Round runs every ordered pair of regions once (issue at A, revoke at B, A may be B).
func (c *Canary) Round(ctx context.Context) Result {
	var res Result
	for _, a := range c.cfg.Regions {
		for _, b := range c.cfg.Regions {
			res.Pairs++
			stale, err := c.pair(ctx, a, b)
			res.Stale = append(res.Stale, stale...)
			if err != nil {
				res.Errors = append(res.Errors, err)
			}
		}
	}
	result := "ok"
	switch {
	case len(res.Stale) > 0:
		result = "stale"
	case len(res.Errors) > 0:
		result = "error"
	default:
		c.last.SetToCurrentTime()
	}
	c.rounds.WithLabelValues(result).Inc()
	return res
}

func (c *Canary) endpoint(r Region, path string) string {
	return strings.TrimSuffix(r.URL, "/") + "/t/" + url.PathEscape(c.cfg.Tenant) + "/oauth2/" + path
}

// pair issues a token at a, checks it everywhere, revokes it at b and checks it
// everywhere again; it returns the stale reads it saw.
func (c *Canary) pair(ctx context.Context, a, b Region) ([]string, error) {
	cc := clientcredentials.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret,
		TokenURL: c.endpoint(a, "token"), AuthStyle: oauth2.AuthStyleInHeader}
	cctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, c.client), c.cfg.Timeout)
	start := time.Now()
	tok, err := cc.Token(cctx)
	cancel()
	c.calls.WithLabelValues("issue", a.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		c.errs.WithLabelValues("issue", a.Name).Inc()
		return nil, fmt.Errorf("issue at %s: %w", a.Name, err)
	}
	// Before: the token must be active everywhere (else the canary proves nothing).
	for _, r := range c.everywhere(ctx, tok.AccessToken, time.Time{}, "") {
		if r.err != nil {
			return nil, r.err
		}
		if !r.active {
			c.errs.WithLabelValues("introspect_fresh", r.region).Inc()
			return nil, fmt.Errorf("a token issued at %s is not active at %s", a.Name, r.region)
		}
	}
	revoked := time.Now()
	if err := c.post(ctx, "revoke", b, url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}, nil); err != nil {
		return nil, err
	}
	var stale []string
	var firstErr error
	for _, r := range c.everywhere(ctx, tok.AccessToken, revoked, b.Name) {
		switch {
		case r.err != nil:
			firstErr = cmpErr(firstErr, r.err)
		case r.active:
			c.stale.WithLabelValues(b.Name, r.region).Inc()
			msg := fmt.Sprintf("issued at %s, revoked at %s, still active at %s", a.Name, b.Name, r.region)
			c.log.Error("canary: stale revocation", "issue_region", a.Name, "revoke_region", b.Name, "validate_region", r.region)
			stale = append(stale, msg)
		}
	}
	return stale, firstErr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

type answer struct {
	region string
	active bool
	err    error
}

// everywhere introspects raw at every region at once. With revokedAt set, each
// inactive answer's time since revokedAt is observed for the pair (revokeRegion, it).
func (c *Canary) everywhere(ctx context.Context, raw string, revokedAt time.Time, revokeRegion string) []answer {
	out := make([]answer, len(c.cfg.Regions))
	var wg sync.WaitGroup
	for i, r := range c.cfg.Regions {
		wg.Go(func() {
			var body struct {
				Active *bool `json:"active"`
			}
			err := c.post(ctx, "introspect", r, url.Values{"token": {raw}}, &body)
			if err == nil && body.Active == nil {
				c.errs.WithLabelValues("introspect", r.Name).Inc()
				err = fmt.Errorf("introspect at %s: the answer has no \"active\"", r.Name)
			}
			out[i] = answer{region: r.Name, err: err}
			if err != nil {
				return
			}
			out[i].active = *body.Active
			if !revokedAt.IsZero() && !*body.Active {
				c.visible.WithLabelValues(revokeRegion, r.Name).Observe(time.Since(revokedAt).Seconds())
			}
		})
	}
	wg.Wait()
	return out
}

// post sends an OAuth form request with the canary's client credentials and decodes
// a 200 answer's JSON into into (when not nil).
func (c *Canary) post(ctx context.Context, op string, r Region, form url.Values, into any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(r, op), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	start := time.Now()
	resp, err := c.client.Do(req)
	c.calls.WithLabelValues(op, r.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		c.errs.WithLabelValues(op, r.Name).Inc()
		return fmt.Errorf("%s at %s: %w", op, r.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err == nil && into != nil {
		err = json.Unmarshal(b, into)
	}
	if err != nil {
		c.errs.WithLabelValues(op, r.Name).Inc()
		return fmt.Errorf("%s at %s: %w", op, r.Name, err)
	}
	return nil
}

// Regions parses NAME=URL pairs (as --region flags give them), keeping their order.
func Regions(pairs []string) ([]Region, error) {
	var out []Region
	for _, p := range pairs {
		name, u, ok := strings.Cut(p, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("region %q: want NAME=URL", p)
		}
		out = append(out, Region{Name: name, URL: u})
	}
	if len(out) == 0 {
		return nil, errors.New("at least one region is required")
	}
	if slices.ContainsFunc(out, func(r Region) bool { return strings.ContainsAny(r.Name, " \t\"") }) {
		return nil, errors.New("region names have no spaces or quotes")
	}
	return out, nil
}
