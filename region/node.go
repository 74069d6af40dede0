package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// Registry is what a node needs of a Prometheus registry: somewhere to register its
// collectors and something to serve /metrics from. *prometheus.Registry satisfies it.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// Node is one region node. New builds it completely; Serve runs it: it starts the
// background work (the decision log, last-use flushes, readiness reports), serves
// HTTP, and on return has stopped and drained that work. There is deliberately no
// exported http.Handler: without Serve the decision log would never drain and checks
// would block once its buffer filled. Serve may be called once; the node's methods
// are safe for concurrent use.
type Node struct {
	cfg       Config
	store     *schema.Store
	log       *slog.Logger
	metrics   *metrics
	handler   http.Handler
	keys      *keyring
	lastUsed  *lastUsed
	verified  *verified
	tenants   *routing.Directory // tenant rows, cached: routing's placements and validation's partitions
	policies  *policyCache
	decisions *decisionLog
	reg       Registry
	mux       *http.ServeMux
	gossip    Gossip
	guards    *guards // login throttling, password hashing bound, rate limits
}

// New assembles a node. log may be nil (no logging).
func New(cfg Config, store *schema.Store, log *slog.Logger, reg Registry) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("region", cfg.Region, "node", cfg.NodeID)
	m, err := newMetrics(reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if cfg.KeyRefresh <= 0 {
		cfg.KeyRefresh = 30 * time.Second
	}
	if cfg.LastUsedFlush <= 0 {
		cfg.LastUsedFlush = 30 * time.Second
	}
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		return nil, fmt.Errorf("condition environment: %w", err)
	}
	if cfg.PolicyStaleness <= 0 {
		cfg.PolicyStaleness = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Login = cfg.Login.withDefaults()
	n := &Node{cfg: cfg, store: store, log: log, metrics: m, lastUsed: &lastUsed{},
		policies: &policyCache{env: env, store: store, staleness: cfg.PolicyStaleness, m: m}, guards: newGuards(cfg.Login, m),
		decisions: newDecisionLog(store, log, m, 10_000),
		verified:  newVerified(10_000), tenants: routing.NewDirectory(store, 5*time.Second), reg: reg,
		keys: &keyring{store: store, kek: cfg.KEK, region: cfg.Region, refreshEvery: cfg.KeyRefresh}}

	mux := http.NewServeMux()
	// Responses are small: compressing them costs more CPU than it saves on a LAN.
	observe := connect.WithHandlerOptions(connect.WithInterceptors(n.observe()), connect.WithCompressMinBytes(8<<10))
	mux.Handle(keyplanev1connect.NewAdminServiceHandler(&AdminService{node: n},
		connect.WithInterceptors(n.observe(), n.operatorAuth()), connect.WithReadMaxBytes(1<<20), connect.WithCompressMinBytes(8<<10)))
	mux.Handle(keyplanev1connect.NewAuthServiceHandler(&AuthService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewCheckServiceHandler(&CheckService{node: n}, observe, connect.WithReadMaxBytes(1<<20)))
	mux.Handle(keyplanev1connect.NewElevationServiceHandler(&ElevationService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(grpchealth.NewHandler(healthChecker{n}, observe))
	n.mountOAuth(mux)
	reflector := grpcreflect.NewStaticReflector(keyplanev1connect.AdminServiceName, keyplanev1connect.AuthServiceName, keyplanev1connect.CheckServiceName,
		keyplanev1connect.ElevationServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "region": cfg.Region, "node": cfg.NodeID})
	})
	mux.HandleFunc("GET /readyz", n.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/debug/pprof/", n.operatorOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", n.operatorOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", n.operatorOnly(http.HandlerFunc(pprof.Trace)))
	n.mux = mux
	n.handler = n.servedBy(mux)
	return n, nil
}

// now is the node's clock (Config.Now).
func (n *Node) now() time.Time { return n.cfg.Now() }

// operatorOnly guards an HTTP handler with the operator secret (profiles reveal
// internals and cost CPU).
func (n *Node) operatorOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !n.isOperator(token) {
			n.metrics.authFailures.Inc()
			http.Error(w, "operator credentials required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// servedBy stamps every response with the node that produced it.
func (n *Node) servedBy(next http.Handler) http.Handler {
	served := n.cfg.Region + "/" + n.cfg.NodeID
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Keyplane-Served-By", served)
		next.ServeHTTP(w, r)
	})
}

// Ready reports whether the node can serve: the database answers.
func (n *Node) Ready(ctx context.Context) error {
	err := n.store.Ping(ctx)
	if err != nil {
		n.metrics.ready.Set(0)
		return err
	}
	n.metrics.ready.Set(1)
	return nil
}

func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	if err := n.Ready(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "database unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// healthChecker answers gRPC health checks: SERVING when the database answers.
type healthChecker struct{ n *Node }

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "", keyplanev1connect.AdminServiceName, keyplanev1connect.AuthServiceName, keyplanev1connect.CheckServiceName,
		keyplanev1connect.ElevationServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if err := h.n.Ready(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Serve serves the node (HTTP/1.1 and h2c) on ln until ctx is done, then shuts down
// gracefully (at most 10 seconds for in-flight calls) and drains the decision log and
// last-use times.
func (n *Node) Serve(ctx context.Context, ln net.Listener) error {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           n.handler,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	flushCtx, stopFlush := context.WithCancel(context.Background())
	flushed := make(chan struct{})
	logged := make(chan struct{})
	go func() { n.lastUsed.run(flushCtx, n.cfg.LastUsedFlush, n.store, n.log); close(flushed) }()
	go func() { n.decisions.run(flushCtx); close(logged) }()
	readyCtx, stopReady := context.WithCancel(ctx)
	reported := make(chan struct{})
	go func() { n.reportReadiness(readyCtx); close(reported) }()
	defer func() { stopReady(); <-reported; stopFlush(); <-flushed; <-logged }()
	n.log.Info("serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopReady()
	<-reported // peers learn this node is going before it stops answering
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(<-errc, http.ErrServerClosed) && err == nil {
		n.log.Info("stopped")
		return nil
	}
	return err
}
