package front

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegionHeader names the caller's region on a request to the front: the front then
// prefers that region's healthy nodes. It is a hint, never trusted for anything else.
const RegionHeader = "Keyplane-Region"

// NodeHeader is set on every response the front relays: region/name of the node it
// sent the request to (the entry node; Keyplane-Served-By names the node that served
// it, which differs when that node forwarded it to the tenant's home region).
const NodeHeader = "Keyplane-Front-Node"

// Node is a keyplane node behind the front.
type Node struct {
	Region string
	// Name identifies the node in metrics and NodeHeader; "" means the URL's host:port.
	Name string
	// URL is the node's API base URL (http or https, no query).
	URL string
}

// Config configures a Front. Zero durations and counts take DefaultConfig's values.
type Config struct {
	// Nodes are the region nodes behind the front (at least one).
	Nodes []Node
	// PreferRegion is preferred for requests without a RegionHeader; "" prefers none.
	PreferRegion string
	// HealthInterval is how often every node's /readyz is polled.
	HealthInterval time.Duration
	// HealthTimeout bounds one /readyz poll; it must be shorter than HealthInterval.
	HealthTimeout time.Duration
	// DialTimeout bounds connecting to a node.
	DialTimeout time.Duration
	// ResponseTimeout bounds the wait for a node's response headers once the request
	// is sent (the nodes' own forward timeout is 10 s: leave room for it).
	ResponseTimeout time.Duration
	// Attempts is how many nodes one request may be tried on.
	Attempts int
	// MaxBody is the largest request body kept for a retry; a larger body is streamed
	// to one node and not retried.
	MaxBody int64
	// Log receives node up/down transitions; nil discards.
	Log *slog.Logger
	// Metrics registers the front's metrics; nil registers none.
	Metrics prometheus.Registerer
}

// DefaultConfig polls every node each second and tries a request on up to three nodes.
func DefaultConfig() Config {
	return Config{HealthInterval: time.Second, HealthTimeout: 800 * time.Millisecond, DialTimeout: 2 * time.Second,
		ResponseTimeout: 30 * time.Second, Attempts: 3, MaxBody: 1 << 20}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if c.HealthInterval <= 0 {
		c.HealthInterval = d.HealthInterval
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = min(d.HealthTimeout, c.HealthInterval)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = d.ResponseTimeout
	}
	if c.Attempts <= 0 {
		c.Attempts = d.Attempts
	}
	if c.MaxBody <= 0 {
		c.MaxBody = d.MaxBody
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if len(c.Nodes) == 0 {
		return errors.New("nodes: give at least one region node")
	}
	seen := map[string]bool{}
	regions := map[string]bool{}
	for i, n := range c.Nodes {
		if n.Region == "" {
			return fmt.Errorf("nodes[%d]: region is empty", i)
		}
		u, err := url.Parse(n.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("nodes[%d]: url %q must be an http(s) URL without query or fragment", i, n.URL)
		}
		if seen[n.URL] {
			return fmt.Errorf("nodes[%d]: url %s is listed twice", i, n.URL)
		}
		seen[n.URL] = true
		regions[n.Region] = true
	}
	if c.PreferRegion != "" && !regions[c.PreferRegion] {
		return fmt.Errorf("prefer region: %q has no node", c.PreferRegion)
	}
	if c.HealthTimeout > 0 && c.HealthInterval > 0 && c.HealthTimeout > c.HealthInterval {
		return fmt.Errorf("health timeout: %v is longer than the health interval %v", c.HealthTimeout, c.HealthInterval)
	}
	if c.Attempts > 10 {
		return fmt.Errorf("attempts: at most 10, got %d", c.Attempts)
	}
	return nil
}

// node is a Node and what the front knows of it.
type node struct {
	Node
	base    *url.URL
	healthy atomic.Bool
}

func (n *node) label() string { return n.Region + "/" + n.Name }

// Front is the reverse proxy. Its ServeHTTP is safe for concurrent use; Run polls the
// nodes' health until its context ends.
type Front struct {
	cfg    Config
	nodes  []*node
	proxy  *httputil.ReverseProxy
	h1, h2 *http.Transport // to nodes: HTTP/1.1, and h2c for HTTP/2 callers (gRPC)
	health *http.Client
	next   atomic.Uint64 // round robin
	m      *metrics
	mu     sync.Mutex // serializes health rounds
}

// New builds a front; every node counts as unhealthy until Check (or Run) saw it ready.
func New(cfg Config) (*Front, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Front{cfg: cfg}
	for _, n := range cfg.Nodes {
		u, _ := url.Parse(n.URL) // validated
		u.Path = strings.TrimSuffix(u.Path, "/")
		if n.Name == "" {
			n.Name = u.Host
		}
		f.nodes = append(f.nodes, &node{Node: n, base: u})
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	f.h1 = &http.Transport{DialContext: dialer.DialContext, ResponseHeaderTimeout: cfg.ResponseTimeout,
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}
	f.h2 = &http.Transport{DialContext: dialer.DialContext, ResponseHeaderTimeout: cfg.ResponseTimeout, IdleConnTimeout: 90 * time.Second}
	f.h2.Protocols = new(http.Protocols)
	f.h2.Protocols.SetUnencryptedHTTP2(true)
	f.health = &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 2},
		Timeout: cfg.HealthTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var err error
	if f.m, err = newMetrics(cfg.Metrics, f.nodes); err != nil {
		return nil, fmt.Errorf("front metrics: %w", err)
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The node is chosen per attempt (RoundTrip); a placeholder until then.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "keyplane-node.invalid"
			pr.Out.Host = ""
			pr.SetXForwarded() // the inbound X-Forwarded-* are dropped by Rewrite first
		},
		Transport:     roundTripper{f},
		FlushInterval: -1, // stream (gRPC, server-sent answers) without buffering
		ErrorHandler:  f.writeError,
		ModifyResponse: func(resp *http.Response) error {
			if n, ok := resp.Request.Context().Value(chosenKey{}).(*chosen); ok && n.node != nil {
				resp.Header.Set(NodeHeader, n.node.label())
			}
			return nil
		},
	}
	return f, nil
}

// Nodes returns the nodes behind the front and whether each is healthy now.
func (f *Front) Nodes() map[Node]bool {
	out := map[Node]bool{}
	for _, n := range f.nodes {
		out[n.Node] = n.healthy.Load()
	}
	return out
}

// Close drops idle connections to the nodes.
func (f *Front) Close() {
	f.h1.CloseIdleConnections()
	f.h2.CloseIdleConnections()
	f.health.CloseIdleConnections()
}

// Run polls every node's /readyz each HealthInterval until ctx ends.
func (f *Front) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.HealthInterval)
	defer t.Stop()
	for {
		f.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check polls every node's /readyz once, concurrently, each bounded by HealthTimeout,
// and records which nodes are healthy (a 200 answer).
func (f *Front) Check(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range f.nodes {
		wg.Go(func() {
			ok := f.ready(ctx, n)
			if ctx.Err() != nil {
				return
			}
			if was := n.healthy.Swap(ok); was != ok {
				f.cfg.Log.Info("front: node health changed", "node", n.label(), "url", n.URL, "healthy", ok)
			}
		})
	}
	wg.Wait()
	f.m.setHealth(f.nodes)
}

func (f *Front) ready(ctx context.Context, n *node) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base.String()+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := f.health.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ServeHTTP proxies r to a healthy node (see the package doc).
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &chosen{}
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chosenKey{}, c)))
}

// chosenKey carries the node a request was finally sent to, for ModifyResponse.
type chosenKey struct{}

type chosen struct{ node *node }

// Order returns the healthy nodes a request preferring region prefer is tried on, in
// order: the preferred region's healthy nodes first, then every other healthy node,
// each group rotated round robin across calls. prefer "" prefers none.
func (f *Front) Order(prefer string) []Node {
	var out []Node
	for _, n := range f.order(prefer) {
		out = append(out, n.Node)
	}
	return out
}

func (f *Front) order(prefer string) []*node {
	var first, rest []*node
	for _, n := range f.nodes {
		switch {
		case !n.healthy.Load():
		case prefer != "" && n.Region == prefer:
			first = append(first, n)
		default:
			rest = append(rest, n)
		}
	}
	k := int(f.next.Add(1) - 1)
	return append(rotate(first, k), rotate(rest, k)...)
}

func rotate(ns []*node, k int) []*node {
	if len(ns) == 0 {
		return nil
	}
	k %= len(ns)
	return append(ns[k:len(ns):len(ns)], ns[:k]...)
}

// SafeToRepeat reports whether a request may be sent again to another node after it
// may have reached one: reads, the OAuth calls whose repetition changes nothing
// (introspection; revocation, RFC 7009), and any call with an Idempotency-Key (the
// node applies it at most once and answers a copy from its record). Token minting and
// every other POST without a key are not.
func SafeToRepeat(r *http.Request) bool {
	if r.Header.Get("Idempotency-Key") != "" {
		return true
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	case http.MethodPost:
		p := r.URL.Path
		return strings.HasPrefix(p, "/t/") && (strings.HasSuffix(p, "/oauth2/introspect") || strings.HasSuffix(p, "/oauth2/revoke"))
	}
	return false
}

// Errors the front answers with instead of a node's response.
var (
	// ErrNoHealthyNode: no node passed its last health check.
	ErrNoHealthyNode = errors.New("no healthy keyplane node behind the front")
)

// SentError is a transport failure after the request reached a node's connection,
// for a request that is not safe to repeat: its outcome is unknown.
type SentError struct {
	Node string
	Err  error
}

func (e *SentError) Error() string {
	return fmt.Sprintf("the request reached node %s and then failed (%v); it is not safe to repeat, so its outcome is unknown", e.Node, e.Err)
}

func (e *SentError) Unwrap() error { return e.Err }

// roundTripper picks the node of every attempt.
type roundTripper struct{ f *Front }

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	f := rt.f
	prefer := req.Header.Get(RegionHeader)
	if prefer == "" {
		prefer = f.cfg.PreferRegion
	}
	order := f.order(prefer)
	if len(order) == 0 {
		f.m.unanswered.WithLabelValues("no_healthy_node").Inc()
		return nil, ErrNoHealthyNode
	}
	order = order[:min(len(order), f.cfg.Attempts)]
	body, replayable, err := f.buffer(req)
	if err != nil {
		return nil, err
	}
	repeat := SafeToRepeat(req)
	tr := f.h1
	if req.ProtoMajor == 2 {
		tr = f.h2
	}
	c, _ := req.Context().Value(chosenKey{}).(*chosen)
	var last error
	for i, n := range order {
		if i > 0 {
			f.m.retries.Inc()
		}
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host = n.base.Scheme, n.base.Host
		out.URL.Path = n.base.Path + req.URL.Path
		if req.URL.RawPath != "" {
			out.URL.RawPath = n.base.Path + req.URL.RawPath
		}
		out.Host = ""
		if body != nil {
			out.Body = body()
			if replayable {
				out.GetBody = func() (io.ReadCloser, error) { return body(), nil }
			}
		}
		var sent atomic.Bool
		out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
			// Once a connection is held the request may be on the wire: from then on
			// only a request safe to repeat goes to another node.
			GotConn: func(httptrace.GotConnInfo) { sent.Store(true) },
		}))
		if c != nil {
			c.node = n
		}
		resp, err := tr.RoundTrip(out)
		if err == nil {
			f.m.attempt(n, statusClass(resp.StatusCode))
			return resp, nil
		}
		f.m.attempt(n, "error")
		last = err
		if req.Context().Err() != nil {
			return nil, err // the caller left: nothing to retry for
		}
		if n.healthy.Swap(false) {
			f.cfg.Log.Warn("front: node failed a request; out of rotation until its next health check", "node", n.label(), "err", err)
			f.m.setHealth(f.nodes)
		}
		if sent.Load() && !repeat {
			f.m.unanswered.WithLabelValues("failed_after_send").Inc()
			return nil, &SentError{Node: n.label(), Err: err}
		}
		if !replayable {
			break
		}
	}
	f.m.unanswered.WithLabelValues("attempts_exhausted").Inc()
	return nil, fmt.Errorf("every node tried failed, last: %w", last)
}

// buffer reads a request body of at most MaxBody bytes so that it can be sent again;
// body is nil for a request without one. A larger body is streamed once: replayable
// is false.
func (f *Front) buffer(req *http.Request) (body func() io.ReadCloser, replayable bool, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, true, nil
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, f.cfg.MaxBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("read request body: %w", err)
	}
	if int64(len(b)) > f.cfg.MaxBody {
		rest := io.NopCloser(io.MultiReader(bytes.NewReader(b), req.Body))
		used := false
		return func() io.ReadCloser {
			if used {
				return io.NopCloser(strings.NewReader(""))
			}
			used = true
			return rest
		}, false, nil
	}
	return func() io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }, true, nil
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return fmt.Sprintf("%dxx", code/100)
}

// writeError answers a request no node answered, in the RFC 6749 error form (OAuth
// clients read it; Connect and gRPC clients see 503 or 502 as Unavailable).
func (f *Front) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the caller left
	}
	status := http.StatusBadGateway
	if errors.Is(err, ErrNoHealthyNode) {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "temporarily_unavailable", "error_description": "keyplane front: " + err.Error()})
}

// ParseNodes parses node specs REGION=URL or REGION/NAME=URL, each value possibly a
// ';'-separated list (the form an environment variable carries).
func ParseNodes(specs []string) ([]Node, error) {
	var out []Node
	for _, spec := range specs {
		for s := range strings.SplitSeq(spec, ";") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			key, u, ok := strings.Cut(s, "=")
			region, name, _ := strings.Cut(key, "/")
			if !ok || region == "" || u == "" {
				return nil, fmt.Errorf("%q: want REGION=URL or REGION/NAME=URL", s)
			}
			out = append(out, Node{Region: region, Name: name, URL: u})
		}
	}
	return out, nil
}
