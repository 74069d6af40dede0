package region

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
)

// Routing is what a node needs to send requests to their tenant's home region.
type Routing struct {
	// Peers lists the cluster's nodes (gossip).
	Peers interface {
		routing.Peers
		Members() []routing.Member
	}
	// Gossip, when set, is told this node's readiness every second, and carries tenant
	// moves between nodes.
	Gossip Gossip
	// HedgeAfter, ForwardTimeout and Dial: see routing.Config.
	HedgeAfter     time.Duration
	ForwardTimeout time.Duration
	Dial           map[string]string
	// PeerListener is where other nodes forward requests to this node (required): Serve
	// serves routing.Router.PeerHandler on it, the only place hop headers are trusted.
	PeerListener net.Listener
	// PeerTLS makes the peer listener and this node's forwards mutual TLS with the
	// cluster CA. nil is plaintext h2c between nodes: anyone who reaches the peer
	// listener can pass as a node (development only).
	PeerTLS *routing.PeerTLS
}

// Gossip is what a node tells the cluster and hears from it. *routing.Membership
// satisfies it.
type Gossip interface {
	SetReady(ready bool)
	AnnounceMove(tenant string, epoch int64)
	OnMove(fn func(tenant string, epoch int64))
}

// EnableRouting puts the router in front of the node's handler: requests for tenants
// homed in another region are forwarded there once. Call it before Serve.
func (n *Node) EnableRouting(r Routing) error {
	if r.PeerListener == nil {
		return errors.New("routing: a peer listener is required")
	}
	if ft := cmp.Or(r.ForwardTimeout, 10*time.Second); ft >= n.cfg.Limits.WriteTimeout {
		return fmt.Errorf("routing: the forward timeout (%v) must be shorter than the write timeout (%v), or forwarded answers are cut off", ft, n.cfg.Limits.WriteTimeout)
	}
	router, err := routing.NewRouter(routing.Config{
		Region: n.cfg.Region, NodeID: n.cfg.NodeID,
		Directory:  n.tenants,
		Peers:      r.Peers,
		HopKey:     routing.HopKey(string(n.cfg.OperatorSecret)),
		PeerTLS:    r.PeerTLS,
		Idempotent: retryable, NeedsTenant: needsTenant, MaxBody: maxForwardBytes,
		HedgeAfter: r.HedgeAfter, ForwardTimeout: r.ForwardTimeout, Dial: r.Dial,
		Log: n.log, Metrics: n.reg, TracerProvider: n.cfg.TracerProvider,
	}, n.local)
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	if err := registerRoutingMetrics(n.reg, prometheus.Labels{"region": n.cfg.Region, "node": n.cfg.NodeID}, r.Peers, r.PeerTLS); err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	n.cluster = r.Peers
	n.handler = n.servedBy(n.traced(n.answeredHere(router)))
	n.peers = &peerServer{ln: r.PeerListener, tls: r.PeerTLS, handler: n.servedBy(n.traced(router.PeerHandler()))}
	n.gossip = r.Gossip
	if r.Gossip != nil {
		r.Gossip.OnMove(func(tenant string, _ int64) { n.forgetPlacement(tenant) })
	}
	return nil
}

// peerServer serves the peer listener.
type peerServer struct {
	ln      net.Listener
	tls     *routing.PeerTLS
	handler http.Handler
}

// servePeers serves the peer listener, if routing is on, until the returned shutdown
// is called: HTTP/2 over mutual TLS with the cluster CA, or h2c without PeerTLS.
func (n *Node) servePeers() (shutdown func(context.Context) error) {
	if n.peers == nil {
		return func(context.Context) error { return nil }
	}
	ln := netutil.LimitListener(n.peers.ln, n.cfg.Limits.MaxConns) // the same bounds as the API port
	srv := newServer(n.cfg.Limits, n.peers.handler, n.log)
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if n.peers.tls != nil {
		srv.Protocols.SetHTTP2(true)
		ln = tls.NewListener(ln, n.peers.tls.ServerConfig())
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("peer listener stopped", "err", err)
		}
	}()
	n.log.Info("serving peers", "addr", n.peers.ln.Addr().String(), "mtls", n.peers.tls != nil)
	return srv.Shutdown
}

// tenantMoved is called after this node rehomed a tenant: forget its placement here
// and tell every other node.
func (n *Node) tenantMoved(tenant string, epoch int64) {
	n.forgetPlacement(tenant)
	if n.gossip != nil {
		n.gossip.AnnounceMove(tenant, epoch)
	}
}

func (n *Node) forgetPlacement(tenant string) { n.tenants.Forget(tenant) }

// reportReadiness tells gossip whether this node can serve, every second, until ctx
// is done, and then that it cannot (so peers stop forwarding before it stops).
func (n *Node) reportReadiness(ctx context.Context) {
	if n.gossip == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n.gossip.SetReady(n.Ready(pctx) == nil)
		cancel()
		select {
		case <-ctx.Done():
			n.gossip.SetReady(false)
			return
		case <-t.C:
		}
	}
}

// idempotentProcedures are the Connect procedures marked NO_SIDE_EFFECTS or
// IDEMPOTENT in the protos: safe to hedge and to retry after they may have arrived.
var idempotentProcedures = proceduresWhere(func(m protoreflect.MethodDescriptor) bool {
	opts, _ := m.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel() != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
})

// idempotent reports whether a request may safely be sent twice: the procedures
// above, OAuth discovery and JWKS reads, introspection, RFC 7009 revocation
// (revoking twice leaves the same state), and SCIM reads. The token endpoint is not:
// it mints. No SCIM write is: a POST creates, and a PUT, PATCH or DELETE sent twice
// may meet a changed resource (and its If-Match) the second time.
func idempotent(r *http.Request) bool {
	if idempotentProcedures[r.URL.Path] {
		return true
	}
	if strings.HasPrefix(r.URL.Path, "/t/") {
		if isSCIMPath(r.URL.Path) {
			return r.Method == http.MethodGet
		}
		return r.Method == http.MethodGet || strings.HasSuffix(r.URL.Path, "/oauth2/introspect") || strings.HasSuffix(r.URL.Path, "/oauth2/revoke")
	}
	return false
}

// retryable reports whether the router may send a request twice (hedge it, retry it
// on another home node, serve it degraded after a failed forward): an idempotent one,
// or one with an Idempotency-Key, which the serving node applies at most once.
func retryable(r *http.Request) bool {
	return idempotent(r) || r.Header.Get(IdempotencyKeyHeader) != ""
}

// isSCIMPath reports whether path is under a tenant's SCIM endpoint, /t/{tenant}/scim/v2.
func isSCIMPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/t/")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, "/")
	return ok && (rest == "scim/v2" || strings.HasPrefix(rest, "scim/v2/"))
}

// tenantField returns the request message's top-level tenant_id, if it has one.
func tenantField(msg any) (string, bool) {
	// Every generated message with a tenant_id field (all are strings) has its getter:
	// no reflection on the hot path.
	if m, ok := msg.(interface{ GetTenantId() string }); ok {
		return m.GetTenantId(), true
	}
	return "", false
}

// createTenantProcedure creates the tenant its Keyplane-Tenant header may name, so
// that it can take an Idempotency-Key (checkTenantHeader).
var createTenantProcedure = procedure(keyplanev1connect.AdminServiceName, "CreateTenant")

// checkTenantHeader refuses a call whose Keyplane-Tenant header (what routing went by)
// names another tenant than the body: it would have been routed by the wrong tenant.
// CreateTenant may name the tenant it creates, and only that one: so that it can take
// an Idempotency-Key, recorded as the new tenant's.
func checkTenantHeader(req connect.AnyRequest) error {
	h := req.Header().Get(routing.TenantHeader)
	if h == "" {
		return nil
	}
	if m, ok := req.Any().(*keyplanev1.CreateTenantRequest); ok {
		if m.GetId() != h {
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("id: the request creates tenant %q but its %s header says %q", m.GetId(), routing.TenantHeader, h))
		}
		return nil
	}
	body, ok := tenantField(req.Any())
	if ok && body != h {
		return connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("tenant_id: the request names tenant %q but its %s header says %q", body, routing.TenantHeader, h))
	}
	if !ok {
		return connect.NewError(connect.CodeInvalidArgument,
			errors.New(routing.TenantHeader+": this call is not tenant-scoped; drop the header"))
	}
	return nil
}
