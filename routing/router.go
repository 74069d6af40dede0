package routing

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/tracing"
)

// Headers routing reads and writes.
const (
	// TenantHeader names the tenant of an API call, so routing never decodes bodies.
	TenantHeader = "Keyplane-Tenant"
	// RouteHeader says how a response was produced: local, forwarded or degraded.
	RouteHeader = "Keyplane-Route"
	// ViaHeader names the node that forwarded a request (region/node).
	ViaHeader = "Keyplane-Via"
	// HopHeader marks a forwarded request; a node never forwards a request carrying it.
	HopHeader = "Keyplane-Hop"
	// EpochHeader carries the placement epoch the forwarder routed by.
	EpochHeader = "Keyplane-Placement-Epoch"
)

// Routes.
const (
	RouteLocal     = "local"     // this region is the tenant's home, or the call names no tenant
	RouteForwarded = "forwarded" // served by a node of the tenant's home region after one hop
	RouteDegraded  = "degraded"  // no home node reachable: served here against the database

	// routeFailed counts non-idempotent forwards that failed after sending.
	routeFailed = "failed"
	// routeRefused counts requests refused before routing: a tenant header that
	// disagrees with the path, or a tenant-scoped call that names no tenant.
	routeRefused = "refused"
	// routeResidency counts requests of residency-strict tenants that this region
	// may not serve, refused when their home region could not be reached.
	routeResidency = "residency_refused"
	// routeUnplaced counts requests refused because their tenant's placement could
	// not be read (the database unreachable and the tenant not cached).
	routeUnplaced = "unplaced"
)

// Errors TenantOf and the router refuse a request with.
var (
	// ErrTenantMismatch: the Keyplane-Tenant header and the /t/{tenant}/ path (or two
	// header values) name different tenants.
	ErrTenantMismatch = errors.New("the request names two tenants")
	// ErrNoTenant: a tenant-scoped call names no tenant, so it cannot be routed.
	ErrNoTenant = errors.New("the request names no tenant")
)

// Peers tells the router which nodes of a region are ready. *Membership satisfies it.
type Peers interface {
	Ready(region string) []Member
}

// Config configures a Router.
type Config struct {
	Region, NodeID string
	Directory      *Directory
	Peers          Peers
	// HopKey signs the client IP on forwarded requests (see HopKey); nil sends none.
	HopKey []byte
	// PeerTLS, when set, makes forwarding mutual TLS: a request goes only to a member
	// whose advertised peer URL is https and whose certificate chains to the cluster CA
	// and names the region and node id the member gossips; PeerHandler then accepts
	// only connections with a client certificate of the cluster CA. nil forwards over
	// h2c to anyone gossip lists (development only: see docs/decisions/0007).
	PeerTLS *PeerTLS
	// Idempotent reports whether a request may be sent twice (hedged, or retried after it
	// may have reached a node). nil means no request is.
	Idempotent func(*http.Request) bool
	// HedgeAfter sends an idempotent request to a second home node when the first has
	// not answered in this time; 0 adapts to twice the region's recent forward latency.
	HedgeAfter time.Duration
	// ForwardTimeout bounds a forward when the caller set no deadline; 0 means 10s.
	ForwardTimeout time.Duration
	// DownFor keeps a node that failed at transport level out of rotation; 0 means 2s.
	DownFor time.Duration
	// NeedsTenant reports whether a request is tenant-scoped: one that names no tenant
	// is refused (InvalidArgument) rather than served here, since it could not be
	// routed to its home. nil means none is.
	NeedsTenant func(*http.Request) bool
	// MaxBody is the largest request body forwarded (size it to the largest message
	// the handlers accept); 0 means 1 MiB.
	MaxBody int64
	// Dial rewrites host:port addresses before dialing (simulated networks route
	// node-to-node traffic through latency proxies this way).
	Dial map[string]string
	// Transport overrides the transport used for forwarding (tests); it bypasses
	// PeerTLS's per-peer verification.
	Transport http.RoundTripper
	Log       *slog.Logger
	Metrics   prometheus.Registerer
	// TracerProvider, when set, makes every forward attempt a client span (a child of
	// the span in the request's context) whose W3C traceparent the forward carries, and
	// marks the request's span with its route (keyplane.route); forward latencies get
	// the trace id as exemplar. nil traces nothing. Either way a caller's traceparent,
	// tracestate and baggage headers are not forwarded as they came: the forward
	// carries this node's own traceparent, or none.
	TracerProvider trace.TracerProvider
}

// Router sends each request to its tenant's home region: it serves locally when this
// is the home region, forwards the whole request once to a ready home node otherwise,
// and serves locally ("degraded") when no home node can be reached. Safe for
// concurrent use.
type Router struct {
	cfg    Config
	local  http.Handler
	rt     http.RoundTripper
	self   string
	m      *routerMetrics
	traced bool // cfg.TracerProvider is set

	mu      sync.Mutex
	tls     map[peerKey]peerTransport // per verified peer identity and URL (PeerTLS)
	down    map[string]time.Time      // node URL → back in rotation at
	latency map[string]float64        // region → EWMA of forward latency, seconds
}

// NewRouter wraps local, the node's own handler.
func NewRouter(cfg Config, local http.Handler) (*Router, error) {
	if cfg.Directory == nil || cfg.Peers == nil {
		return nil, errors.New("routing: a directory and peers are required")
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 10 * time.Second
	}
	if cfg.DownFor <= 0 {
		cfg.DownFor = 2 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Idempotent == nil {
		cfg.Idempotent = func(*http.Request) bool { return false }
	}
	if cfg.NeedsTenant == nil {
		cfg.NeedsTenant = func(*http.Request) bool { return false }
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newRouterMetrics(reg, prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID})
	if err != nil {
		return nil, err
	}
	rt := &Router{cfg: cfg, local: local, rt: cfg.Transport, self: cfg.Region + "/" + cfg.NodeID, m: m, traced: cfg.TracerProvider != nil,
		down: map[string]time.Time{}, latency: map[string]float64{}, tls: map[peerKey]peerTransport{}}
	if rt.rt == nil && cfg.PeerTLS == nil {
		rt.rt = newTransport(cfg.Dial, nil)
	}
	if rt.rt != nil {
		rt.rt = rt.traceTransport(rt.rt)
	}
	return rt, nil
}

// peerTransport is a verified peer's connection pool, and the round tripper that
// sends through it (the pool itself, or the pool traced).
type peerTransport struct {
	pool *http.Transport
	rt   http.RoundTripper
}

type targetKey struct{}

// Attributes of forward spans.
const (
	routeKey         = attribute.Key("keyplane.route")
	forwardRegionKey = attribute.Key("keyplane.forward.region")
	forwardNodeKey   = attribute.Key("keyplane.forward.node")
)

// traceTransport makes base's requests client spans named "forward <home region>",
// when tracing is on.
func (rt *Router) traceTransport(base http.RoundTripper) http.RoundTripper {
	if !rt.traced {
		return base
	}
	return tracing.Transport(rt.cfg.TracerProvider, base, tracing.TransportOptions{
		Name: func(r *http.Request) string {
			t, _ := r.Context().Value(targetKey{}).(Member)
			return "forward " + t.Region
		},
		Attributes: func(r *http.Request) []attribute.KeyValue {
			t, _ := r.Context().Value(targetKey{}).(Member)
			return []attribute.KeyValue{forwardRegionKey.String(t.Region), forwardNodeKey.String(t.NodeID)}
		},
	})
}

// markRoute records the route on the request's span, when tracing is on.
func (rt *Router) markRoute(r *http.Request, route string) {
	if rt.traced {
		trace.SpanFromContext(r.Context()).SetAttributes(routeKey.String(route))
	}
}

// newTransport speaks HTTP/2 to peers: one multiplexed connection per peer, so a
// forward costs one round trip, and gRPC trailers pass through. Without TLS it is h2c;
// with it, the TLS configuration verifies one peer identity (see Router.peer).
func newTransport(rewrite map[string]string, tc *tls.Config) *http.Transport {
	d := &net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}
	p := new(http.Protocols)
	if tc == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
	}
	return &http.Transport{
		Protocols:       p,
		TLSClientConfig: tc,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := rewrite[addr]; ok {
				addr = to
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     5 * time.Minute,
		HTTP2:               &http.HTTP2Config{PingTimeout: 5 * time.Second, SendPingTimeout: 15 * time.Second},
	}
}

// TenantOf returns the tenant a request names: its Keyplane-Tenant header, or the
// {tenant} of an /t/{tenant}/ path; "" when it names none. Both may be present only
// when they agree: a request whose header says one tenant and whose path says another
// (or with two header values) is refused with ErrTenantMismatch, since it would be
// routed by one tenant and served for the other.
func TenantOf(r *http.Request) (string, error) {
	values := r.Header.Values(TenantHeader)
	if len(values) > 1 {
		return "", fmt.Errorf("%w: %d %s headers (%q), want one", ErrTenantMismatch, len(values), TenantHeader, values)
	}
	path, err := pathTenant(r.URL)
	if err != nil {
		return "", err
	}
	header := r.Header.Get(TenantHeader)
	switch {
	case header == "":
		return path, nil
	case path == "" || path == header:
		return header, nil
	}
	return "", fmt.Errorf("%w: the %s header names tenant %q but the path names tenant %q", ErrTenantMismatch, TenantHeader, header, path)
}

// pathTenant is the {tenant} of an /t/{tenant}/ path, unescaped as http.ServeMux
// unescapes the wildcard the handler reads.
func pathTenant(u *url.URL) (string, error) {
	rest, ok := strings.CutPrefix(u.EscapedPath(), "/t/")
	if !ok {
		return "", nil
	}
	seg, _, _ := strings.Cut(rest, "/")
	t, err := url.PathUnescape(seg)
	if err != nil {
		return "", fmt.Errorf("%w: the path's tenant %q is not a valid path segment", ErrTenantMismatch, seg)
	}
	return t, nil
}

// ServeHTTP routes r by the tenant it names (TenantOf): a request that names two
// tenants, or a tenant-scoped one (Config.NeedsTenant) that names none, is refused
// with InvalidArgument and counted as route "refused", never served here.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dropHopHeaders(r.Header) // a client's hop headers are not a peer's: see PeerHandler
	tenant, err := TenantOf(r)
	if err == nil && tenant == "" && rt.cfg.NeedsTenant(r) {
		err = fmt.Errorf("%w: %s is tenant-scoped; send its tenant_id in the %s header too (routing/client sets it)",
			ErrNoTenant, r.URL.Path, TenantHeader)
	}
	if err != nil {
		rt.m.route[routeRefused].Inc()
		writeInvalid(w, r, err.Error())
		return
	}
	if tenant == "" {
		rt.serveLocal(w, r, RouteLocal)
		return
	}
	p, err := rt.cfg.Directory.Lookup(r.Context(), tenant, 0)
	if err != nil && !answeredLocally(err) {
		// Where the tenant may be served is unknown: serving it here could serve a
		// residency-strict tenant outside its regions (the database may answer the
		// local handler a moment later). Deny instead.
		if r.Context().Err() != nil {
			return // the caller left while waiting for the read: nobody to answer
		}
		// Counted, not logged at warn: while the database is down this is every
		// request, and readiness and the database alerts already say why.
		rt.m.route[routeUnplaced].Inc()
		rt.cfg.Log.DebugContext(r.Context(), "tenant placement unreadable; request refused", "tenant", tenant, "err", err)
		writeUnavailable(w, r, fmt.Sprintf("the placement of tenant %s cannot be read here (tenant directory unavailable); not served, retry", tenant))
		return
	}
	if err != nil || p.Home == rt.cfg.Region {
		// Unknown or malformed tenant: the local handler gives the precise answer
		// (NotFound, InvalidArgument). Home here: serve.
		if err == nil && p.ServeRegions != nil {
			w.Header().Set(ServeRegionsHeader, strings.Join(p.ServeRegions, ","))
		}
		rt.serveLocal(w, r, RouteLocal)
		return
	}
	if p.ServeRegions != nil {
		w.Header().Set(ServeRegionsHeader, strings.Join(p.ServeRegions, ","))
	}
	rt.forward(w, r, p, true)
}

// answeredLocally reports whether a directory lookup failed for a reason the local
// handler answers precisely and without serving anything: the tenant does not exist,
// or its id is malformed.
func answeredLocally(err error) bool {
	var fe *schema.FieldError
	return errors.Is(err, schema.ErrNotFound) || errors.As(err, &fe)
}

// ServeRegionsHeader lists, on the answers for a residency-strict tenant, the regions
// whose nodes may serve it: the app-side client fails over only to those.
const ServeRegionsHeader = "Keyplane-Serve-Regions"

// serveDegraded serves a request for a tenant whose home region cannot be reached
// here, unless the tenant's residency forbids this region to serve it.
func (rt *Router) serveDegraded(w http.ResponseWriter, r *http.Request, p Placement, cause string) {
	if !p.MayServe(rt.cfg.Region) {
		rt.m.route[routeResidency].Inc()
		writeUnavailable(w, r, fmt.Sprintf("tenant %s is residency-strict (served only in %s) and its home region %s cannot be reached from %s (%s); not served here",
			p.Tenant, strings.Join(p.ServeRegions, ", "), p.Home, rt.cfg.Region, cause))
		return
	}
	rt.serveLocal(w, r, RouteDegraded)
}

// PeerHandler serves the peer listener: requests other nodes forwarded, and only
// those (a request without a hop header is refused). With Config.PeerTLS the
// connection must have presented a client certificate of the cluster CA (the
// listener's PeerTLS.ServerConfig requires one) naming the node the hop header names;
// only then are the hop's client IP and placement epoch trusted. A client-facing
// listener serves ServeHTTP, which drops every hop header instead.
func (rt *Router) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hv := r.Header.Get(HopHeader)
		if hv == "" {
			http.Error(w, "the peer listener serves forwarded requests only (no "+HopHeader+" header)", http.StatusBadRequest)
			return
		}
		authenticated := false
		if rt.cfg.PeerTLS != nil {
			id, ok := PeerIdentity(r.TLS)
			if !ok {
				http.Error(w, "a client certificate of the cluster CA is required", http.StatusUnauthorized)
				return
			}
			if from := parseHop(hv).From; from != id.String() {
				http.Error(w, fmt.Sprintf("%s names %q but the connection's certificate names %s", HopHeader, from, id), http.StatusForbidden)
				return
			}
			authenticated = true
		}
		r.Header.Del(ViaHeader)
		tenant, err := TenantOf(r)
		if err != nil {
			rt.m.route[routeRefused].Inc()
			writeInvalid(w, r, err.Error())
			return
		}
		rt.serveHop(w, r, tenant, hv, authenticated)
	})
}

type entryRegionKey struct{}

// EntryRegion is the region where the request being served entered keyplane: the
// forwarding node's region when the request was forwarded and its hop could be
// trusted (authenticated connection or signed), "" otherwise — then the request
// entered at the serving node itself, or nobody can vouch for where it did.
func EntryRegion(ctx context.Context) string {
	r, _ := ctx.Value(entryRegionKey{}).(string)
	return r
}

// serveHop serves a request another node forwarded: never forward it again; if the
// forwarder routed by a placement older than ours and the tenant no longer lives
// here, say so (421) so the forwarder re-routes. The request's RemoteAddr becomes the
// client's address the hop carries when it can be trusted, and is emptied otherwise:
// it is never the forwarding node's address (an allow-list of internal addresses
// would pass).
func (rt *Router) serveHop(w http.ResponseWriter, r *http.Request, tenant, hv string, authenticated bool) {
	now := time.Now()
	ip := hopIP(rt.cfg.HopKey, hv, tenant, authenticated, now)
	if from := hopFrom(rt.cfg.HopKey, hv, tenant, authenticated, now); from != "" {
		if region, _, ok := strings.Cut(from, "/"); ok && region != "" {
			r = r.WithContext(context.WithValue(r.Context(), entryRegionKey{}, region))
		}
	}
	r.RemoteAddr = ""
	if ip != "" {
		r.RemoteAddr = net.JoinHostPort(ip, "0")
	}
	if epoch, err := strconv.ParseInt(r.Header.Get(EpochHeader), 10, 64); err == nil && tenant != "" {
		if !authenticated && len(rt.cfg.HopKey) > 0 && ip == "" {
			// Not signed by a peer: anyone can send the header, and a made-up epoch must
			// not turn every request into a database read. Use the cache as it is.
			epoch = 0
		}
		p, err := rt.cfg.Directory.Lookup(r.Context(), tenant, epoch)
		if err == nil && p.Home != rt.cfg.Region {
			w.Header().Set(EpochHeader, strconv.FormatInt(p.Epoch, 10))
			http.Error(w, fmt.Sprintf("tenant %s is homed in %s, not %s", tenant, p.Home, rt.cfg.Region), http.StatusMisdirectedRequest)
			return
		}
	}
	rt.serveLocal(w, r, RouteLocal)
}

func (rt *Router) serveLocal(w http.ResponseWriter, r *http.Request, route string) {
	rt.m.route[route].Inc()
	rt.markRoute(r, route)
	w.Header().Set(RouteHeader, route)
	rt.local.ServeHTTP(w, r)
}

// forward sends the request to the home region; retry is false on the second routing
// round after a misdirected answer.
func (rt *Router) forward(w http.ResponseWriter, r *http.Request, p Placement, retry bool) {
	targets := rt.targets(p.Home)
	if len(targets) == 0 {
		rt.serveDegraded(w, r, p, "no ready node there")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, rt.cfg.MaxBody+1))
	if err != nil {
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(body)) > rt.cfg.MaxBody {
		http.Error(w, fmt.Sprintf("request body larger than %d bytes", rt.cfg.MaxBody), http.StatusRequestEntityTooLarge)
		return
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body)) // for degraded local serving

	ctx, cancel := context.WithTimeout(r.Context(), callerTimeout(r.Header, rt.cfg.ForwardTimeout))
	defer cancel()
	idem := rt.cfg.Idempotent(r)
	res := rt.attempts(ctx, r, body, p, targets, idem)
	if res.resp != nil {
		defer res.resp.Body.Close()
		defer res.cancel()
		if res.resp.StatusCode == http.StatusMisdirectedRequest && retry {
			rt.cfg.Directory.Forget(p.Tenant)
			epoch, _ := strconv.ParseInt(res.resp.Header.Get(EpochHeader), 10, 64)
			np, err := rt.cfg.Directory.Lookup(r.Context(), p.Tenant, epoch)
			if err != nil || np.Home == rt.cfg.Region {
				rt.serveLocal(w, r, RouteLocal)
				return
			}
			rt.forward(w, r, np, false)
			return
		}
		rt.markRoute(r, RouteForwarded)
		rt.relay(w, res.resp)
		return
	}
	if r.Context().Err() != nil {
		return // the caller left
	}
	if res.sent && !idem {
		// The home node may have applied it: serving it here could apply it twice.
		rt.m.route[routeFailed].Inc()
		rt.markRoute(r, routeFailed)
		writeUnavailable(w, r, fmt.Sprintf("forwarding to home region %s failed after the request was sent (%v); its outcome is unknown", p.Home, res.err))
		return
	}
	rt.cfg.Log.Warn("home region unreachable; serving degraded", "tenant", p.Tenant, "home", p.Home, "err", res.err)
	rt.serveDegraded(w, r, p, fmt.Sprint(res.err))
}

// targets returns the home region's ready nodes not recently failed, in random order.
func (rt *Router) targets(region string) []Member {
	ready := rt.cfg.Peers.Ready(region)
	now := time.Now()
	out := ready[:0:0]
	rt.mu.Lock()
	for _, m := range ready {
		if until, ok := rt.down[m.URL]; ok && now.Before(until) {
			continue
		}
		out = append(out, m)
	}
	rt.mu.Unlock()
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

type result struct {
	resp   *http.Response
	cancel context.CancelFunc
	err    error
	sent   bool // some attempt may have reached a node
}

type attempt struct {
	resp   *http.Response
	err    error
	target Member
	sent   bool
	cancel context.CancelFunc
	start  time.Time
}

// attempts runs the forward: one node at a time, a hedge to a second node when an
// idempotent request is slow, the next node after a failure that is safe to retry.
func (rt *Router) attempts(ctx context.Context, r *http.Request, body []byte, p Placement, targets []Member, idem bool) result {
	results := make(chan attempt, len(targets))
	next, inflight := 0, 0
	launch := func() {
		t := targets[next]
		next++
		inflight++
		actx, cancel := context.WithCancel(ctx)
		go func() {
			a := attempt{target: t, cancel: cancel, start: time.Now()}
			a.resp, a.sent, a.err = rt.send(actx, r, body, p, t)
			results <- a
		}()
	}
	launch()
	var hedge <-chan time.Time
	if idem && len(targets) > 1 {
		timer := time.NewTimer(rt.hedgeAfter(p.Home))
		defer timer.Stop()
		hedge = timer.C
	}
	var last result
	for {
		select {
		case a := <-results:
			inflight--
			if a.err == nil {
				rt.observe(ctx, p.Home, a.target, time.Since(a.start), nil)
				go drain(results, inflight)
				return result{resp: a.resp, cancel: a.cancel}
			}
			a.cancel()
			rt.observe(ctx, p.Home, a.target, time.Since(a.start), a.err)
			last.err = a.err
			last.sent = last.sent || a.sent
			if (!a.sent || idem) && next < len(targets) && ctx.Err() == nil {
				launch()
			} else if inflight == 0 {
				return last
			}
		case <-hedge:
			hedge = nil
			if next < len(targets) {
				rt.m.hedges.WithLabelValues(p.Home).Inc()
				launch()
			}
		}
	}
}

// drain closes the responses of attempts that lost a hedge race.
func drain(results <-chan attempt, n int) {
	for range n {
		a := <-results
		if a.resp != nil {
			_ = a.resp.Body.Close()
		}
		a.cancel()
	}
}

// send forwards one copy of the request to t. sent reports whether the request may
// have reached the node (its headers were written).
func (rt *Router) send(ctx context.Context, r *http.Request, body []byte, p Placement, t Member) (*http.Response, bool, error) {
	u, transport, err := rt.peer(t)
	if err != nil {
		return nil, false, err
	}
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	if rt.traced {
		ctx = context.WithValue(ctx, targetKey{}, t) // names the forward's span
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, u.Scheme+"://"+u.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	copyHeaders(out.Header, r.Header)
	if deadline, ok := ctx.Deadline(); ok {
		setTimeout(out.Header, time.Until(deadline))
	}
	out.Header.Set(HopHeader, signHop(rt.cfg.HopKey, rt.self, p.Tenant, hostOf(r.RemoteAddr), time.Now()))
	out.Header.Set(EpochHeader, strconv.FormatInt(p.Epoch, 10))
	out.ContentLength = int64(len(body))
	resp, err := transport.RoundTrip(out)
	if err != nil {
		return nil, wrote.Load(), err
	}
	if (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable) && resp.Header.Get("Keyplane-Served-By") == "" {
		// Not an answer from a keyplane node (a proxy or load balancer in between).
		_ = resp.Body.Close()
		return nil, true, fmt.Errorf("peer %s: %s", t.NodeID, resp.Status)
	}
	return resp, true, nil
}

// peerKey names one verified peer connection pool: the identity its certificate must
// name and the URL gossip gave for it.
type peerKey struct {
	id  Identity
	url string
}

// peer returns the URL to forward to t at and the transport to use: with PeerTLS, t's
// https peer URL and a transport whose connections verify that t's certificate names
// t (one transport per identity, so a pooled connection verified for one node never
// carries a request meant for another); without, t's peer URL over h2c. Never its API
// URL: the API listener drops hop headers, so a forward there could be forwarded back.
func (rt *Router) peer(t Member) (*url.URL, http.RoundTripper, error) {
	raw := t.Peer
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("peer %s/%s advertises no usable peer URL (%q)", t.Region, t.NodeID, raw)
	}
	if rt.rt != nil {
		return u, rt.rt, nil
	}
	if u.Scheme != "https" {
		return nil, nil, fmt.Errorf("peer %s/%s advertises %q: forwards are mutual TLS, want an https peer URL", t.Region, t.NodeID, raw)
	}
	k := peerKey{id: Identity{Region: t.Region, NodeID: t.NodeID}, url: u.Host}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	tr, ok := rt.tls[k]
	if !ok {
		if len(rt.tls) >= 1024 { // restarts and rotations: drop the lot, reconnecting is cheap
			for _, old := range rt.tls {
				old.pool.CloseIdleConnections()
			}
			clear(rt.tls)
		}
		tr.pool = newTransport(rt.cfg.Dial, rt.cfg.PeerTLS.clientConfig(k.id))
		tr.rt = rt.traceTransport(tr.pool)
		rt.tls[k] = tr
	}
	return u, tr.rt, nil
}

func (rt *Router) observe(ctx context.Context, region string, t Member, d time.Duration, err error) {
	if err != nil {
		rt.m.failures.WithLabelValues(region).Inc()
		rt.mu.Lock()
		rt.down[t.URL] = time.Now().Add(rt.cfg.DownFor)
		rt.mu.Unlock()
		rt.cfg.Log.Debug("forward failed", "to", t.Region+"/"+t.NodeID, "err", err)
		return
	}
	if rt.traced {
		tracing.Observe(ctx, rt.m.forwardSeconds.WithLabelValues(region), d.Seconds())
	} else {
		rt.m.forwardSeconds.WithLabelValues(region).Observe(d.Seconds())
	}
	rt.mu.Lock()
	if old, ok := rt.latency[region]; ok {
		rt.latency[region] = 0.8*old + 0.2*d.Seconds()
	} else {
		rt.latency[region] = d.Seconds()
	}
	delete(rt.down, t.URL)
	rt.mu.Unlock()
}

// hedgeAfter is the configured hedge delay, or twice the region's recent forward
// latency, within [10 ms, 1 s].
func (rt *Router) hedgeAfter(region string) time.Duration {
	if rt.cfg.HedgeAfter > 0 {
		return rt.cfg.HedgeAfter
	}
	rt.mu.Lock()
	l, ok := rt.latency[region]
	rt.mu.Unlock()
	if !ok {
		return 500 * time.Millisecond
	}
	return min(max(time.Duration(2*l*float64(time.Second)), 10*time.Millisecond), time.Second)
}

// relay copies the home node's response, trailers included (gRPC).
func (rt *Router) relay(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	copyHeaders(h, resp.Header)
	h.Set(RouteHeader, RouteForwarded)
	h.Set(ViaHeader, rt.self)
	rt.m.route[RouteForwarded].Inc()
	w.WriteHeader(resp.StatusCode)
	var dst io.Writer = w
	if resp.ContentLength == -1 {
		// A streamed body (no length): pass each piece on as it comes, as
		// httputil.ReverseProxy does, and keep HTTP/1.1 chunked so trailers survive.
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		dst = flushWriter{w, rc}
	}
	if _, err := io.Copy(dst, resp.Body); err != nil {
		rt.cfg.Log.Debug("relay body", "err", err)
	}
	for k, vv := range resp.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// dropHopHeaders removes the headers only a peer may send. On a client-facing
// listener they are a client's claims: a forged hop must neither stop routing nor set
// the client's address or the placement epoch.
func dropHopHeaders(h http.Header) {
	for _, k := range []string{HopHeader, EpochHeader, ViaHeader} {
		h.Del(k)
	}
}

// hopByHop headers belong to one connection and are never forwarded ("TE: trailers",
// which gRPC needs end to end, is kept). Neither are the trace context headers: a
// forward carries this node's own traceparent (Config.TracerProvider) or none, and
// a caller's baggage goes no further than the node it reached.
var hopByHop = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Proxy-Connection": true,
	HopHeader: true, EpochHeader: true, RouteHeader: true, ViaHeader: true,
	"Traceparent": true, "Tracestate": true, "Baggage": true}

func copyHeaders(dst, src http.Header) {
	for k, vv := range src {
		if hopByHop[k] || k == "Te" && !trailersOnly(vv) {
			continue
		}
		dst[k] = append(dst[k][:0:0], vv...)
	}
}

func trailersOnly(vv []string) bool { return len(vv) == 1 && strings.EqualFold(vv[0], "trailers") }

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// callerTimeout is the caller's own deadline (Connect-Timeout-Ms or grpc-timeout),
// capped at limit.
func callerTimeout(h http.Header, limit time.Duration) time.Duration {
	if ms, err := strconv.ParseInt(h.Get("Connect-Timeout-Ms"), 10, 64); err == nil && ms > 0 {
		if ms >= limit.Milliseconds() {
			return limit // also keeps ms × 1e6 from overflowing
		}
		return time.Duration(ms) * time.Millisecond
	}
	if d, ok := parseGRPCTimeout(h.Get("Grpc-Timeout")); ok {
		return min(d, limit)
	}
	return limit
}

func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond,
		'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	if n > int64(math.MaxInt64/unit) {
		return math.MaxInt64, true // 99999999H is legal and longer than any limit
	}
	return time.Duration(n) * unit, true
}

// setTimeout rewrites the protocol's timeout header to the time left, so the home
// node keeps the caller's deadline rather than restarting it.
func setTimeout(h http.Header, left time.Duration) {
	ms := max(left.Milliseconds(), 1)
	if h.Get("Grpc-Timeout") != "" {
		h.Set("Grpc-Timeout", strconv.FormatInt(ms, 10)+"m")
		return
	}
	h.Set("Connect-Timeout-Ms", strconv.FormatInt(ms, 10))
}

// writeUnavailable answers in the caller's protocol: a gRPC status, a Connect error,
// a SCIM error for /t/{tenant}/scim/v2, or an OAuth error for the other /t/ endpoints.
func writeUnavailable(w http.ResponseWriter, r *http.Request, msg string) {
	writeError(w, r, http.StatusServiceUnavailable, "14", "unavailable", "temporarily_unavailable", msg)
}

// writeInvalid refuses a malformed request in the caller's protocol (InvalidArgument,
// or the OAuth invalid_request).
func writeInvalid(w http.ResponseWriter, r *http.Request, msg string) {
	writeError(w, r, http.StatusBadRequest, "3", "invalid_argument", "invalid_request", msg)
}

func writeError(w http.ResponseWriter, r *http.Request, status int, grpcStatus, connectCode, oauthError, msg string) {
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc"):
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Grpc-Status", grpcStatus)
		w.Header().Set("Grpc-Message", url.PathEscape(msg))
		w.WriteHeader(http.StatusOK)
	case scimPath(r.URL.Path):
		w.Header().Set("Content-Type", "application/scim+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:Error"},
			"status": strconv.Itoa(status), "detail": msg})
	case strings.HasPrefix(r.URL.Path, "/t/"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": oauthError, "error_description": msg})
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": connectCode, "message": msg})
	}
}

// scimPath reports whether path is under a tenant's SCIM endpoint, /t/{tenant}/scim/v2
// (RFC 7644): its errors use the SCIM error schema.
func scimPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/t/")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, "/")
	return ok && (rest == "scim/v2" || strings.HasPrefix(rest, "scim/v2/"))
}
