package front_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/deploy/front"
)

// backend is a real HTTP server standing in for a keyplane node: /readyz answers
// ready, every other request is counted and answered with the backend's name, or,
// with drop set, read whole and then cut off without an answer (a node that died
// while serving it).
type backend struct {
	name   string
	srv    *httptest.Server
	hits   atomic.Int64
	drop   atomic.Bool
	notOK  atomic.Bool
	lastFF atomic.Value // X-Forwarded-For of the last request
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if b.notOK.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok")
			return
		}
		b.hits.Add(1)
		b.lastFF.Store(r.Header.Get("X-Forwarded-For"))
		_, _ = io.Copy(io.Discard, r.Body)
		if b.drop.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		_, _ = io.WriteString(w, b.name+" "+r.Method+" "+r.URL.Path)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

type fixture struct {
	fr       *front.Front
	srv      *httptest.Server
	backends map[string]*backend
	reg      *prometheus.Registry
}

// newFixture starts one backend per "region/name" and a front over them, and runs
// one health round.
func newFixture(t *testing.T, prefer string, names ...string) *fixture {
	t.Helper()
	fx := &fixture{backends: map[string]*backend{}, reg: prometheus.NewRegistry()}
	cfg := front.DefaultConfig()
	cfg.PreferRegion, cfg.Metrics = prefer, fx.reg
	for _, n := range names {
		region, name, _ := strings.Cut(n, "/")
		b := newBackend(t, n)
		fx.backends[n] = b
		cfg.Nodes = append(cfg.Nodes, front.Node{Region: region, Name: name, URL: b.srv.URL})
	}
	fr, err := front.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fr.Close)
	fr.Check(context.Background())
	fx.fr = fr
	fx.srv = httptest.NewServer(fr)
	t.Cleanup(fx.srv.Close)
	return fx
}

func (fx *fixture) do(t *testing.T, method, path string, hdr map[string]string) (int, string, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(url.Values{"token": {"x"}}.Encode())
	}
	req, err := http.NewRequest(method, fx.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get(front.NodeHeader)
}

// metric is the value of the series of name whose label is value.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

func names(ns []front.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Region+"/"+n.Name)
	}
	return out
}

func TestOrder(t *testing.T) {
	t.Parallel()
	fx := newFixture(t, "", "a/1", "a/2", "b/1", "c/1")

	t.Run("preferred region first, round robin within it, then the others", func(t *testing.T) {
		firsts := map[string]int{}
		for range 4 {
			got := names(fx.fr.Order("a"))
			if len(got) != 4 || !strings.HasPrefix(got[0], "a/") || !strings.HasPrefix(got[1], "a/") {
				t.Fatalf("order preferring a = %v, want both a nodes first, then b and c", got)
			}
			firsts[got[0]]++
		}
		if firsts["a/1"] != 2 || firsts["a/2"] != 2 {
			t.Errorf("first choices over 4 calls = %v, want a/1 and a/2 twice each", firsts)
		}
	})
	t.Run("no preference: every node in turn", func(t *testing.T) {
		firsts := map[string]int{}
		for range 8 {
			firsts[names(fx.fr.Order(""))[0]]++
		}
		for _, n := range []string{"a/1", "a/2", "b/1", "c/1"} {
			if firsts[n] != 2 {
				t.Errorf("first choices over 8 calls = %v, want each node twice", firsts)
				break
			}
		}
	})
	t.Run("an unknown preferred region prefers nothing", func(t *testing.T) {
		if got := fx.fr.Order("nowhere"); len(got) != 4 {
			t.Errorf("order preferring an unknown region = %v, want all four", names(got))
		}
	})
	t.Run("a node failing /readyz leaves the rotation and comes back", func(t *testing.T) {
		fx.backends["a/1"].notOK.Store(true)
		fx.fr.Check(context.Background())
		got := names(fx.fr.Order("a"))
		if slices.Contains(got, "a/1") || got[0] != "a/2" {
			t.Errorf("order with a/1 not ready = %v, want a/2 first and no a/1", got)
		}
		if v := metric(t, fx.reg, "keyplane_front_healthy_nodes", "region", "a"); v != 1 {
			t.Errorf("keyplane_front_healthy_nodes{region=a} = %v, want 1", v)
		}
		fx.backends["a/1"].notOK.Store(false)
		fx.fr.Check(context.Background())
		if got := fx.fr.Order("a"); len(got) != 4 {
			t.Errorf("order after a/1 is ready again = %v, want all four", names(got))
		}
	})
}

func TestRetryRules(t *testing.T) {
	t.Parallel()
	const (
		token      = "/t/acme/oauth2/token"
		introspect = "/t/acme/oauth2/introspect"
		discovery  = "/t/acme/.well-known/openid-configuration"
	)
	tests := []struct {
		name     string
		method   string
		path     string
		hdr      map[string]string
		fault    string // what happens to the preferred node after the health check: "down" (refuses connections) or "drop" (reads the request, then cuts the connection)
		wantCode int
		wantBy   string // the backend that answered, "" for none
	}{
		{"a read goes to the next node when the preferred one is down", http.MethodGet, discovery, nil, "down", http.StatusOK, "b/1"},
		{"a read goes to the next node when the preferred one drops it", http.MethodGet, discovery, nil, "drop", http.StatusOK, "b/1"},
		{"introspection is safe to repeat after a drop", http.MethodPost, introspect, nil, "drop", http.StatusOK, "b/1"},
		{"token minting that never reached a node goes to the next", http.MethodPost, token, nil, "down", http.StatusOK, "b/1"},
		{"token minting that reached a node is never sent again", http.MethodPost, token, nil, "drop", http.StatusBadGateway, ""},
		{"token minting with an idempotency key is sent again", http.MethodPost, token, map[string]string{"Idempotency-Key": "k1"}, "drop", http.StatusOK, "b/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fx := newFixture(t, "a", "a/1", "b/1")
			pref := fx.backends["a/1"]
			switch tt.fault {
			case "down":
				pref.srv.Close()
			case "drop":
				pref.drop.Store(true)
			}
			code, body, by := fx.do(t, tt.method, tt.path, tt.hdr)
			if code != tt.wantCode {
				t.Fatalf("%s %s: status %d (%s), want %d", tt.method, tt.path, code, body, tt.wantCode)
			}
			other := fx.backends["b/1"].hits.Load()
			if tt.wantBy == "" {
				if other != 0 || !strings.Contains(body, "outcome is unknown") {
					t.Errorf("got body %q and %d requests at b/1, want an outcome-unknown error and none sent again", body, other)
				}
				if v := metric(t, fx.reg, "keyplane_front_unanswered_total", "reason", "failed_after_send"); v != 1 {
					t.Errorf("keyplane_front_unanswered_total{reason=failed_after_send} = %v, want 1", v)
				}
				return
			}
			if !strings.HasPrefix(body, tt.wantBy+" ") || by != tt.wantBy {
				t.Errorf("answered by %q (header %q), want %s", body, by, tt.wantBy)
			}
			// The failed node is out of rotation until its next health check.
			if got := names(fx.fr.Order("a")); slices.Contains(got, "a/1") {
				t.Errorf("order after a/1 failed = %v, want no a/1", got)
			}
		})
	}

	t.Run("the caller's region header wins over the front's preference", func(t *testing.T) {
		t.Parallel()
		fx := newFixture(t, "a", "a/1", "b/1")
		for range 3 {
			if _, _, by := fx.do(t, http.MethodGet, discovery, map[string]string{front.RegionHeader: "b"}); by != "b/1" {
				t.Fatalf("with %s: b the front chose %q, want b/1", front.RegionHeader, by)
			}
		}
		if _, _, by := fx.do(t, http.MethodGet, discovery, nil); by != "a/1" {
			t.Errorf("without the header the front chose %q, want a/1 (--prefer-region)", by)
		}
	})
	t.Run("no healthy node: 503 naming the cause, nothing sent", func(t *testing.T) {
		t.Parallel()
		fx := newFixture(t, "", "a/1", "b/1")
		for _, b := range fx.backends {
			b.notOK.Store(true)
		}
		fx.fr.Check(context.Background())
		code, body, _ := fx.do(t, http.MethodPost, token, nil)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "temporarily_unavailable") || !strings.Contains(body, "no healthy keyplane node") {
			t.Errorf("got %d %s, want 503 temporarily_unavailable naming no healthy node", code, body)
		}
		for n, b := range fx.backends {
			if h := b.hits.Load(); h != 0 {
				t.Errorf("%s got %d requests, want 0", n, h)
			}
		}
	})
	t.Run("a client's X-Forwarded-For is replaced by its real address", func(t *testing.T) {
		t.Parallel()
		fx := newFixture(t, "a", "a/1")
		fx.do(t, http.MethodGet, discovery, map[string]string{"X-Forwarded-For": "203.0.113.7"})
		if got := fx.backends["a/1"].lastFF.Load(); got != "127.0.0.1" {
			t.Errorf("node saw X-Forwarded-For %q, want 127.0.0.1 (the client's spoofed value dropped)", got)
		}
	})
}

// TestHTTP2 sends an HTTP/2 (h2c) request with a trailer-bearing answer, as gRPC
// clients do, through a front that serves h2c to a node that answers over h2c.
func TestHTTP2(t *testing.T) {
	t.Parallel()
	node := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = io.WriteString(w, r.Proto)
		w.Header().Set("Grpc-Status", "0")
	}))
	node.Config.Protocols = new(http.Protocols)
	node.Config.Protocols.SetHTTP1(true)
	node.Config.Protocols.SetUnencryptedHTTP2(true)
	node.Start()
	defer node.Close()
	cfg := front.DefaultConfig()
	cfg.Nodes = []front.Node{{Region: "a", URL: node.URL}}
	fr, err := front.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	fr.Check(context.Background())
	srv := httptest.NewUnstartedServer(fr)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(srv.URL+"/keyplane.v1.AuthService/ValidateToken", "application/grpc", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" || resp.Proto != "HTTP/2.0" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("through the front: %s, node saw %q, trailer %q; want HTTP/2 both ways and the trailer", resp.Proto, b, resp.Trailer.Get("Grpc-Status"))
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := []front.Node{{Region: "a", URL: "http://127.0.0.1:1"}}
	tests := []struct {
		name string
		cfg  front.Config
		want string
	}{
		{"fine", front.Config{Nodes: ok}, ""},
		{"no nodes", front.Config{}, "nodes: give at least one"},
		{"no region", front.Config{Nodes: []front.Node{{URL: "http://x"}}}, "nodes[0]: region is empty"},
		{"bad url", front.Config{Nodes: []front.Node{{Region: "a", URL: "ftp://x"}}}, `nodes[0]: url "ftp://x"`},
		{"twice", front.Config{Nodes: append(ok, ok[0])}, "listed twice"},
		{"prefer unknown", front.Config{Nodes: ok, PreferRegion: "b"}, `prefer region: "b" has no node`},
		{"timeout over interval", front.Config{Nodes: ok, HealthInterval: 1, HealthTimeout: 2}, "health timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
