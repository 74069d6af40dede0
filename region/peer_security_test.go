package region_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// staticPeers is a fixed membership (what gossip would say). Read-only.
type staticPeers []routing.Member

func (p staticPeers) Ready(r string) []routing.Member {
	var out []routing.Member
	for _, m := range p {
		if m.Region == r {
			out = append(out, m)
		}
	}
	return out
}

func (p staticPeers) Members() []routing.Member { return p }

// routedPair is two nodes on one database with mutual-TLS routing between them:
// us-east-1 (home of tenant acme) and eu-west-1.
type routedPair struct {
	us, eu string // API base URLs
}

func newRoutedPair(t *testing.T) routedPair { return newRoutedPairWith(t, nil) }

// pairNode is what a test sets on one node of a routed pair; the zero value is the
// plain node.
type pairNode struct {
	pool      schema.PoolConfig
	log       io.Writer  // nil: the test's output
	logLevel  slog.Level // with log; the test's output logs errors only
	configure func(*region.Config)
}

// newRoutedPairWith is newRoutedPair with each node's pool, log and configuration as
// setup (if not nil) gives them, called once per node before it starts.
func newRoutedPairWith(t *testing.T, setup func(regionName, nodeID string) pairNode) routedPair {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey, err := routing.NewCA("test cluster", routing.CertOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.crt", caCert)
	db := schematest.NewDatabase(t)

	type node struct {
		region, id string
		api, peer  net.Listener
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	nodes := []*node{{region: "us-east", id: "us-east-1", api: listen(), peer: listen()},
		{region: "eu-west", id: "eu-west-1", api: listen(), peer: listen()}}
	var members staticPeers
	for _, n := range nodes {
		members = append(members, routing.Member{Region: n.region, NodeID: n.id, URL: "http://" + n.api.Addr().String(),
			Peer: "https://" + n.peer.Addr().String(), Ready: true, State: "alive"})
	}
	for _, n := range nodes {
		var set pairNode
		if setup != nil {
			set = setup(n.region, n.id)
		}
		pool, err := schema.Open(context.Background(), db, set.pool)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		id := routing.Identity{Region: n.region, NodeID: n.id}
		cert, key, err := routing.IssueNodeCert(caCert, caKey, id, routing.CertOptions{Validity: time.Hour, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		tlsc, err := routing.LoadPeerTLS(write(n.id+".crt", cert), write(n.id+".key", key), caFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := region.Config{Region: n.region, NodeID: n.id, OperatorSecret: secret, IssuerBase: "http://" + n.api.Addr().String()}
		if set.configure != nil {
			set.configure(&cfg)
		}
		logTo, level := io.Writer(t.Output()), slog.LevelError
		if set.log != nil {
			logTo, level = set.log, set.logLevel
		}
		store := schema.New(pool, schema.Config{Region: n.region, Node: n.id})
		nd, err := region.New(cfg, store, slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: level})), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.EnableRouting(region.Routing{Peers: members, PeerListener: n.peer, PeerTLS: tlsc}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- nd.Serve(ctx, n.api) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve %s: %v", n.id, err)
			}
		})
	}
	return routedPair{us: members[0].URL, eu: members[1].URL}
}

// clientFrom is an HTTP client whose connections come from local address ip (any
// 127.x address reaches a loopback listener), so the caller's address differs from
// the nodes' 127.0.0.1.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestSecurityForgedHopSetsNoClientIP (issue 12, findings 6 and 12): a binding allows
// a permission only from an internal address. Before, a client that sent
// Keyplane-Hop (signed badly, or unsigned when the cluster had no hop key) stopped
// routing and, through a forward, made request.ip the forwarding node's address, so
// "from 127.0.0.1" allow-lists passed. Now a client's hop headers are dropped on
// the API listener, forwards carry the client's own address over mutual TLS, and
// request.ip is never a node's address.
func TestSecurityForgedHopSetsNoClientIP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pair := newRoutedPair(t)
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, pair.us, connect.WithInterceptors(client.Tenant(),
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				return next(ctx, req)
			}
		})))
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	role, err := admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice"}))
	if err != nil {
		t.Fatal(err)
	}
	// The nodes' own address (what a forwarder connects from) and the real client's.
	const nodeIP, clientIP = "127.0.0.1", "127.0.0.2"
	for scope, cond := range map[string]string{"internal/": `request.ip == "` + nodeIP + `"`, "client/": `request.ip == "` + clientIP + `"`} {
		if _, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
			PrincipalId: alice.Msg.Identity.Id, RoleId: role.Msg.Role.Id, Scope: scope, Condition: cond})); err != nil {
			t.Fatal(err)
		}
	}
	forged := "eu-west/eu-west-1; ip=" + nodeIP + "; ts=" + time.Now().Format("0601021504") + "; sig=AAAA"
	tests := []struct {
		name, node, resource, hop string
		wantRoute                 string
		want                      bool
	}{
		{name: "forged hop to a forwarding node", node: pair.eu, resource: "internal/doc", hop: forged, wantRoute: routing.RouteForwarded},
		{name: "bare hop to a forwarding node", node: pair.eu, resource: "internal/doc", hop: "eu-west/eu-west-1", wantRoute: routing.RouteForwarded},
		{name: "forged hop to the home node", node: pair.us, resource: "internal/doc", hop: forged, wantRoute: routing.RouteLocal},
		{name: "forwarded, no hop", node: pair.eu, resource: "internal/doc", wantRoute: routing.RouteForwarded},
		// Controls: the client's own address reaches the check, forwarded or not.
		{name: "client address through a forward", node: pair.eu, resource: "client/doc", hop: forged, wantRoute: routing.RouteForwarded, want: true},
		{name: "client address at home", node: pair.us, resource: "client/doc", wantRoute: routing.RouteLocal, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			check := keyplanev1connect.NewCheckServiceClient(clientFrom(clientIP), tt.node, connect.WithInterceptors(
				connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
					return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
						req.Header().Set("Authorization", "Bearer "+secret)
						req.Header().Set(routing.TenantHeader, "acme")
						if tt.hop != "" {
							req.Header().Set(routing.HopHeader, tt.hop)
							req.Header().Set(routing.EpochHeader, "1")
						}
						return next(ctx, req)
					}
				})))
			resp, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
				Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: alice.Msg.Identity.Id}, Permission: "docs.document.read", Resource: tt.resource}))
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if got := resp.Header().Get(routing.RouteHeader); got != tt.wantRoute {
				t.Errorf("%s = %q, want %q", routing.RouteHeader, got, tt.wantRoute)
			}
			if resp.Msg.Allowed != tt.want {
				t.Errorf("allowed = %v (%s), want %v", resp.Msg.Allowed, resp.Msg.Reason, tt.want)
			}
		})
	}
}
