package client

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// BaseURL is the base URL to give generated client constructors: the Client's HTTP
// client replaces its scheme and host by those of the endpoint chosen for each
// attempt.
const BaseURL = "http://keyplane.invalid"

// Client calls the nearest healthy keyplane region and fails over to the next one.
// It owns a background prober, stopped by Close. A Client is safe for concurrent use
// by multiple goroutines; share one per process.
type Client struct {
	cfg    Config // with defaults
	eps    []*endpoint
	prefer map[string]int // region → rank in Config.Prefer
	http   *http.Client
	owned  *http.Transport // the default transport, nil when Config.Transport was given
	log    *slog.Logger
	budget *budget

	mu sync.Mutex // guards the mutable fields of eps

	// serve maps a residency-strict tenant to the regions that may serve it, as its
	// answers said (ServeRegionsHeader): the client sends its calls only there.
	serve sync.Map // tenant → []string

	stop      context.CancelFunc
	done      chan struct{} // closed when the prober has returned
	closeOnce sync.Once
}

// New validates cfg and returns a Client. It does not block: the first probe round
// runs in the background, and until it answers, endpoints are used in Prefer, then
// configuration order.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg:    cfg,
		prefer: make(map[string]int, len(cfg.Prefer)),
		log:    cfg.Logger,
		budget: newBudget(cfg.MinRetries, cfg.RetryBudget),
		done:   make(chan struct{}),
	}
	for i, e := range cfg.Endpoints {
		c.eps = append(c.eps, newEndpoint(i, e))
	}
	for i, r := range cfg.Prefer {
		c.prefer[r] = i
	}
	transport := cfg.Transport
	if transport == nil {
		c.owned = defaultTransport()
		transport = c.owned
	}
	c.http = &http.Client{
		Transport: transport,
		// A Connect call is answered, never redirected; a redirect would leave the
		// endpoint chosen for the attempt.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	if cfg.ProbeInterval > 0 {
		go func() {
			defer close(c.done)
			c.probeLoop(ctx, cfg.ProbeInterval)
		}()
	} else {
		close(c.done)
	}
	return c, nil
}

// Close stops the prober and waits for it, then closes idle connections of the
// default transport. Calls made afterwards still work, on the last known endpoint
// states. Close is idempotent.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.stop()
		<-c.done
		if c.owned != nil {
			c.owned.CloseIdleConnections()
		}
	})
}

// HTTPClient returns the HTTP client to give generated client constructors, with
// BaseURL. It sends each request to the endpoint chosen for the current attempt,
// keeping path and query.
func (c *Client) HTTPClient() connect.HTTPClient {
	return httpClient{c}
}

// Options returns the client options that make calls fail over: pass them to
// generated client constructors. Interceptors given after them run once per attempt.
func (c *Client) Options() []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(&interceptor{c})}
}

// Endpoints returns the state of every endpoint, most preferred first.
func (c *Client) Endpoints() []EndpointStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []EndpointStatus
	for _, e := range order(c.eps, c.prefer, time.Now()) {
		out = append(out, e.status())
	}
	return out
}

// best returns the most preferred endpoint.
func (c *Client) best() *endpoint {
	return c.next(nil, nil)
}

// next returns the most preferred endpoint not yet tried, or the most preferred one
// when all were; equally near endpoints of the nearest region take turns. tried is
// indexed by endpoint index; nil means none. With regions (a residency-strict
// tenant's), only endpoints of those regions are returned, if there are any.
func (c *Client) next(tried []bool, regions []string) *endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	eps := order(c.eps, c.prefer, now)
	spread(eps, now)
	if regions != nil {
		var inside []*endpoint
		for _, e := range eps {
			if slices.Contains(regions, e.region) {
				inside = append(inside, e)
			}
		}
		if len(inside) > 0 {
			eps = inside
		}
	}
	for _, e := range eps {
		if tried == nil || !tried[e.index] {
			return e
		}
	}
	return eps[0]
}

// serveRegions returns the regions that may serve tenant, nil when any may (or it
// is not known yet).
func (c *Client) serveRegions(tenant string) []string {
	if tenant == "" {
		return nil
	}
	v, ok := c.serve.Load(tenant)
	if !ok {
		return nil
	}
	return v.([]string)
}

// learnServeRegions records what an answer about tenant said of its residency.
func (c *Client) learnServeRegions(tenant string, h http.Header) {
	if tenant == "" || h == nil {
		return
	}
	v := h.Get(ServeRegionsHeader)
	if v == "" {
		c.serve.Delete(tenant)
		return
	}
	c.serve.Store(tenant, strings.Split(v, ","))
}

// markDown makes ep be tried last for Config.DownFor.
func (c *Client) markDown(ctx context.Context, ep *endpoint, cause error) {
	now := time.Now()
	c.mu.Lock()
	wasDown := now.Before(ep.downUntil)
	ep.downUntil = now.Add(c.cfg.DownFor)
	c.mu.Unlock()
	if !wasDown {
		c.log.LogAttrs(ctx, slog.LevelInfo, "keyplane endpoint down",
			slog.String("region", ep.region), slog.String("url", ep.url),
			slog.Duration("for", c.cfg.DownFor), slog.Any("error", cause))
	}
}

// Bearer returns an interceptor that sends token as "Authorization: Bearer <token>" on
// every call (an access token, or the operator secret for the admin API).
func Bearer(token string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	})
}

// Tenant returns an interceptor that sets the Keyplane-Tenant header from each
// request's tenant_id, as the Client's own interceptor does: for callers that talk to
// one node directly, without failover.
func Tenant() connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			setTenant(req)
			return next(ctx, req)
		}
	})
}
