package routing_test

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// The router under test runs in region eu as node eu-1. Its tenants:
//
//	acme     homed here (eu), epoch 1
//	globex   homed in us, epoch 7
//	initech  homed in ap, epoch 2
const (
	here = "eu"
	self = "eu/eu-1"
)

func defaultTenants() *fakeTenants {
	f := newFakeTenants()
	f.home("acme", here, 1)
	f.home("globex", "us", 7)
	f.home("initech", "ap", 2)
	return f
}

// fakePeers is a fixed routing table, region → ready members. Read-only once built.
type fakePeers map[string][]routing.Member

func (p fakePeers) Ready(region string) []routing.Member { return p[region] }

var _ routing.Peers = fakePeers(nil)

func member(region, node, url string) routing.Member {
	return routing.Member{Region: region, NodeID: node, URL: url, Peer: url, Ready: true, State: "alive"}
}

// seen is a request as a handler saw it.
type seen struct {
	Method, URI, RemoteAddr string
	Header                  http.Header
	Body                    string
}

// recorder records every request it serves, then answers with then, or with
// "served by <name>". Safe for concurrent use.
type recorder struct {
	name string
	then http.HandlerFunc

	mu   sync.Mutex
	reqs []seen
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, seen{Method: r.Method, URI: r.URL.RequestURI(), RemoteAddr: r.RemoteAddr,
		Header: r.Header.Clone(), Body: string(body)})
	rec.mu.Unlock()
	if rec.then != nil {
		rec.then(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "served by "+rec.name)
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// startH2C starts a server on 127.0.0.1 speaking HTTP/1.1 and h2c, as peers do.
func startH2C(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// peer starts a home node: a recorder behind an h2c server.
func peer(t *testing.T, region, node string, then http.HandlerFunc) (routing.Member, *recorder) {
	t.Helper()
	rec := &recorder{name: node, then: then}
	return member(region, node, startH2C(t, rec).URL), rec
}

// refused returns a member whose URL refuses connections.
func refused(t *testing.T, region, node string) routing.Member {
	t.Helper()
	return member(region, node, "http://"+refusingAddr())
}

// lowPort hands out privileged ports nothing on the test machine listens on: a
// connection to one is refused, deterministically. (A port closed after listening on
// it could be taken meanwhile by a server of a parallel test.)
var lowPort atomic.Int32

func refusingAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(600+lowPort.Add(1)%400)))
}

type fixture struct {
	tenants *fakeTenants
	local   *recorder
	reg     *prometheus.Registry
	router  *routing.Router
	front   *httptest.Server
}

// newFixture builds the eu-1 router (directory TTL one hour) in front of a local
// recorder, and serves it on 127.0.0.1.
func newFixture(t *testing.T, tenants *fakeTenants, peers fakePeers, configure func(*routing.Config)) *fixture {
	t.Helper()
	if tenants == nil {
		tenants = defaultTenants()
	}
	f := &fixture{tenants: tenants, local: &recorder{name: "local"}, reg: prometheus.NewRegistry()}
	cfg := routing.Config{Region: here, NodeID: "eu-1", Directory: routing.NewDirectory(tenants, time.Hour),
		Peers: peers, Metrics: f.reg}
	if configure != nil {
		configure(&cfg)
	}
	r, err := routing.NewRouter(cfg, f.local)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	f.router = r
	f.front = startH2C(t, r)
	return f
}

type request struct {
	method, target, body string
	header               map[string]string
}

// do sends req to the router over HTTP/1.1 and returns the response with its body read.
func (f *fixture) do(t *testing.T, req request) (*http.Response, string) {
	t.Helper()
	return send(t, f.front.Client(), f.front.URL, req)
}

func send(t *testing.T, c *http.Client, base string, req request) (*http.Response, string) {
	t.Helper()
	method := req.method
	if method == "" {
		method = http.MethodGet
	}
	r, err := http.NewRequest(method, base+req.target, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, req.target, err)
	}
	return resp, string(body)
}

// metric returns the value of the counter (or the sample count of the histogram)
// name{label=value}, 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRouterRoutes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		req       request
		wantRoute string
		wantBy    string // "local" or the peer's node id
	}{
		{name: "home here", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "acme"}},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		{name: "no tenant", req: request{target: "/v1/health"},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		{name: "empty /t/ path", req: request{target: "/t/"},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		{name: "path tenant home here", req: request{method: http.MethodPost, target: "/t/acme/oauth2/token", body: "grant_type=client_credentials"},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		{name: "path tenant home elsewhere", req: request{method: http.MethodPost, target: "/t/globex/oauth2/token", body: "grant_type=client_credentials"},
			wantRoute: routing.RouteForwarded, wantBy: "us-1"},
		{name: "header tenant home elsewhere", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "globex"}},
			wantRoute: routing.RouteForwarded, wantBy: "us-1"},
		{name: "header agrees with path", req: request{target: "/t/acme/jwks", header: map[string]string{routing.TenantHeader: "acme"}},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		// A client's hop header is a forgery (hops arrive on the peer listener): routed anyway.
		{name: "client's hop header is ignored", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "globex", routing.HopHeader: "ap/ap-1"}},
			wantRoute: routing.RouteForwarded, wantBy: "us-1"},
		{name: "client's hop header on a /t/ path", req: request{target: "/t/globex/jwks", header: map[string]string{routing.HopHeader: "ap/ap-1"}},
			wantRoute: routing.RouteForwarded, wantBy: "us-1"},
		{name: "unknown tenant", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "nobody"}},
			wantRoute: routing.RouteLocal, wantBy: "local"},
		{name: "home region without a ready node", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "initech"}},
			wantRoute: routing.RouteDegraded, wantBy: "local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", nil)
			f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
			resp, body := f.do(t, tt.req)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get(routing.RouteHeader); got != tt.wantRoute {
				t.Errorf("%s = %q, want %q", routing.RouteHeader, got, tt.wantRoute)
			}
			if want := "served by " + tt.wantBy; body != want {
				t.Errorf("body = %q, want %q", body, want)
			}
			wantVia, wantLocal, wantPeer := "", 1, 0
			if tt.wantRoute == routing.RouteForwarded {
				wantVia, wantLocal, wantPeer = self, 0, 1
			}
			if got := resp.Header.Get(routing.ViaHeader); got != wantVia {
				t.Errorf("%s = %q, want %q", routing.ViaHeader, got, wantVia)
			}
			if got := f.local.count(); got != wantLocal {
				t.Errorf("local handler served %d requests, want %d", got, wantLocal)
			}
			if got := us1Rec.count(); got != wantPeer {
				t.Errorf("peer us-1 served %d requests, want %d", got, wantPeer)
			}
			if got := f.local.requests(); len(got) == 1 && got[0].Body != tt.req.body {
				t.Errorf("local handler got body %q, want %q", got[0].Body, tt.req.body)
			}
		})
	}
}

func TestRouterForwardsWholeRequest(t *testing.T) {
	t.Parallel()
	us1, us1Rec := peer(t, "us", "us-1", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Peer", "us-1")
		w.Header().Set(routing.RouteHeader, routing.RouteLocal) // the relay says forwarded
		w.Header().Set("Keyplane-Served-By", "us/us-1")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"u1"}`)
	})
	f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
	const body = `{"name":"ada","email":"ada@example.com"}`
	resp, got := f.do(t, request{method: http.MethodPost, target: "/v1/users?dry_run=1", body: body, header: map[string]string{
		routing.TenantHeader: "globex",
		"Authorization":      "Bearer tok-123",
		"Content-Type":       "application/json",
		"Connect-Timeout-Ms": "5000",
		"X-Request-Id":       "req-1",
	}})

	t.Run("response", func(t *testing.T) {
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("status = %d, want 201", resp.StatusCode)
		}
		if got != `{"id":"u1"}` {
			t.Errorf("body = %q, want the peer's", got)
		}
		for k, want := range map[string]string{
			routing.RouteHeader: routing.RouteForwarded,
			routing.ViaHeader:   self,
			"X-Peer":            "us-1",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("response %s = %q, want %q", k, got, want)
			}
		}
		if got := f.local.count(); got != 0 {
			t.Errorf("local handler served %d requests, want 0", got)
		}
	})

	t.Run("request the peer saw", func(t *testing.T) {
		reqs := us1Rec.requests()
		if len(reqs) != 1 {
			t.Fatalf("peer saw %d requests, want 1", len(reqs))
		}
		r := reqs[0]
		if r.Method != http.MethodPost || r.URI != "/v1/users?dry_run=1" {
			t.Errorf("peer saw %s %s, want POST /v1/users?dry_run=1", r.Method, r.URI)
		}
		if r.Body != body {
			t.Errorf("peer saw body %q, want %q", r.Body, body)
		}
		for k, want := range map[string]string{
			routing.HopHeader:    self + "; ip=127.0.0.1", // no hop key: unsigned
			routing.EpochHeader:  "7",
			routing.TenantHeader: "globex",
			"Authorization":      "Bearer tok-123",
			"Content-Type":       "application/json",
			"X-Request-Id":       "req-1",
		} {
			if got := r.Header.Get(k); got != want {
				t.Errorf("peer saw %s = %q, want %q", k, got, want)
			}
		}
		ms, err := strconv.ParseInt(r.Header.Get("Connect-Timeout-Ms"), 10, 64)
		if err != nil || ms <= 0 || ms > 5000 {
			t.Errorf("peer saw Connect-Timeout-Ms %q, want 1..5000", r.Header.Get("Connect-Timeout-Ms"))
		}
	})
}

func TestRouterKeepsDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		header     map[string]string
		wantHeader string // the timeout header the peer sees
		absent     string // a timeout header the peer must not see
		wantMaxMs  int64
	}{
		{name: "connect", header: map[string]string{"Connect-Timeout-Ms": "3000"},
			wantHeader: "Connect-Timeout-Ms", absent: "Grpc-Timeout", wantMaxMs: 3000},
		{name: "grpc", header: map[string]string{"Grpc-Timeout": "3S", "Content-Type": "application/grpc"},
			wantHeader: "Grpc-Timeout", absent: "Connect-Timeout-Ms", wantMaxMs: 3000},
		{name: "none: the forward timeout", header: map[string]string{},
			wantHeader: "Connect-Timeout-Ms", absent: "Grpc-Timeout", wantMaxMs: 10_000},
		{name: "longer than the forward timeout", header: map[string]string{"Connect-Timeout-Ms": "60000"},
			wantHeader: "Connect-Timeout-Ms", absent: "Grpc-Timeout", wantMaxMs: 10_000},
		// A value that overflows a time.Duration must be capped, not turned into an
		// expired deadline that makes the router serve degraded.
		{name: "overflowing connect timeout", header: map[string]string{"Connect-Timeout-Ms": "9223372036854775807"},
			wantHeader: "Connect-Timeout-Ms", absent: "Grpc-Timeout", wantMaxMs: 10_000},
		{name: "overflowing grpc timeout", header: map[string]string{"Grpc-Timeout": "99999999H", "Content-Type": "application/grpc"},
			wantHeader: "Grpc-Timeout", absent: "Connect-Timeout-Ms", wantMaxMs: 10_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", nil)
			f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
			tt.header[routing.TenantHeader] = "globex"
			resp, _ := f.do(t, request{method: http.MethodPost, target: "/v1/x", body: "{}", header: tt.header})
			if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteForwarded {
				t.Fatalf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
			}
			reqs := us1Rec.requests()
			if len(reqs) != 1 {
				t.Fatalf("peer saw %d requests, want 1", len(reqs))
			}
			v := reqs[0].Header.Get(tt.wantHeader)
			ms, err := strconv.ParseInt(strings.TrimSuffix(v, "m"), 10, 64)
			if err != nil || ms <= 0 || ms > tt.wantMaxMs {
				t.Errorf("peer saw %s %q, want 1..%d ms", tt.wantHeader, v, tt.wantMaxMs)
			}
			if tt.wantHeader == "Grpc-Timeout" && !strings.HasSuffix(v, "m") {
				t.Errorf("peer saw Grpc-Timeout %q, want milliseconds", v)
			}
			if got := reqs[0].Header.Get(tt.absent); got != "" {
				t.Errorf("peer saw %s %q, want none", tt.absent, got)
			}
		})
	}
}

func TestRouterHopCarriesClientIP(t *testing.T) {
	t.Parallel()
	key, other := routing.HopKey("cluster secret"), routing.HopKey("another cluster")
	tests := []struct {
		name                  string
		forwarderKey, peerKey []byte
		wantHost              string
	}{
		// Over h2c (no mutual TLS) only a signed IP is taken; otherwise the address is
		// unknown, never the forwarder's (finding 6 of issue 12).
		{name: "shared key", forwarderKey: key, peerKey: key, wantHost: "203.0.113.7"},
		{name: "no key", wantHost: ""},
		{name: "peer without key", forwarderKey: key, wantHost: ""},
		{name: "forwarder without key", peerKey: key, wantHost: ""},
		{name: "different keys", forwarderKey: key, peerKey: other, wantHost: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The home node: a Router in region us in front of a recorder.
			home := &recorder{name: "us-1"}
			homeTenants := newFakeTenants()
			homeTenants.home("globex", "us", 7)
			homeRouter, err := routing.NewRouter(routing.Config{Region: "us", NodeID: "us-1",
				Directory: routing.NewDirectory(homeTenants, time.Hour), Peers: fakePeers{},
				HopKey: tt.peerKey, Metrics: prometheus.NewRegistry()}, home)
			if err != nil {
				t.Fatal(err)
			}
			us1 := member("us", "us-1", startH2C(t, homeRouter.PeerHandler()).URL)
			f := newFixture(t, nil, fakePeers{"us": {us1}}, func(c *routing.Config) { c.HopKey = tt.forwarderKey })

			// The client's address is only visible to the forwarder: call it directly.
			req := httptest.NewRequest(http.MethodGet, "/v1/users", nil)
			req.RemoteAddr = "203.0.113.7:5555"
			req.Header.Set(routing.TenantHeader, "globex")
			w := httptest.NewRecorder()
			f.router.ServeHTTP(w, req)
			if got := w.Header().Get(routing.RouteHeader); got != routing.RouteForwarded {
				t.Fatalf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
			}
			reqs := home.requests()
			if len(reqs) != 1 {
				t.Fatalf("home saw %d requests, want 1", len(reqs))
			}
			host, _, _ := net.SplitHostPort(reqs[0].RemoteAddr)
			if host != tt.wantHost {
				t.Errorf("home saw RemoteAddr %q, want host %s", reqs[0].RemoteAddr, tt.wantHost)
			}
		})
	}

	t.Run("forged by a client", func(t *testing.T) {
		t.Parallel()
		home := &recorder{name: "us-1"}
		homeTenants := newFakeTenants()
		homeTenants.home("globex", "us", 7)
		homeRouter, err := routing.NewRouter(routing.Config{Region: "us", NodeID: "us-1",
			Directory: routing.NewDirectory(homeTenants, time.Hour), Peers: fakePeers{},
			HopKey: key, Metrics: prometheus.NewRegistry()}, home)
		if err != nil {
			t.Fatal(err)
		}
		srv := startH2C(t, homeRouter.PeerHandler())
		forged := "eu/eu-1; ip=198.51.100.1; ts=" + strconv.FormatInt(time.Now().Unix(), 10) + "; sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		resp, _ := send(t, srv.Client(), srv.URL, request{target: "/v1/users",
			header: map[string]string{routing.TenantHeader: "globex", routing.HopHeader: forged}})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status = %d, want 200", resp.StatusCode)
		}
		reqs := home.requests()
		if len(reqs) != 1 {
			t.Fatalf("home saw %d requests, want 1", len(reqs))
		}
		if reqs[0].RemoteAddr != "" {
			t.Errorf("home saw RemoteAddr %q, want none (neither the forged IP nor the connection's)", reqs[0].RemoteAddr)
		}
	})
}

func TestRouterRelaysTrailers(t *testing.T) {
	t.Parallel()
	// HTTP/1.1 carries trailers only in a chunked body. When the home node streams
	// its body (no Content-Length), a relay that flushes as it copies keeps the body
	// chunked and the trailers with it for an HTTP/1.1 caller, as
	// httputil.ReverseProxy does. A short body the home node sent whole has a length,
	// so those cases are checked over h2c only.
	peers := []struct {
		name  string
		http1 bool // HTTP/1.1 callers must get the trailers too
		h     http.HandlerFunc
	}{
		{name: "undeclared trailers", h: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "payload")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
		}},
		{name: "flushed body", http1: true, h: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "payload")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
		}},
		{name: "declared trailers", h: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "payload")
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set("Grpc-Message", "ok")
		}},
	}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	clients := []struct {
		name  string
		http1 bool
		c     *http.Client
	}{
		{name: "h2c client", c: &http.Client{Transport: h2c}},
		{name: "http1 client", http1: true, c: &http.Client{}},
	}
	for _, p := range peers {
		for _, c := range clients {
			if c.http1 && !p.http1 {
				continue
			}
			t.Run(p.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				us1, _ := peer(t, "us", "us-1", p.h)
				f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
				resp, body := send(t, c.c, f.front.URL, request{method: http.MethodPost, target: "/keyplane.v1.AuthService/Check",
					body: "\x00\x00\x00\x00\x00", header: map[string]string{routing.TenantHeader: "globex", "Content-Type": "application/grpc", "Te": "trailers"}})
				if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteForwarded {
					t.Fatalf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
				}
				if body != "payload" {
					t.Errorf("body = %q, want %q", body, "payload")
				}
				for k, want := range map[string]string{"Grpc-Status": "0", "Grpc-Message": "ok"} {
					if got := resp.Trailer.Get(k); got != want {
						t.Errorf("trailer %s = %q, want %q (trailers %v, Content-Length %d)", k, got, want, resp.Trailer, resp.ContentLength)
					}
				}
			})
		}
	}
}

// A streamed response reaches the caller as the home node sends it (server-streaming
// RPCs), not when the home node ends it.
func TestRouterStreamsBody(t *testing.T) {
	t.Parallel()
	var timedOut atomic.Bool
	release := make(chan struct{})
	us1, _ := peer(t, "us", "us-1", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release: // the caller got the first message
		case <-time.After(2 * time.Second):
			timedOut.Store(true)
		}
		_, _ = io.WriteString(w, "second")
	})
	f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodPost, f.front.URL+"/keyplane.v1.AuthService/Watch", strings.NewReader("\x00\x00\x00\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(routing.TenantHeader, "globex")
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := (&http.Client{Transport: h2c}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("read the first message: %v", err)
	}
	close(release)
	if string(first) != "first" {
		t.Errorf("first message = %q, want %q", first, "first")
	}
	if timedOut.Load() {
		t.Errorf("the first message arrived only after the home node gave up waiting: the relay buffers streamed bodies")
	}
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second" {
		t.Errorf("rest = %q, want %q", rest, "second")
	}
}

// forwardUntil sends req until done reports true, at most 64 times (targets are
// shuffled, so a given order shows up by chance), checking every answer with check.
func forwardUntil(t *testing.T, f *fixture, req request, check func(t *testing.T, resp *http.Response, body string), done func() bool) int {
	t.Helper()
	for i := range 64 {
		resp, body := f.do(t, req)
		check(t, resp, body)
		if t.Failed() || done() {
			return i + 1
		}
	}
	t.Fatalf("condition not reached after 64 requests")
	return 0
}

func TestRouterTriesNextNode(t *testing.T) {
	t.Parallel()
	wantServedByUS2 := func(t *testing.T, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusOK || body != "served by us-2" || resp.Header.Get(routing.RouteHeader) != routing.RouteForwarded {
			t.Errorf("got %d %q route %q, want 200 %q route %q", resp.StatusCode, body,
				resp.Header.Get(routing.RouteHeader), "served by us-2", routing.RouteForwarded)
		}
	}
	post := request{method: http.MethodPost, target: "/v1/users", body: `{"name":"ada"}`,
		header: map[string]string{routing.TenantHeader: "globex"}}

	t.Run("connection refused, request not sent", func(t *testing.T) {
		t.Parallel()
		us2, us2Rec := peer(t, "us", "us-2", nil)
		f := newFixture(t, nil, fakePeers{"us": {refused(t, "us", "us-1"), us2}},
			func(c *routing.Config) { c.DownFor = time.Nanosecond })
		n := forwardUntil(t, f, post, wantServedByUS2, func() bool {
			return metric(t, f.reg, "keyplane_forward_failures_total", "home_region", "us") >= 1
		})
		if got := us2Rec.count(); got != n {
			t.Errorf("us-2 served %d of %d requests, want all", got, n)
		}
		for _, r := range us2Rec.requests() {
			if r.Body != post.body {
				t.Errorf("us-2 saw body %q, want %q", r.Body, post.body)
			}
		}
		if got := f.local.count(); got != 0 {
			t.Errorf("local handler served %d requests, want 0", got)
		}
	})

	t.Run("failed node stays out of rotation", func(t *testing.T) {
		t.Parallel()
		us2, _ := peer(t, "us", "us-2", nil)
		f := newFixture(t, nil, fakePeers{"us": {refused(t, "us", "us-1"), us2}},
			func(c *routing.Config) { c.DownFor = time.Hour })
		forwardUntil(t, f, post, wantServedByUS2, func() bool {
			return metric(t, f.reg, "keyplane_forward_failures_total", "home_region", "us") >= 1
		})
		for range 16 {
			resp, body := f.do(t, post)
			wantServedByUS2(t, resp, body)
		}
		if got := metric(t, f.reg, "keyplane_forward_failures_total", "home_region", "us"); got != 1 {
			t.Errorf("forward failures = %v, want 1 (the down node must not be tried again)", got)
		}
	})

	t.Run("idempotent request retried after it was sent", func(t *testing.T) {
		t.Parallel()
		us1, us1Rec := peer(t, "us", "us-1", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
		us2, _ := peer(t, "us", "us-2", nil)
		f := newFixture(t, nil, fakePeers{"us": {us1, us2}}, func(c *routing.Config) {
			c.DownFor = time.Nanosecond
			c.Idempotent = func(*http.Request) bool { return true }
		})
		forwardUntil(t, f, post, wantServedByUS2, func() bool { return us1Rec.count() >= 1 })
	})
}

func TestRouterDegraded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		tenant       string
		peers        func(t *testing.T) fakePeers
		wantFailures float64
	}{
		{name: "no ready node", tenant: "initech", peers: func(*testing.T) fakePeers { return fakePeers{} }},
		{name: "every node refuses", tenant: "globex", wantFailures: 2, peers: func(t *testing.T) fakePeers {
			return fakePeers{"us": {refused(t, "us", "us-1"), refused(t, "us", "us-2")}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil, tt.peers(t), nil)
			const body = `{"name":"ada"}`
			resp, got := f.do(t, request{method: http.MethodPost, target: "/v1/users", body: body,
				header: map[string]string{routing.TenantHeader: tt.tenant}})
			if resp.StatusCode != http.StatusOK || got != "served by local" {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, got, "served by local")
			}
			if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteDegraded {
				t.Errorf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteDegraded)
			}
			reqs := f.local.requests()
			if len(reqs) != 1 || reqs[0].Body != body {
				t.Fatalf("local handler saw %+v, want one request with body %q", reqs, body)
			}
			if got := metric(t, f.reg, "keyplane_forward_failures_total", "home_region", "us"); got != tt.wantFailures {
				t.Errorf("forward failures = %v, want %v", got, tt.wantFailures)
			}
			if got := metric(t, f.reg, "keyplane_route_requests_total", "route", routing.RouteDegraded); got != 1 {
				t.Errorf("degraded routes = %v, want 1", got)
			}
		})
	}
}

func TestRouterFailsAfterSend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		req        request
		wantStatus int
		check      func(t *testing.T, resp *http.Response, body string)
	}{
		{
			name:       "connect",
			req:        request{method: http.MethodPost, target: "/keyplane.v1.AdminService/CreateUser", body: `{}`, header: map[string]string{"Content-Type": "application/json"}},
			wantStatus: http.StatusServiceUnavailable,
			check: func(t *testing.T, _ *http.Response, body string) {
				var e struct{ Code, Message string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "unavailable" || e.Message == "" {
					t.Errorf("body = %q, want a Connect error with code unavailable", body)
				}
			},
		},
		{
			name:       "oauth",
			req:        request{method: http.MethodPost, target: "/t/globex/oauth2/token", body: "grant_type=client_credentials", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
			wantStatus: http.StatusServiceUnavailable,
			check: func(t *testing.T, _ *http.Response, body string) {
				var e struct {
					Error       string `json:"error"`
					Description string `json:"error_description"`
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "temporarily_unavailable" || e.Description == "" {
					t.Errorf("body = %q, want an OAuth temporarily_unavailable error", body)
				}
			},
		},
		{
			name:       "grpc",
			req:        request{method: http.MethodPost, target: "/keyplane.v1.AdminService/CreateUser", body: "\x00\x00\x00\x00\x00", header: map[string]string{"Content-Type": "application/grpc+proto", "Te": "trailers"}},
			wantStatus: http.StatusOK,
			check: func(t *testing.T, resp *http.Response, _ string) {
				status := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status")
				if status != "14" {
					t.Errorf("grpc-status = %q, want 14 (unavailable)", status)
				}
				if got := resp.Header.Get("Content-Type"); got != "application/grpc+proto" {
					t.Errorf("Content-Type = %q, want application/grpc+proto", got)
				}
			},
		},
	}
	abort := func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", abort)
			us2, us2Rec := peer(t, "us", "us-2", abort)
			f := newFixture(t, nil, fakePeers{"us": {us1, us2}}, nil)
			if tt.req.header[routing.TenantHeader] == "" && !strings.HasPrefix(tt.req.target, "/t/") {
				tt.req.header[routing.TenantHeader] = "globex"
			}
			resp, body := f.do(t, tt.req)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			tt.check(t, resp, body)
			if got := f.local.count(); got != 0 {
				t.Errorf("local handler served %d requests, want 0: the home node may have applied it", got)
			}
			if got := us1Rec.count() + us2Rec.count(); got != 1 {
				t.Errorf("home nodes saw %d copies, want exactly 1", got)
			}
			if got := metric(t, f.reg, "keyplane_route_requests_total", "route", "failed"); got != 1 {
				t.Errorf("failed routes = %v, want 1", got)
			}
		})
	}
}

// A 502 or 503 without Keyplane-Served-By comes from a proxy in front of the home
// node, not from keyplane: the forward failed. A keyplane node's own 503 is an answer.
func TestRouterProxyErrors(t *testing.T) {
	t.Parallel()
	answer := func(status int, servedBy string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if servedBy != "" {
				w.Header().Set("Keyplane-Served-By", servedBy)
			}
			http.Error(w, "answer "+strconv.Itoa(status), status)
		}
	}
	post := request{method: http.MethodPost, target: "/v1/users", body: "{}", header: map[string]string{routing.TenantHeader: "globex"}}

	t.Run("keyplane 503 is relayed", func(t *testing.T) {
		t.Parallel()
		us1, _ := peer(t, "us", "us-1", answer(http.StatusServiceUnavailable, "us/us-1"))
		f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
		resp, body := f.do(t, post)
		if resp.StatusCode != http.StatusServiceUnavailable || body != "answer 503\n" {
			t.Errorf("got %d %q, want the home node's 503", resp.StatusCode, body)
		}
		if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteForwarded {
			t.Errorf("%s = %q, want %q", routing.RouteHeader, got, routing.RouteForwarded)
		}
	})

	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable} {
		t.Run("proxy "+strconv.Itoa(status)+" non-idempotent", func(t *testing.T) {
			t.Parallel()
			us1, _ := peer(t, "us", "us-1", answer(status, ""))
			f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
			resp, body := f.do(t, post)
			var e struct{ Code string }
			if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal([]byte(body), &e) != nil || e.Code != "unavailable" {
				t.Errorf("got %d %q, want 503 with code unavailable", resp.StatusCode, body)
			}
			if got := f.local.count(); got != 0 {
				t.Errorf("local handler served %d requests, want 0", got)
			}
		})

		t.Run("proxy "+strconv.Itoa(status)+" idempotent tries the next node", func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", answer(status, ""))
			us2, _ := peer(t, "us", "us-2", nil)
			f := newFixture(t, nil, fakePeers{"us": {us1, us2}}, func(c *routing.Config) {
				c.DownFor = time.Nanosecond
				c.Idempotent = func(*http.Request) bool { return true }
			})
			forwardUntil(t, f, post, func(t *testing.T, resp *http.Response, body string) {
				t.Helper()
				if resp.StatusCode != http.StatusOK || body != "served by us-2" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "served by us-2")
				}
			}, func() bool { return us1Rec.count() >= 1 })
		})
	}
}

// waitCount polls get until ok holds or 10 s have passed, and returns the last value.
func waitCount(get func() int, ok func(int) bool) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := get()
		if ok(v) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slow answers only when the request is cancelled (or the test ends).
func slow(t *testing.T) http.HandlerFunc {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		w.WriteHeader(http.StatusGatewayTimeout)
	}
}

func TestRouterHedges(t *testing.T) {
	t.Parallel()
	get := request{target: "/v1/users/u1", header: map[string]string{routing.TenantHeader: "globex"}}

	t.Run("idempotent", func(t *testing.T) {
		t.Parallel()
		us1, us1Rec := peer(t, "us", "us-slow", slow(t))
		us2, _ := peer(t, "us", "us-fast", nil)
		f := newFixture(t, nil, fakePeers{"us": {us1, us2}}, func(c *routing.Config) {
			c.Idempotent = func(r *http.Request) bool { return r.Method == http.MethodGet }
			c.HedgeAfter = 20 * time.Millisecond
		})
		forwardUntil(t, f, get, func(t *testing.T, resp *http.Response, body string) {
			t.Helper()
			if resp.StatusCode != http.StatusOK || body != "served by us-fast" {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "served by us-fast")
			}
		}, func() bool {
			// Until a request reached the slow node first and was hedged. A hedge alone
			// does not show it: on a loaded machine the fast node, tried first, can be
			// slower than the hedge delay too, and the hedge to the slow node is then
			// cancelled before its handler runs (the CI flake of stop 26).
			return us1Rec.count() >= 1 && metric(t, f.reg, "keyplane_forward_hedges_total", "home_region", "us") >= 1
		})
		if got := f.local.count(); got != 0 {
			t.Errorf("local handler served %d requests, want 0", got)
		}
	})

	t.Run("never a non-idempotent request", func(t *testing.T) {
		t.Parallel()
		us1, us1Rec := peer(t, "us", "us-slow", slow(t))
		us2, us2Rec := peer(t, "us", "us-fast", nil)
		f := newFixture(t, nil, fakePeers{"us": {us1, us2}}, func(c *routing.Config) {
			c.HedgeAfter = 20 * time.Millisecond
			c.DownFor = time.Nanosecond
		})
		post := request{method: http.MethodPost, target: "/v1/users", body: "{}",
			header: map[string]string{routing.TenantHeader: "globex", "Connect-Timeout-Ms": "200"}}
		n := forwardUntil(t, f, post, func(t *testing.T, resp *http.Response, body string) {
			t.Helper()
			switch resp.StatusCode {
			case http.StatusOK: // us-fast answered
			case http.StatusServiceUnavailable: // us-slow timed out; outcome unknown
			default:
				t.Errorf("got %d %q, want 200 from us-fast or 503", resp.StatusCode, body)
			}
		}, func() bool { return us1Rec.count() >= 1 })
		// Each request reached at most one home node: wait until each recorded it
		// (handlers run late on a loaded machine), then a little longer, since a hedged
		// copy would arrive with its original. At most, not exactly: a request whose
		// 200 ms deadline passed before a loaded machine ran its handler reaches none
		// (it is answered 503, outcome unknown; the flake of stop 26).
		seen := func() int { return us1Rec.count() + us2Rec.count() }
		waitCount(seen, func(got int) bool { return got >= n })
		time.Sleep(100 * time.Millisecond)
		if got := seen(); got > n {
			t.Errorf("home nodes saw %d copies of %d requests, want at most one each", got, n)
		}
		if got := metric(t, f.reg, "keyplane_forward_hedges_total", "home_region", "us"); got != 0 {
			t.Errorf("hedges = %v, want 0", got)
		}
	})
}

func TestRouterMisdirected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		newHome string
		ap1     http.HandlerFunc // the ap node's answer; nil: served
		want    int
		wantBy  string
		route   string
	}{
		{name: "rehomed here", newHome: here, want: http.StatusOK, wantBy: "served by local", route: routing.RouteLocal},
		{name: "rehomed to a third region", newHome: "ap", want: http.StatusOK, wantBy: "served by ap-1", route: routing.RouteForwarded},
		{name: "misdirected twice is relayed", newHome: "ap", want: http.StatusMisdirectedRequest, route: routing.RouteForwarded,
			ap1: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set(routing.EpochHeader, "9")
				http.Error(w, "not here either", http.StatusMisdirectedRequest)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tenants := defaultTenants()
			// us-1 is a real Router reading the same tenants table, without a cache.
			us1Local := &recorder{name: "us-1"}
			us1Router, err := routing.NewRouter(routing.Config{Region: "us", NodeID: "us-1",
				Directory: routing.NewDirectory(tenants, time.Nanosecond), Peers: fakePeers{},
				Metrics: prometheus.NewRegistry()}, us1Local)
			if err != nil {
				t.Fatal(err)
			}
			us1 := member("us", "us-1", startH2C(t, us1Router.PeerHandler()).URL)
			ap1, ap1Rec := peer(t, "ap", "ap-1", tt.ap1)
			f := newFixture(t, tenants, fakePeers{"us": {us1}, "ap": {ap1}}, nil)
			req := request{method: http.MethodPost, target: "/v1/users", body: `{"name":"ada"}`,
				header: map[string]string{routing.TenantHeader: "globex"}}

			// Warm the forwarder's cache with globex in us at epoch 7.
			if resp, body := f.do(t, req); body != "served by us-1" {
				t.Fatalf("before the rehome: got %d %q, want %q", resp.StatusCode, body, "served by us-1")
			}
			tenants.home("globex", tt.newHome, 8)
			readsBefore := tenants.readCount()

			resp, body := f.do(t, req)
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.wantBy != "" && body != tt.wantBy {
				t.Errorf("body = %q, want %q", body, tt.wantBy)
			}
			if got := resp.Header.Get(routing.RouteHeader); got != tt.route {
				t.Errorf("%s = %q, want %q", routing.RouteHeader, got, tt.route)
			}
			if got := us1Local.count(); got != 1 {
				t.Errorf("us-1 served %d requests, want 1 (the warm-up only)", got)
			}
			// us-1 reads once to answer 421, the forwarder rereads once.
			if got := tenants.readCount() - readsBefore; got != 2 {
				t.Errorf("tenant reads after the rehome = %d, want 2", got)
			}
			wantAP, wantLocal := 0, 0
			switch tt.newHome {
			case "ap":
				wantAP = 1
			case here:
				wantLocal = 1
			}
			if got := ap1Rec.count(); got != wantAP {
				t.Errorf("ap-1 saw %d requests, want %d", got, wantAP)
			}
			if got := f.local.count(); got != wantLocal {
				t.Errorf("local handler served %d requests, want %d", got, wantLocal)
			}
			if reqs := ap1Rec.requests(); len(reqs) == 1 {
				if got := reqs[0].Header.Get(routing.EpochHeader); got != "8" {
					t.Errorf("ap-1 saw %s %q, want 8", routing.EpochHeader, got)
				}
				if reqs[0].Body != req.body {
					t.Errorf("ap-1 saw body %q, want %q", reqs[0].Body, req.body)
				}
			}
			if reqs := f.local.requests(); len(reqs) == 1 && reqs[0].Body != req.body {
				t.Errorf("local handler saw body %q, want %q", reqs[0].Body, req.body)
			}
		})
	}
}

func TestRouterBodyLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantPeer   int
	}{
		{name: "at the limit", body: strings.Repeat("x", 16), wantStatus: http.StatusOK, wantPeer: 1},
		{name: "one byte over", body: strings.Repeat("x", 17), wantStatus: http.StatusRequestEntityTooLarge},
		{name: "far over", body: strings.Repeat("x", 1<<20), wantStatus: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", nil)
			f := newFixture(t, nil, fakePeers{"us": {us1}}, func(c *routing.Config) { c.MaxBody = 16 })
			resp, _ := f.do(t, request{method: http.MethodPost, target: "/v1/users", body: tt.body,
				header: map[string]string{routing.TenantHeader: "globex"}})
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := us1Rec.count(); got != tt.wantPeer {
				t.Errorf("peer saw %d requests, want %d", got, tt.wantPeer)
			}
			if got := f.local.count(); got != 0 {
				t.Errorf("local handler served %d requests, want 0", got)
			}
		})
	}
}

// TestRouterRefusesAmbiguousTenant: a request that names two tenants (header against
// path, or two headers), or a tenant-scoped one that names none, is refused in the
// caller's protocol before routing: no node serves it, and it counts as "refused".
func TestRouterRefusesAmbiguousTenant(t *testing.T) {
	t.Parallel()
	scoped := func(r *http.Request) bool { return r.URL.Path == "/keyplane.v1.AuthService/ValidateToken" }
	tests := []struct {
		name        string
		req         request
		headers     []string // extra Keyplane-Tenant values
		wantCT      string
		wantInBody  string
		wantGRPC    string
		wantStatus  int
		wantMessage string
	}{
		{name: "header against path", req: request{method: http.MethodPost, target: "/t/globex/oauth2/token", body: "grant_type=client_credentials",
			header: map[string]string{routing.TenantHeader: "acme"}},
			wantStatus: 400, wantInBody: `"error":"invalid_request"`, wantMessage: `names tenant \"acme\" but the path names tenant \"globex\"`},
		{name: "header against path on a hop", req: request{target: "/t/acme/jwks",
			header: map[string]string{routing.TenantHeader: "globex", routing.HopHeader: "us/us-1"}},
			wantStatus: 400, wantInBody: `"error":"invalid_request"`, wantMessage: `names tenant \"globex\" but the path names tenant \"acme\"`},
		{name: "SCIM request naming two tenants", req: request{method: http.MethodPatch, target: "/t/globex/scim/v2/Users/1", body: "{}",
			header: map[string]string{routing.TenantHeader: "acme"}},
			wantStatus: 400, wantInBody: `"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400"`,
			wantMessage: `names tenant \"acme\" but the path names tenant \"globex\"`},
		{name: "two headers", req: request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "acme"}}, headers: []string{"globex"},
			wantStatus: 400, wantInBody: `"code":"invalid_argument"`, wantMessage: "2 Keyplane-Tenant headers"},
		{name: "tenant-scoped Connect call without tenant", req: request{method: http.MethodPost, target: "/keyplane.v1.AuthService/ValidateToken",
			body: "{}", header: map[string]string{"Content-Type": "application/json"}},
			wantStatus: 400, wantInBody: `"code":"invalid_argument"`, wantMessage: "is tenant-scoped; send its tenant_id in the Keyplane-Tenant header"},
		{name: "tenant-scoped gRPC call without tenant", req: request{method: http.MethodPost, target: "/keyplane.v1.AuthService/ValidateToken",
			header: map[string]string{"Content-Type": "application/grpc"}},
			wantStatus: 200, wantGRPC: "3", wantMessage: "is tenant-scoped"},
		{name: "tenant-scoped call without tenant on a hop", req: request{method: http.MethodPost, target: "/keyplane.v1.AuthService/ValidateToken",
			body: "{}", header: map[string]string{"Content-Type": "application/json", routing.HopHeader: "us/us-1"}},
			wantStatus: 400, wantInBody: `"code":"invalid_argument"`, wantMessage: "is tenant-scoped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us1, us1Rec := peer(t, "us", "us-1", nil)
			f := newFixture(t, nil, fakePeers{"us": {us1}}, func(c *routing.Config) { c.NeedsTenant = scoped })
			method := cmp.Or(tt.req.method, http.MethodGet)
			r, err := http.NewRequest(method, f.front.URL+tt.req.target, strings.NewReader(tt.req.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.req.header {
				r.Header.Set(k, v)
			}
			for _, v := range tt.headers {
				r.Header.Add(routing.TenantHeader, v)
			}
			resp, err := f.front.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b) + " grpc-message: " + resp.Header.Get("Grpc-Message")
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantInBody) || resp.Header.Get("Grpc-Status") != tt.wantGRPC {
				t.Errorf("got %d %q grpc-status %q; want %d containing %q, grpc-status %q", resp.StatusCode, body,
					resp.Header.Get("Grpc-Status"), tt.wantStatus, tt.wantInBody, tt.wantGRPC)
			}
			if msg, _ := url.PathUnescape(body); !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("body %q does not say %q", msg, tt.wantMessage)
			}
			if got := f.local.count() + us1Rec.count(); got != 0 {
				t.Errorf("%d nodes served the request, want none", got)
			}
			if got := resp.Header.Get(routing.RouteHeader); got != "" {
				t.Errorf("%s = %q, want none", routing.RouteHeader, got)
			}
			for route, want := range map[string]float64{"refused": 1, routing.RouteLocal: 0, routing.RouteForwarded: 0, routing.RouteDegraded: 0} {
				if got := metric(t, f.reg, "keyplane_route_requests_total", "route", route); got != want {
					t.Errorf("keyplane_route_requests_total{route=%q} = %v, want %v", route, got, want)
				}
			}
		})
	}
}

func TestRouterMetrics(t *testing.T) {
	t.Parallel()
	us1, _ := peer(t, "us", "us-1", nil)
	f := newFixture(t, nil, fakePeers{"us": {us1}}, nil)
	for _, tenant := range []string{"acme", "acme", "", "globex", "initech", "nobody"} {
		h := map[string]string{}
		if tenant != "" {
			h[routing.TenantHeader] = tenant
		}
		f.do(t, request{target: "/v1/users", header: h})
	}
	for route, want := range map[string]float64{
		routing.RouteLocal:     4, // acme twice, no tenant, unknown tenant
		routing.RouteForwarded: 1,
		routing.RouteDegraded:  1,
		"failed":               0,
	} {
		if got := metric(t, f.reg, "keyplane_route_requests_total", "route", route); got != want {
			t.Errorf("keyplane_route_requests_total{route=%q} = %v, want %v", route, got, want)
		}
	}
	if got := metric(t, f.reg, "keyplane_forward_seconds", "home_region", "us"); got != 1 {
		t.Errorf("keyplane_forward_seconds{home_region=us} count = %v, want 1", got)
	}
}

func TestNewRouter(t *testing.T) {
	t.Parallel()
	dir := routing.NewDirectory(newFakeTenants(), 0)
	local := http.NotFoundHandler()
	tests := []struct {
		name    string
		cfg     routing.Config
		wantErr bool
	}{
		{name: "minimal", cfg: routing.Config{Region: here, NodeID: "eu-1", Directory: dir, Peers: fakePeers{}}},
		{name: "no directory", cfg: routing.Config{Region: here, NodeID: "eu-1", Peers: fakePeers{}}, wantErr: true},
		{name: "no peers", cfg: routing.Config{Region: here, NodeID: "eu-1", Directory: dir}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := routing.NewRouter(tt.cfg, local)
			if (err != nil) != tt.wantErr {
				t.Errorf("NewRouter error = %v, want error %v", err, tt.wantErr)
			}
		})
	}

	t.Run("two routers share a process", func(t *testing.T) {
		t.Parallel()
		for _, node := range []string{"eu-1", "eu-2"} {
			if _, err := routing.NewRouter(routing.Config{Region: here, NodeID: node, Directory: dir, Peers: fakePeers{}}, local); err != nil {
				t.Errorf("NewRouter(%s) without a registry: %v", node, err)
			}
		}
	})
	t.Run("registering twice is an error, not a panic", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		cfg := routing.Config{Region: here, NodeID: "eu-1", Directory: dir, Peers: fakePeers{}, Metrics: reg}
		if _, err := routing.NewRouter(cfg, local); err != nil {
			t.Fatalf("first NewRouter: %v", err)
		}
		if _, err := routing.NewRouter(cfg, local); err == nil {
			t.Errorf("second NewRouter on the same registry: nil error, want one")
		}
	})
}

func TestTenantOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target  string
		headers []string
		want    string
		wantErr error
	}{
		{target: "/v1/users", want: ""},
		{target: "/v1/users", headers: []string{"acme"}, want: "acme"},
		{target: "/t/acme/oauth2/token", want: "acme"},
		{target: "/t/acme", want: "acme"},
		{target: "/t/", want: ""},
		{target: "/tenants/acme", want: ""},
		{target: "/t/acme/jwks", headers: []string{"acme"}, want: "acme"},
		{target: "/t/a%63me/jwks", want: "acme"},
		{target: "/t/globex/jwks", headers: []string{"acme"}, wantErr: routing.ErrTenantMismatch},
		{target: "/t/ac%2Fme/jwks", headers: []string{"ac"}, wantErr: routing.ErrTenantMismatch},
		{target: "/v1/users", headers: []string{"acme", "globex"}, wantErr: routing.ErrTenantMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.target+"+"+strings.Join(tt.headers, ","), func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			for _, h := range tt.headers {
				r.Header.Add(routing.TenantHeader, h)
			}
			got, err := routing.TenantOf(r)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("TenantOf(%s, headers %q) = %q, %v; want %q, %v", tt.target, tt.headers, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestRouterResidencyStrict: a residency-strict tenant is never served degraded
// outside its regions: the router refuses in the caller's protocol, names the
// residency and counts it; inside its regions (or relaxed) it is served degraded as
// before. Every answer about the tenant lists its regions.
func TestRouterResidencyStrict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		serve     string // the tenant's ServeRegions
		wantCode  int
		wantRoute string
	}{
		{"strict, served only in its home region", "us", http.StatusServiceUnavailable, ""},
		{"strict, in a super region with this one", "eu,us", http.StatusOK, routing.RouteDegraded},
		{"relaxed", "", http.StatusOK, routing.RouteDegraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tenants := newFakeTenants()
			tenants.tenants["vault"] = schema.Tenant{ID: "vault", Name: "vault", HomeRegion: "us", PlacementEpoch: 1, ServeRegions: tt.serve}
			f := newFixture(t, tenants, fakePeers{}, nil) // no ready node in us
			resp, got := f.do(t, request{method: http.MethodPost, target: "/v1/users", body: `{}`,
				header: map[string]string{routing.TenantHeader: "vault", "Content-Type": "application/json"}})
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, got, tt.wantCode)
			}
			if resp.Header.Get(routing.ServeRegionsHeader) != tt.serve {
				t.Errorf("%s = %q, want %q", routing.ServeRegionsHeader, resp.Header.Get(routing.ServeRegionsHeader), tt.serve)
			}
			if tt.wantCode != http.StatusOK {
				if !strings.Contains(got, "residency-strict") || len(f.local.requests()) != 0 {
					t.Errorf("refusal %q (local saw %d requests), want one naming the residency and nothing served", got, len(f.local.requests()))
				}
				if v := metric(t, f.reg, "keyplane_route_requests_total", "route", "residency_refused"); v != 1 {
					t.Errorf("residency_refused routes = %v, want 1", v)
				}
				return
			}
			if r := resp.Header.Get(routing.RouteHeader); r != tt.wantRoute {
				t.Errorf("%s = %q, want %q", routing.RouteHeader, r, tt.wantRoute)
			}
		})
	}
}

// TestRouterDirectoryUnreadable: a request whose tenant's placement cannot be read is
// refused, never served here, since where the tenant may be served is unknown (the
// db-outage drill once had a residency-strict tenant served outside its regions: the
// lookup failed, the local handler's read a moment later succeeded). A tenant that
// does not exist, or a malformed id, still gets the local handler's precise answer.
func TestRouterDirectoryUnreadable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		err       error
		wantCode  int
		wantLocal int
	}{
		{"database unavailable", fmt.Errorf("%w: 08006", schema.ErrUnavailable), http.StatusServiceUnavailable, 0},
		{"unclassified database error", errors.New("database error XX000"), http.StatusServiceUnavailable, 0},
		{"tenant not found", fmt.Errorf("%w: tenant %q", schema.ErrNotFound, "vault"), http.StatusOK, 1},
		{"malformed tenant id", &schema.FieldError{Field: "tenant_id", Reason: "too long"}, http.StatusOK, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tenants := newFakeTenants()
			tenants.fail(tt.err)
			f := newFixture(t, tenants, fakePeers{}, nil)
			resp, body := f.do(t, request{method: http.MethodPost, target: "/v1/users", body: `{}`,
				header: map[string]string{routing.TenantHeader: "vault", "Content-Type": "application/json"}})
			if resp.StatusCode != tt.wantCode || f.local.count() != tt.wantLocal {
				t.Fatalf("got %d %q with %d requests served locally, want %d and %d", resp.StatusCode, body, f.local.count(), tt.wantCode, tt.wantLocal)
			}
			wantUnplaced := 0.0
			if tt.wantCode != http.StatusOK {
				wantUnplaced = 1
				if !strings.Contains(body, "tenant vault") || strings.Contains(body, "XX000") || strings.Contains(body, "08006") {
					t.Errorf("refusal %q: want one naming the tenant, without the database's error", body)
				}
			}
			if v := metric(t, f.reg, "keyplane_route_requests_total", "route", "unplaced"); v != wantUnplaced {
				t.Errorf("unplaced routes = %v, want %v", v, wantUnplaced)
			}
		})
	}
}
