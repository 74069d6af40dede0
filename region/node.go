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
	"golang.org/x/net/netutil"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/geoip"
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
// background work (the decision log and its pruner, last-use flushes, readiness reports), serves
// HTTP, and on return has stopped and drained that work. There is deliberately no
// exported http.Handler: without Serve the decision log would never drain and checks
// would block once its buffer filled. Serve may be called once; the node's methods
// are safe for concurrent use.
type Node struct {
	cfg      Config
	store    *schema.Store
	log      *slog.Logger
	metrics  *metrics
	handler  http.Handler
	keys     *keyring
	lastUsed *lastUsed
	verified *verified
	states   *stateReader // the decision reads, coalesced
	// breakGlassLog writes the break-glass line once per 10 s per procedure and tenant.
	breakGlassLog *logSampler
	tenants       *routing.Directory // tenant rows, cached: routing's placements and validation's partitions
	policies      *policyCache
	decisions     *decisionLog
	pruner        *decisionPruner
	figures       *governanceFigures
	reg           Registry
	local         http.Handler // what this node serves itself: the mux behind idempotency keys
	idemSlots     chan struct{}
	routes        *http.ServeMux // the mux behind local: what names a request's span (tracing.go)
	ops           http.Handler   // the operator listener's handler (Config.OperatorListener)
	gossip        Gossip
	peers         *peerServer                             // the peer listener; nil without routing
	cluster       interface{ Members() []routing.Member } // gossip's members, for /members; nil without routing
	guards        *guards                                 // login throttling, password hashing bound, rate limits
	limits        *tenantLimiter                          // per-tenant class limits (tenantlimits.go)
	ready         *readiness                              // the shared database ping of readiness probes
	pageKey       []byte                                  // seals page tokens (pagetoken.go)
	ruleEnv       *authz.RuleEnv                          // membership-rule conditions (admin_rules.go)
	geo           *geoip.DB                               // request.country's database (Config.GeoIPDB); nil without one
	claimsEnv     *authz.ClaimsEnv                        // trust-policy conditions (federation.go)
	issuers       *issuers                                // external issuers' discovery and keys (federation_issuer.go)
	sweeper       *sweeper                                // the governance sweeper (sweeper.go)
	// Access reviews (campaign*.go): their series and their reminders-and-deadlines loop.
	reviewMetrics *reviewMetrics
	reviews       *reviewLoop
	analytics     *analytics    // access baselines and anomaly alerts (analytics.go)
	webhooks      *dispatcher   // alert webhook deliveries (webhook.go)
	drift         *driftChecker // policy drift detection (drift.go)
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
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.Login = cfg.Login.withDefaults()
	cfg.Analytics = cfg.Analytics.withDefaults()
	cfg.DecisionReads = cfg.DecisionReads.withDefaults()
	am, err := newAnalyticsMetrics(reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("register analytics metrics: %w", err)
	}
	var geo *geoip.DB
	if cfg.GeoIPDB != "" {
		if geo, err = geoip.Open(cfg.GeoIPDB, log); err != nil {
			return nil, err
		}
	}
	n := &Node{geo: geo, cfg: cfg, store: store, log: log, metrics: m, lastUsed: &lastUsed{},
		policies: &policyCache{env: env, store: store, staleness: cfg.PolicyStaleness, m: m}, guards: newGuards(cfg.Login, m),
		decisions: newDecisionLog(store, log, m, 10_000),
		verified:  newVerified(10_000), tenants: routing.NewDirectory(store, 5*time.Second), reg: reg,
		keys:    &keyring{store: store, kek: cfg.KEK, region: cfg.Region, refreshEvery: cfg.KeyRefresh},
		pageKey: pageKey(string(cfg.OperatorSecret))}
	if n.ruleEnv, err = authz.NewRuleEnv(authz.EnvOptions{}); err != nil {
		return nil, err
	}
	if n.claimsEnv, err = authz.NewClaimsEnv(authz.EnvOptions{}); err != nil {
		return nil, err
	}
	n.issuers = newIssuers(nil)
	if n.reviewMetrics, err = newReviewMetrics(reg, cfg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	n.analytics = newAnalytics(cfg.Analytics, store, log, am)
	n.webhooks = newDispatcher(n, am)
	n.drift = newDriftChecker(n, n.analytics)
	n.store = store.WithRuleMatcher(n.matchRule)
	n.breakGlassLog = newLogSampler(10 * time.Second)
	n.states = newStateReader(n.store, cfg.DecisionReads.InFlight, cfg.DecisionReads.MaxKeys, decisionReadTimeout, m.observeDecisionRead)

	mux := http.NewServeMux()
	// Responses are small: compressing them costs more CPU than it saves on a LAN.
	// Every Connect service: observe, page tokens (pagetoken.go), then the authorities
	// table (authority.go); JSON requests that do not unmarshal name the field
	// (jsoncodec.go).
	if n.limits, err = newTenantLimiter(cfg.Login.Rates, n.tenants, reg, cfg); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	n.guards.attachTenantLimits(n.limits)
	// With tracing, the RPC span comes first (tracing.go).
	interceptors, err := n.tracingInterceptors()
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	interceptors = append(interceptors, n.observe(), n.pageTokens(), n.authorityCheck(), n.tenantLimit())
	observe := connect.WithHandlerOptions(connect.WithInterceptors(interceptors...), connect.WithCompressMinBytes(8<<10),
		jsonCodecs())
	mux.Handle(keyplanev1connect.NewAdminServiceHandler(&AdminService{node: n}, observe, connect.WithReadMaxBytes(maxMessageBytes)))
	mux.Handle(n.refuseEarly(keyplanev1connect.NewAuthServiceHandler(&AuthService{node: n}, observe, connect.WithReadMaxBytes(64<<10))))
	mux.Handle(n.refuseEarly(keyplanev1connect.NewCheckServiceHandler(&CheckService{node: n}, observe, connect.WithReadMaxBytes(maxMessageBytes))))
	mux.Handle(keyplanev1connect.NewElevationServiceHandler(&ElevationService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewDecisionServiceHandler(&DecisionService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewFederationServiceHandler(&FederationService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewUpstreamServiceHandler(&UpstreamService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewSAMLServiceHandler(&SAMLService{node: n}, observe, connect.WithReadMaxBytes(512<<10)))
	mux.Handle(keyplanev1connect.NewGovernanceServiceHandler(&GovernanceService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	mux.Handle(keyplanev1connect.NewReviewServiceHandler(&ReviewService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	n.mountReviewPage(mux)
	mux.Handle(keyplanev1connect.NewAnalyticsServiceHandler(&AnalyticsService{node: n}, observe, connect.WithReadMaxBytes(64<<10)))
	small := connect.WithReadMaxBytes(64 << 10) // connect reads any size otherwise
	mux.Handle(grpchealth.NewHandler(healthChecker{n}, connect.WithHandlerOptions(connect.WithInterceptors(n.observe()), connect.WithCompressMinBytes(8<<10)), small))
	n.mountOAuth(mux)
	n.mountSCIM(mux)
	n.mountUpstreamOIDC(mux)
	n.mountSAML(mux)
	reflector := grpcreflect.NewStaticReflector(keyplanev1connect.AdminServiceName, keyplanev1connect.AuthServiceName, keyplanev1connect.CheckServiceName,
		keyplanev1connect.ElevationServiceName, keyplanev1connect.DecisionServiceName, keyplanev1connect.FederationServiceName, keyplanev1connect.UpstreamServiceName,
		keyplanev1connect.SAMLServiceName, keyplanev1connect.GovernanceServiceName, keyplanev1connect.ReviewServiceName, keyplanev1connect.AnalyticsServiceName,
		grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, small))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, small))
	n.mountHealth(mux)
	if cfg.OperatorListener {
		ops := http.NewServeMux()
		n.mountHealth(ops)
		n.mountOperator(ops, true)
		n.ops = n.servedBy(ops)
	} else {
		n.mountOperator(mux, cfg.MetricsPublic)
	}
	n.pruner = newDecisionPruner(n)
	if n.figures, err = newGovernanceFigures(n, reg); err != nil {
		return nil, err
	}
	if err := registerStoreMetrics(reg, prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID}, store); err != nil {
		return nil, err
	}
	if err := reg.Register(newSigningKeyCollector(n.keys, prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID})); err != nil {
		return nil, err
	}
	sm, err := newSweepMetrics(reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	n.sweeper = newSweeper(n, sm)
	n.reviews = newReviewLoop(n)
	n.ready = newReadiness(n.store.Ping, readinessTTL, time.Now)
	n.idemSlots = idempotencySlots(store.Pool().Config().MaxConns)
	n.local = n.rehomeFenceHTTP(n.idempotency(mux))
	n.routes = mux
	n.handler = n.servedBy(n.traced(n.local))
	return n, nil
}

// mountHealth adds the probes: /healthz (the process answers) and /readyz (the
// database answers).
func (n *Node) mountHealth(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "region": n.cfg.Region, "node": n.cfg.NodeID})
	})
	mux.HandleFunc("GET /readyz", n.readyz)
}

// mountOperator adds the operator endpoints. /members (the cluster's topology) needs
// the operator secret unless on the operator listener; /metrics needs it unless
// metricsOpen; profiles always need it (they reveal memory and cost CPU).
func (n *Node) mountOperator(mux *http.ServeMux, metricsOpen bool) {
	guard := n.operatorOnly
	if n.cfg.OperatorListener {
		guard = func(h http.Handler) http.Handler { return h }
	}
	// OpenMetrics when the scraper asks for it (Accept: application/openmetrics-text):
	// the format that carries the latency histograms' exemplars (trace ids).
	metrics := http.Handler(promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg, EnableOpenMetrics: true}))
	if !metricsOpen {
		metrics = guard(metrics)
	}
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /members", guard(http.HandlerFunc(n.members)))
	mux.Handle("/debug/pprof/", n.operatorOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", n.operatorOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", n.operatorOnly(http.HandlerFunc(pprof.Trace)))
}

// members lists what this node's gossip knows of the cluster.
func (n *Node) members(w http.ResponseWriter, _ *http.Request) {
	if n.cluster == nil {
		http.Error(w, "this node does not gossip (multi-region routing is off)", http.StatusNotFound)
		return
	}
	type member struct {
		Region  string `json:"region"`
		NodeID  string `json:"node_id"`
		URL     string `json:"url"`
		Peer    string `json:"peer_url,omitempty"`
		Version string `json:"version"`
		Ready   bool   `json:"ready"`
		State   string `json:"state"`
	}
	out := []member{}
	for _, m := range n.cluster.Members() {
		out = append(out, member{m.Region, m.NodeID, m.URL, m.Peer, m.Version, m.Ready, m.State})
	}
	writeJSON(w, http.StatusOK, map[string]any{"region": n.cfg.Region, "node": n.cfg.NodeID, "members": out})
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

// Ready reports whether the node can serve: the database answered a ping sent less
// than a second ago (readiness.go: concurrent probes share one ping).
func (n *Node) Ready(ctx context.Context) error {
	err := n.ready.check(ctx)
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
		keyplanev1connect.ElevationServiceName, keyplanev1connect.DecisionServiceName, keyplanev1connect.FederationServiceName,
		keyplanev1connect.UpstreamServiceName, keyplanev1connect.SAMLServiceName, keyplanev1connect.GovernanceServiceName,
		keyplanev1connect.ReviewServiceName, keyplanev1connect.AnalyticsServiceName:
	default:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if err := h.n.Ready(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Serve serves the node (HTTP/1.1 and h2c, or HTTP/2 when ln is a TLS listener) on ln,
// and with routing the peer listener, until ctx is done, then shuts down gracefully
// (at most 10 seconds for in-flight calls) and drains the decision log and last-use
// times. Config.Limits bound each client: header, read and write timeouts,
// header size, and at most MaxConns connections served at once.
func (n *Node) Serve(ctx context.Context, ln net.Listener) error {
	ln = netutil.LimitListener(ln, n.cfg.Limits.MaxConns)
	srv := newServer(n.cfg.Limits, n.handler, n.log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	shutdownPeers := n.servePeers()
	flushCtx, stopFlush := context.WithCancel(context.Background())
	flushed := make(chan struct{})
	logged := make(chan struct{})
	go func() { n.lastUsed.run(flushCtx, n.cfg.LastUsedFlush, n.store, n.log); close(flushed) }()
	go func() { n.decisions.run(flushCtx); close(logged) }()
	analyzed := make(chan struct{})
	go func() { n.analytics.run(flushCtx); close(analyzed) }()
	readyCtx, stopReady := context.WithCancel(ctx)
	reported := make(chan struct{})
	go func() { n.reportReadiness(readyCtx); close(reported) }()
	pruned := make(chan struct{})
	go func() { n.pruner.run(readyCtx); close(pruned) }()
	figured := make(chan struct{})
	go func() { n.figures.run(readyCtx); close(figured) }()
	swept := make(chan struct{})
	go func() { n.sweeper.run(readyCtx); close(swept) }()
	reviewed := make(chan struct{})
	go func() { n.reviews.run(readyCtx); close(reviewed) }()
	delivered, drifted := make(chan struct{}), make(chan struct{})
	go func() { n.webhooks.run(readyCtx); close(delivered) }()
	go func() { n.drift.run(readyCtx); close(drifted) }()
	defer func() {
		stopReady()
		<-reported
		<-pruned
		<-figured
		<-swept
		<-reviewed
		<-delivered
		<-drifted
		stopFlush()
		<-flushed
		<-logged
		<-analyzed
	}()
	n.log.Info("serving", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		_ = shutdownPeers(context.Background())
		return err
	case <-ctx.Done():
	}
	stopReady()
	<-reported // peers learn this node is going before it stops answering
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := errors.Join(srv.Shutdown(sctx), shutdownPeers(sctx))
	if errors.Is(<-errc, http.ErrServerClosed) && err == nil {
		n.log.Info("stopped")
		return nil
	}
	return err
}

// ServeOperator serves the operator endpoints (/members, /metrics, /debug/pprof,
// /healthz, /readyz) on ln until ctx is done; Config.OperatorListener must be set.
// /metrics and /members answer anyone who reaches ln (keep it on a private address:
// it is for operators and Prometheus); profiles still need the operator secret. There
// is no write timeout here, so a long CPU profile or trace completes.
func (n *Node) ServeOperator(ctx context.Context, ln net.Listener) error {
	if n.ops == nil {
		return errors.New("serve operator endpoints: the node was built without Config.OperatorListener")
	}
	lim := n.cfg.Limits
	lim.WriteTimeout = 0 // a CPU profile or trace takes as long as asked
	srv := newServer(lim, n.ops, n.log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(netutil.LimitListener(ln, 64)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
