package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/tracing"
)

func runServe(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "serve", "Run a region node: the Connect/gRPC API, OAuth/OIDC, /healthz and /readyz; /metrics, /members and pprof for operators; with gossip, a mutual-TLS peer port for forwards between nodes.", `
The database URL, password included, comes from --db-file or KEYPLANE_DB; --db takes
only a URL without a password (argv shows in ps to every user of the machine).

Operator endpoints (/metrics, /members, /debug/pprof): give them a listener of their
own with --operator-listen on an address only operators and Prometheus reach; the API
port then does not serve them. Without it they stay on the API port and need the
operator secret (Authorization: Bearer …), /metrics too unless --metrics-public.
Profiles always need the operator secret.

Each client is bounded: headers within --header-timeout, the whole request within
--read-timeout, the response within --write-timeout, at most
--max-client-conns connections at once (more wait in the listen backlog).

The operator secret that guards the admin API is read from KEYPLANE_OPERATOR_SECRET or
from the file named by --operator-secret-file (never from a flag value, which would show
in ps). Without one, the admin API refuses every call. The operator secret is for
cluster calls (tenants, regions, rehoming, signing keys); tenant work is done by tenant
admins with access tokens from the tenant's token endpoint (CreateTenant returns the
first one's client id and secret). On tenant-scoped calls the operator secret is
break-glass: accepted, counted and audited as such, or refused with
--operator-break-glass=false (docs/administration.md).

The key-encryption key (32 bytes, base64) that seals signing keys, TOTP seeds and
sign-in provider secrets at rest is read from KEYPLANE_KEK or --kek-file; every node of a deployment needs the same
one. Without it the node cannot issue or validate tokens. Make one with: keyplane keys
new-kek. During a rotation it holds several keys, one a line: the first seals, every
one opens (docs/security.md).

Multi-region: give every node --gossip-listen and --join (any nodes of any regions; a
node keeps retrying the ones it has not reached) and the cluster's gossip key, which
encrypts and authenticates gossip: KEYPLANE_GOSSIP_KEYS or --gossip-key-file (base64
keys, one a line, the one that encrypts first; make one with keyplane keys
new-gossip-key). Without a key, serve refuses to gossip unless --gossip-insecure. Nodes then learn each other's region,
API URL and readiness, and a request for a tenant homed in another region is forwarded
once, whole, to a ready node there (Keyplane-Route: forwarded), or served here against
the database when none answers (Keyplane-Route: degraded). Without --gossip-listen the
node serves every request itself.

Forwards go to the home node's peer listener (--peer-listen, advertised in gossip) over
mutual TLS: every node has a certificate of the cluster CA naming its region and node
id (keyplane keys new-ca, keyplane keys node-cert) and gets --peer-cert, --peer-key and
--peer-ca. A node forwards only to a peer whose certificate names the region and node id
it gossips, and trusts hop headers (the client's IP, the placement epoch) only on the
peer listener from a certified node. The files are re-read when they change. Without
them, serve refuses to gossip unless --peer-insecure. The API listener serves clients,
over TLS with --tls-cert and --tls-key.

Tracing (OpenTelemetry, OTLP) is off unless the standard environment turns it on:
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp), with OTEL_TRACES_SAMPLER,
OTEL_TRACES_SAMPLER_ARG (default: parentbased_traceidratio, 0.1) and the other OTEL_*
variables (docs/operations.md#tracing).

Example:
  KEYPLANE_OPERATOR_SECRET=$(cat secret) keyplane serve --region us-east \
      --db-file /etc/keyplane/db-url --listen 127.0.0.1:8080 --operator-listen 10.0.0.5:9090`)
	cfg := region.DefaultConfig()
	fs := c.flags
	fs.StringVar(&cfg.Region, "region", "", "the region this node serves (required; one of the database's regions)")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "node id used in logs, metrics, audit events and the Keyplane-Served-By header; with --peer-cert, the one the certificate names")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on (HTTP/1.1 and h2c)")
	dbf := addDBFlags(c)
	operatorListen := fs.String("operator-listen", "", "host:port serving /metrics, /members, /debug/pprof, /healthz and /readyz to operators and Prometheus (the API port then does not serve the first three); keep it private")
	fs.BoolVar(&cfg.MetricsPublic, "metrics-public", false, "without --operator-listen, serve /metrics on the API port without the operator secret")
	fs.IntVar(&cfg.Limits.MaxConns, "max-client-conns", cfg.Limits.MaxConns, "client connections served at once on the API port; more wait until one closes")
	fs.DurationVar(&cfg.Limits.HeaderTimeout, "header-timeout", cfg.Limits.HeaderTimeout, "a request's headers must arrive within this")
	fs.DurationVar(&cfg.Limits.ReadTimeout, "read-timeout", cfg.Limits.ReadTimeout, "a request, headers and body, must arrive within this (a client dripping its body is cut off; not a bound on the call itself)")
	fs.DurationVar(&cfg.Limits.WriteTimeout, "write-timeout", cfg.Limits.WriteTimeout, "a response must be written within this of its request's headers; longer than --forward-timeout")
	secretFile := fs.String("operator-secret-file", "", "file holding the operator secret")
	breakGlass := fs.Bool("operator-break-glass", true, "accept the operator secret on tenant-scoped calls (identities, credentials, policy, audit) as break-glass: counted in keyplane_break_glass_calls_total and marked in the audit event; false leaves tenant work to tenant admins' access tokens")
	kekFile := fs.String("kek-file", "", "file holding the key-encryption key (base64 of 32 bytes; several, one a line, while rotating)")
	fs.StringVar(&cfg.IssuerBase, "issuer-base", "", "URL prefix of tenant issuers, the same on every node (default http://<listen address>)")
	fs.StringVar(&cfg.APIAudience, "api-audience", "", "an audience keyplane's own APIs (check, elevation, self-service) accept in bearer tokens besides the tenant's issuer; tokens for any other audience are refused there (default: the issuer only)")
	maxConns := fs.Int("max-conns", 0, "database pool size (0: 4 per CPU, at least 8)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or text")
	fs.BoolVar(&cfg.AccessLog, "access-log", false, "log every successful call at info (one line a call); failed calls are logged either way, successful ones otherwise at debug")
	fs.IntVar(&cfg.DecisionReads.InFlight, "decision-reads-in-flight", 0, "decision reads run at once per region; decisions arriving meanwhile share the next read (0: 4)")
	fs.IntVar(&cfg.DecisionReads.MaxKeys, "decision-read-max-keys", 0, "the most keys (one or two a decision) one shared decision read carries (0: 128, at most 1024)")
	advertise := fs.String("advertise-url", "", "API URL other nodes reach this node at (default http://<listen address>)")
	gossipListen := fs.String("gossip-listen", "", "host:port for gossip (TCP and UDP); empty disables multi-region routing")
	gossipAdvertise := fs.String("gossip-advertise", "", "host:port other nodes reach this node's gossip at (default: --gossip-listen)")
	join := fs.String("join", "", "comma-separated gossip host:port of nodes to join")
	gossipKeyFile := fs.String("gossip-key-file", "", "file holding the gossip keys (or KEYPLANE_GOSSIP_KEYS): base64, one a line, the encrypting one first")
	gossipInsecure := fs.Bool("gossip-insecure", false, "gossip without a key: anyone who reaches the gossip port joins the cluster (development only)")
	profile := fs.String("gossip-profile", routing.ProfileWAN, "gossip timing: wan (dead node noticed in ~6s), lan (~3s) or local (~2s, one machine)")
	hedgeAfter := fs.Duration("hedge-after", 0, "send a slow idempotent forward to a second home node after this long (0: twice the recent forward latency)")
	forwardTimeout := fs.Duration("forward-timeout", 10*time.Second, "longest a forward may take when the caller set no deadline (shorter than --write-timeout)")
	peerListen := fs.String("peer-listen", "", "host:port of the peer listener, where other nodes forward requests (required with --gossip-listen)")
	peerAdvertise := fs.String("peer-advertise-url", "", "URL other nodes reach the peer listener at (default https://<peer listen address>, http:// with --peer-insecure)")
	peerCert := fs.String("peer-cert", "", "this node's certificate for node-to-node mutual TLS (PEM; from keyplane keys node-cert); re-read when it changes")
	peerKey := fs.String("peer-key", "", "the private key of --peer-cert (PEM); re-read when it changes")
	peerCA := fs.String("peer-ca", "", "the cluster CA certificate(s) peers' certificates must chain to (PEM); re-read when it changes")
	peerInsecure := fs.Bool("peer-insecure", false, "forward between nodes over plaintext h2c without certificates: anyone who reaches a peer listener passes as a node (development only)")
	tlsCert := fs.String("tls-cert", "", "certificate for the API listener (PEM); with --tls-key, clients connect over TLS; re-read when it changes")
	tlsKey := fs.String("tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&cfg.GeoIPDB, "geoip-db", "", "IP → country database in MaxMind DB format (.mmdb: GeoLite2/GeoIP2 Country or City, or any with "+
		"country.iso_code records) that gives conditions request.country; re-read when the file changes. Optional: without it a condition "+
		"reading request.country fails closed (an allow does not apply, a deny does)")
	// Identity analytics (docs/analytics.md).
	fs.BoolVar(&cfg.Analytics.Off, "analytics-off", false, "turn identity analytics off: no baselines, anomaly alerts, webhook deliveries or policy drift rounds on this node")
	fs.Int64Var(&cfg.Analytics.LearningEvents, "analytics-learning-events", 0, "events an identity's baseline needs before its deviations raise alerts (0: 200)")
	fs.DurationVar(&cfg.Analytics.Suppress, "analytics-suppress", 0, "how long a repeat of the same identity, alert kind and value raises no alert (0: 24h)")
	fs.Float64Var(&cfg.Analytics.TravelKmh, "analytics-travel-kmh", 0, "the fastest a session may move between regions before it is impossible travel (0: 1000)")
	analyticsRegions := fs.String("analytics-regions", "", "coordinates of regions for impossible travel, over the built-in ones: name=lat,lon;name=lat,lon")
	fs.BoolVar(&cfg.Analytics.WebhookAllowPrivate, "webhook-allow-private", false, "let alert webhooks reach private, link-local and other non-public addresses (an endpoint inside the deployment's network)")
	fs.BoolVar(&cfg.Analytics.WebhookAllowLoopback, "webhook-allow-loopback", false, "accept http:// alert webhooks on loopback hosts and let deliveries reach loopback (development only)")
	fs.DurationVar(&cfg.Analytics.DriftEvery, "drift-every", 0, "how often the node compares its decisions of a sample with the other nodes' (0: 5m, negative: never)")
	dialMap := fs.String("peer-dial-map", "", "comma-separated from=to host:port rewrites applied when dialing peers (simulated networks)")
	fs.DurationVar(&cfg.GovernanceFiguresEvery, "governance-figures-every", region.DefaultFiguresEvery, "how often the node computes the governance figures of its region's tenants (keyplane_governance_* gauges, the daily snapshot; docs/governance.md); negative turns it off")
	fs.DurationVar(&cfg.GovernanceSweepEvery, "governance-sweep-every", region.DefaultSweepEvery, "how often the node tries to sweep its region's tenants (expired identities and credentials, NHIs whose owner is gone, rotation deadlines); one node per region sweeps at a time, by a lease row; negative turns the sweeper off")
	loginFlags(fs, &cfg.Login)
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if cfg.GovernanceFiguresEvery == 0 {
		return usageErr("--governance-figures-every: want a positive interval, or a negative one to turn the figures off")
	}
	if cfg.GovernanceSweepEvery == 0 {
		return usageErr("--governance-sweep-every: want a positive interval, or a negative one to turn the sweeper off")
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	if *forwardTimeout >= cfg.Limits.WriteTimeout {
		return usageErr("--forward-timeout (%v) must be shorter than --write-timeout (%v): a forwarded answer must have time to be written", *forwardTimeout, cfg.Limits.WriteTimeout)
	}
	if cfg.GeoIPDB != "" {
		if _, err := os.Stat(cfg.GeoIPDB); err != nil {
			return usageErr("--geoip-db: %v", err)
		}
	}
	if cfg.Analytics.Regions, err = region.ParseRegionCoordinates(*analyticsRegions); err != nil {
		return usageErr("--analytics-regions: %v", err)
	}
	cfg.OperatorListener = *operatorListen != ""
	dial, err := routing.ParseDialMap(*dialMap)
	if err != nil {
		return usageErr("--peer-dial-map: %v", err)
	}
	gossip := routing.MembershipConfig{Region: cfg.Region, NodeID: cfg.NodeID, URL: *advertise, Version: version(),
		Bind: *gossipListen, Advertise: *gossipAdvertise, Join: splitList(*join), Profile: *profile, Insecure: *gossipInsecure}
	if gossip.Keys, err = gossipKeys(*gossipKeyFile); err != nil {
		return usageErr("%v", err)
	}
	if gossip.URL == "" {
		gossip.URL = "http://" + *listen // the scheme is settled below, with TLS
	}
	var peerTLS *routing.PeerTLS
	if *gossipListen != "" {
		if err := gossip.Validate(); err != nil {
			return usageErr("%v", err)
		}
		if peerTLS, err = loadPeerTLS(cfg.Region, cfg.NodeID, *peerListen, *peerCert, *peerKey, *peerCA, *peerInsecure); err != nil {
			return err
		}
	}
	var apiTLS *routing.ServingTLS
	if *tlsCert != "" || *tlsKey != "" {
		if apiTLS, err = routing.LoadServingTLS(*tlsCert, *tlsKey); err != nil {
			return usageErr("--tls-cert/--tls-key: %v", err)
		}
	}
	scheme := "http://"
	if apiTLS != nil {
		scheme = "https://"
	}
	secret, err := operatorSecret(*secretFile)
	if err != nil {
		return err
	}
	cfg.OperatorSecret = region.Secret(secret)
	cfg.NoBreakGlass = !*breakGlass
	if cfg.KEK, err = loadKEK(*kekFile); err != nil {
		return err
	}
	defaultIssuer := cfg.IssuerBase == ""
	if defaultIssuer {
		cfg.IssuerBase = scheme + *listen // the address actually bound, once listening
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	log, err := newLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return usageErr("%v", err)
	}
	if secret == "" {
		log.Warn("no operator secret configured: the admin API refuses every call")
	}
	if cfg.KEK == nil {
		log.Warn("no key-encryption key configured: tokens can be neither issued nor validated")
	}

	poolCfg := schema.PoolConfig{MaxConns: int32(*maxConns)}
	tp, err := startTracing(ctx, log, cfg.Region, cfg.NodeID)
	if err != nil {
		return err
	}
	if tp != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil { // flushes the spans still queued
				log.Warn("tracing: flush at shutdown", "err", err)
			}
		}()
		cfg.TracerProvider = tp
		poolCfg.Tracer = tracing.QueryTracer(tp)
	}
	pool, err := schema.Open(ctx, db, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := schema.New(pool, schema.Config{Region: cfg.Region, Node: cfg.NodeID})
	if err := store.CheckServes(ctx, cfg.Region); err != nil {
		if errors.Is(err, schema.ErrNotFound) {
			return fmt.Errorf("%w; pick one, or add it with `keyplane migrate --regions`", err)
		}
		if !errors.Is(err, schema.ErrUnavailable) {
			return err
		}
		log.Warn("database unavailable at startup; serving as not ready until it answers", "err", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	var ops net.Listener // the operator listener, when asked for
	if cfg.OperatorListener {
		if ops, err = net.Listen("tcp", *operatorListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("operator listener on %s: %w", *operatorListen, err)
		}
	}
	if defaultIssuer {
		cfg.IssuerBase = scheme + ln.Addr().String()
	}
	if apiTLS != nil {
		ln = tls.NewListener(ln, apiTLS.ServerConfig())
	}
	node, err := region.New(cfg, store, log, reg)
	if err != nil {
		_ = ln.Close()
		if ops != nil {
			_ = ops.Close()
		}
		return err
	}
	if *gossipListen != "" {
		if *advertise == "" {
			gossip.URL = scheme + ln.Addr().String()
		}
		peerLn, err := net.Listen("tcp", *peerListen)
		if err != nil {
			return fmt.Errorf("peer listen on %s: %w", *peerListen, err)
		}
		defer peerLn.Close()
		gossip.PeerURL = *peerAdvertise
		if gossip.PeerURL == "" {
			gossip.PeerURL = "https://" + peerLn.Addr().String()
			if peerTLS == nil {
				gossip.PeerURL = "http://" + peerLn.Addr().String()
			}
		}
		if peerTLS == nil {
			log.Warn("--peer-insecure: forwards between nodes are plaintext and unauthenticated")
		}
		gossip.Log = log
		members, err := routing.JoinMembership(gossip)
		if err != nil {
			return err
		}
		defer members.Leave(2 * time.Second)
		if err := node.EnableRouting(region.Routing{Peers: members, Gossip: members, HedgeAfter: *hedgeAfter,
			ForwardTimeout: *forwardTimeout, Dial: dial, PeerListener: peerLn, PeerTLS: peerTLS}); err != nil {
			return err
		}
		log.Info("multi-region routing on", "gossip", members.Addr(), "join", *join, "profile", *profile, "api", gossip.URL, "peers", gossip.PeerURL)
	}
	if ops != nil {
		opsCtx, stopOps := context.WithCancel(ctx)
		opsDone := make(chan struct{})
		go func() {
			if err := node.ServeOperator(opsCtx, ops); err != nil {
				log.Error("operator listener stopped", "err", err)
			}
			close(opsDone)
		}()
		defer func() { stopOps(); <-opsDone }()
		log.Info("operator endpoints", "addr", ops.Addr().String())
	}
	fmt.Fprintf(stdout, "keyplane %s serving region %s as node %s on %s%s\n", version(), cfg.Region, cfg.NodeID, scheme, ln.Addr())
	return node.Serve(ctx, ln)
}

// startTracing builds the tracer provider the OTEL_* environment asks for; nil when it
// asks for none. Exporter errors (a collector that does not answer) are logged.
func startTracing(ctx context.Context, log *slog.Logger, regionName, nodeID string) (*sdktrace.TracerProvider, error) {
	s, err := tracing.ParseEnv(os.Getenv)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	tp, err := tracing.New(ctx, s, tracing.Resource{Region: regionName, NodeID: nodeID, Version: version()})
	if err != nil || tp == nil {
		return nil, err
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	log.Info("tracing on", "settings", s.String())
	return tp, nil
}

// loadPeerTLS checks the peer listener's flags and loads the node's certificate, which
// must name this node; nil with --peer-insecure.
func loadPeerTLS(regionName, nodeID, listen, cert, key, ca string, insecure bool) (*routing.PeerTLS, error) {
	if listen == "" {
		return nil, usageErr("--peer-listen is required with --gossip-listen: other nodes forward requests there")
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return nil, usageErr("--peer-listen: %v", err)
	}
	if insecure {
		if cert != "" || key != "" || ca != "" {
			return nil, usageErr("--peer-insecure and --peer-cert/--peer-key/--peer-ca: choose one")
		}
		return nil, nil
	}
	if cert == "" || key == "" || ca == "" {
		return nil, usageErr("peer TLS: --peer-cert, --peer-key and --peer-ca are required with --gossip-listen; without them anyone who reaches a node can pass as one " +
			"(make them with keyplane keys new-ca and keyplane keys node-cert, or pass --peer-insecure for development)")
	}
	p, err := routing.LoadPeerTLS(cert, key, ca)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if want := (routing.Identity{Region: regionName, NodeID: nodeID}); p.Identity() != want {
		return nil, usageErr("--peer-cert names %s, but this node is %s: peers would refuse it", p.Identity(), want)
	}
	return p, nil
}

// gossipKeys reads the gossip keys from file, else from KEYPLANE_GOSSIP_KEYS.
func gossipKeys(file string) ([][]byte, error) {
	text, err := secretText(file, "KEYPLANE_GOSSIP_KEYS", "gossip key file")
	if err != nil {
		return nil, err
	}
	return routing.ParseGossipKeys(text)
}

func operatorSecret(file string) (string, error) {
	text, err := secretText(file, "KEYPLANE_OPERATOR_SECRET", "operator secret file")
	if file != "" {
		text = strings.TrimSpace(text) // a file ends with a newline
	}
	return text, err
}

// secretText reads a secret from file when one is named, else from the environment
// variable env: secrets never come from a flag's value, which ps shows.
func secretText(file, env, what string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return string(b), nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want json or text, got %q", format)
}

// parseErr turns flag parsing failures into usage errors (exit status 2).
func parseErr(err error) error {
	if errors.Is(err, errHelp) {
		return err
	}
	return usageErr("%v", err)
}

// loadKEK reads the key-encryption key from file, else from KEYPLANE_KEK; nil when
// neither is set.
func loadKEK(file string) (*kek.KEK, error) {
	text, err := secretText(file, "KEYPLANE_KEK", "kek file")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	k, err := kek.Parse(text)
	if err != nil {
		return nil, usageErr("key-encryption key: %v", err)
	}
	return k, nil
}
