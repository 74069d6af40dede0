package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"time"
)

// Endpoint is one regional address of the keyplane API.
type Endpoint struct {
	// Region names the region the endpoint serves from, e.g. "eu-west".
	Region string
	// URL is the endpoint's base address, scheme and host only, e.g.
	// "http://127.0.0.1:8080".
	URL string
}

// Config configures a Client. The zero value of every field but Endpoints means its
// default (see DefaultConfig).
type Config struct {
	// Endpoints lists every endpoint the client may call: at least one, several per
	// region allowed.
	Endpoints []Endpoint
	// Prefer is an optional explicit region preference order. Regions not listed come
	// after the listed ones, nearest (by measured round trip) first.
	Prefer []string
	// AttemptTimeout bounds one attempt of a call; the caller's deadline still bounds
	// the whole call. Default 2s.
	AttemptTimeout time.Duration
	// MaxAttempts bounds the attempts of one call, the first included. Default 3;
	// 1 disables retries.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the pause between attempts: a uniformly random
	// duration in [0, min(BackoffMax, BackoffBase·2^(retry-1))] ("full jitter").
	// Defaults 20ms and 1s.
	BackoffBase, BackoffMax time.Duration
	// RetryBudget is the fraction of successful calls that may be retried, in [0, 1]:
	// each success earns that many retry tokens and each retry spends one, like
	// gRPC's retry throttling. Default 0.1.
	RetryBudget float64
	// MinRetries is the size of the retry token bucket, which starts full, so a client
	// may always make this many retries in a burst. Default 10.
	MinRetries int
	// DownFor is how long an endpoint is tried last after a transport failure on it
	// (refused connection, attempt timeout). Default 2s.
	DownFor time.Duration
	// ProbeInterval is how often every endpoint's /readyz is probed. Default 5s;
	// negative disables probing (endpoints are then used in configuration order).
	ProbeInterval time.Duration
	// Transport carries requests and probes. Default: an *http.Transport with
	// HTTP/1.1, HTTP/2 over TLS and h2c enabled (net/http picks HTTP/1.1 for
	// http:// URLs while HTTP/1.1 is enabled), with dial, TLS and idle timeouts.
	Transport http.RoundTripper
	// Logger receives debug and state-change records. Default: discard.
	Logger *slog.Logger
}

// Defaults of the zero-valued Config fields.
const (
	defaultAttemptTimeout = 2 * time.Second
	defaultMaxAttempts    = 3
	defaultBackoffBase    = 20 * time.Millisecond
	defaultBackoffMax     = time.Second
	defaultRetryBudget    = 0.1
	defaultMinRetries     = 10
	defaultDownFor        = 2 * time.Second
	defaultProbeInterval  = 5 * time.Second
)

// DefaultConfig returns a Config with every default spelled out and no Endpoints.
func DefaultConfig() Config {
	return Config{
		AttemptTimeout: defaultAttemptTimeout,
		MaxAttempts:    defaultMaxAttempts,
		BackoffBase:    defaultBackoffBase,
		BackoffMax:     defaultBackoffMax,
		RetryBudget:    defaultRetryBudget,
		MinRetries:     defaultMinRetries,
		DownFor:        defaultDownFor,
		ProbeInterval:  defaultProbeInterval,
	}
}

// Validate reports the first invalid field of c, named in the error.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("client: Endpoints: at least one endpoint is required")
	}
	regions := make(map[string]bool)
	urls := make(map[string]int)
	for i, e := range c.Endpoints {
		if e.Region == "" {
			return fmt.Errorf("client: Endpoints[%d].Region: required", i)
		}
		if err := validateURL(e.URL); err != nil {
			return fmt.Errorf("client: Endpoints[%d].URL: %w", i, err)
		}
		if j, dup := urls[e.URL]; dup {
			return fmt.Errorf("client: Endpoints[%d].URL: %q repeats Endpoints[%d]", i, e.URL, j)
		}
		urls[e.URL] = i
		regions[e.Region] = true
	}
	seen := make(map[string]bool)
	for i, r := range c.Prefer {
		switch {
		case !regions[r]:
			return fmt.Errorf("client: Prefer[%d]: region %q has no endpoint", i, r)
		case seen[r]:
			return fmt.Errorf("client: Prefer[%d]: region %q is listed twice", i, r)
		}
		seen[r] = true
	}
	d := c.withDefaults()
	switch {
	case c.AttemptTimeout < 0:
		return errors.New("client: AttemptTimeout: must not be negative")
	case c.MaxAttempts < 0:
		return errors.New("client: MaxAttempts: must not be negative")
	case c.BackoffBase < 0:
		return errors.New("client: BackoffBase: must not be negative")
	case c.BackoffMax < 0:
		return errors.New("client: BackoffMax: must not be negative")
	case d.BackoffMax < d.BackoffBase:
		return fmt.Errorf("client: BackoffMax: %v is below BackoffBase %v", d.BackoffMax, d.BackoffBase)
	case math.IsNaN(c.RetryBudget) || c.RetryBudget < 0 || c.RetryBudget > 1:
		return fmt.Errorf("client: RetryBudget: %v is outside [0, 1]", c.RetryBudget)
	case c.MinRetries < 0:
		return errors.New("client: MinRetries: must not be negative")
	case c.DownFor < 0:
		return errors.New("client: DownFor: must not be negative")
	}
	return nil
}

// validateURL accepts an absolute http or https URL without path, query or user.
func validateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", raw)
	case u.Host == "":
		return fmt.Errorf("%q: host required", raw)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.User != nil:
		return fmt.Errorf("%q: scheme and host only (no path, query or user)", raw)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, d.AttemptTimeout)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, d.MaxAttempts)
	c.BackoffBase = cmp.Or(c.BackoffBase, d.BackoffBase)
	c.BackoffMax = cmp.Or(c.BackoffMax, d.BackoffMax)
	c.RetryBudget = cmp.Or(c.RetryBudget, d.RetryBudget)
	c.MinRetries = cmp.Or(c.MinRetries, d.MinRetries)
	c.DownFor = cmp.Or(c.DownFor, d.DownFor)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, d.ProbeInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
