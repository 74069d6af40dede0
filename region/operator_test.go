package region_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema/schematest"
)

// peersOf is a gossip view for a routed test node: these members, none ready
// elsewhere.
type peersOf []routing.Member

func (p peersOf) Ready(string) []routing.Member { return nil }
func (p peersOf) Members() []routing.Member     { return p }

// served is a node serving on real listeners: its API URL, and its operator URL when
// cfg.OperatorListener is set.
type served struct{ api, ops string }

// serveRouted serves a node with multi-region routing on (the router in front, peers
// as gossip sees them), and its operator listener when cfg asks for one.
func serveRouted(t *testing.T, cfg region.Config, peers peersOf) served {
	t.Helper()
	store := schematest.NewStore(t, "us-east")
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ln := listen()
	if cfg.IssuerBase == "" {
		cfg.IssuerBase = "http://" + ln.Addr().String()
	}
	n, err := region.New(cfg, store, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), prometheus.NewRegistry())
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	if peers != nil {
		if err := n.EnableRouting(region.Routing{Peers: peers, PeerListener: listen()}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := served{api: "http://" + ln.Addr().String()}
	done := make(chan error, 2)
	go func() { done <- n.Serve(ctx, ln) }()
	waits := 1
	if cfg.OperatorListener {
		ops := listen()
		out.ops = "http://" + ops.Addr().String()
		go func() { done <- n.ServeOperator(ctx, ops) }()
		waits++
	}
	t.Cleanup(func() {
		cancel()
		for range waits {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return out
}

// get sends GET url with the bearer token (none when ""), and returns the status and
// body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

var gossipView = peersOf{{Region: "us-east", NodeID: "us-east-1", URL: "http://10.0.0.1:8080", Ready: true, State: "alive"},
	{Region: "eu-west", NodeID: "eu-west-1", URL: "http://10.0.1.1:8080", Ready: true, State: "alive"}}

// TestSecurityOperatorEndpointsOffTheAPIPort (issue 12, finding 14): anyone who reaches
// the API port read the cluster's topology (/members: every node's region and internal
// URL) and the node's metrics, unauthenticated. With an operator listener the API port
// no longer serves /members, /metrics or pprof, whatever credentials are sent; the
// operator listener serves them (profiles still with the operator secret).
func TestSecurityOperatorEndpointsOffTheAPIPort(t *testing.T) {
	t.Parallel()
	cfg := nodeConfig()
	cfg.OperatorListener = true
	n := serveRouted(t, cfg, gossipView)
	for _, path := range []string{"/members", "/metrics", "/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/profile?seconds=1"} {
		for _, token := range []string{"", "wrong-secret-0123456789", secret} {
			if code, body := get(t, n.api+path, token); code != http.StatusNotFound {
				t.Errorf("API port GET %s (token %q): %d %.200q, want 404", path, token, code, body)
			}
		}
	}
	for path, want := range map[string]string{
		"/members": `"node_id":"eu-west-1"`,
		"/metrics": "keyplane_route_requests_total",
		"/healthz": `"status":"ok"`,
		"/readyz":  `"ready":true`,
	} {
		if code, body := get(t, n.ops+path, ""); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("operator listener GET %s: %d %.300q, want 200 with %q", path, code, body, want)
		}
	}
	if code, body := get(t, n.api+"/healthz", ""); code != http.StatusOK {
		t.Errorf("API port GET /healthz: %d %q, want 200 (probes)", code, body)
	}
	if code, _ := get(t, n.ops+"/debug/pprof/goroutine?debug=1", ""); code != http.StatusUnauthorized {
		t.Errorf("operator listener pprof without the secret: %d, want 401", code)
	}
	if code, body := get(t, n.ops+"/debug/pprof/goroutine?debug=1", secret); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("operator listener pprof with the secret: %d %.200q, want 200", code, body)
	}
}

// TestSecurityOperatorEndpointsNeedTheSecret (issue 12, finding 14): without an
// operator listener, /members and /metrics on the API port answered anyone. Now they
// (and pprof) need the operator secret; --metrics-public opens /metrics alone.
func TestSecurityOperatorEndpointsNeedTheSecret(t *testing.T) {
	t.Parallel()
	for _, public := range []bool{false, true} {
		cfg := nodeConfig()
		cfg.MetricsPublic = public
		n := serveRouted(t, cfg, gossipView)
		for path, want := range map[string]string{
			"/members":                        `"node_id":"eu-west-1"`,
			"/metrics":                        "keyplane_route_requests_total",
			"/debug/pprof/goroutine?debug=1":  "goroutine",
			"/debug/pprof/heap?debug=1":       "heap",
			"/debug/pprof/":                   "profiles",
			"/debug/pprof/trace?seconds=0.05": "", // any answer but 401 proves the secret was accepted
		} {
			open := public && path == "/metrics"
			for _, token := range []string{"", "wrong-secret-0123456789", secret[:len(secret)-1]} {
				code, body := get(t, n.api+path, token)
				if open && (code != http.StatusOK || !strings.Contains(body, want)) {
					t.Errorf("public metrics: GET %s (token %q): %d, want 200", path, token, code)
				}
				if !open && (code != http.StatusUnauthorized || strings.Contains(body, want) && want != "") {
					t.Errorf("metrics public %v: GET %s with token %q: %d %.200q, want 401", public, path, token, code, body)
				}
			}
			if code, body := get(t, n.api+path, secret); code == http.StatusUnauthorized || !strings.Contains(body, want) {
				t.Errorf("GET %s with the operator secret: %d %.200q, want it served", path, code, body)
			}
		}
	}
}

// A node without routing has no gossip to list: /members says so, to operators only.
func TestMembersWithoutRouting(t *testing.T) {
	t.Parallel()
	n := serveRouted(t, nodeConfig(), nil)
	if code, _ := get(t, n.api+"/members", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /members without the secret: %d, want 401", code)
	}
	if code, body := get(t, n.api+"/members", secret); code != http.StatusNotFound || !strings.Contains(body, "does not gossip") {
		t.Errorf("GET /members: %d %q, want 404 saying the node does not gossip", code, body)
	}
}
