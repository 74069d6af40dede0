package main

import (
	"context"
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

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

func runServe(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "serve", "Run a region node: the Connect/gRPC API, /healthz, /readyz and /metrics on one port.", `
The operator secret that guards the admin API is read from KEYPLANE_OPERATOR_SECRET or
from the file named by --operator-secret-file (never from a flag value, which would show
in ps). Without one, the admin API refuses every call.

The key-encryption key (32 bytes, base64) that seals signing keys at rest is read from
KEYPLANE_KEK or --kek-file; every node of a deployment needs the same one. Without it
the node cannot issue or validate tokens. Make one with: keyplane keys new-kek

Multi-region: give every node --gossip-listen and --join (any nodes of any regions; a
node keeps retrying the ones it has not reached) and the cluster's gossip key, which
encrypts and authenticates gossip: KEYPLANE_GOSSIP_KEYS or --gossip-key-file (base64
keys, one a line, the one that encrypts first; make one with keyplane keys
new-gossip-key). Without a key, serve refuses to gossip unless --gossip-insecure. Nodes then learn each other's region,
API URL and readiness, and a request for a tenant homed in another region is forwarded
once, whole, to a ready node there (Keyplane-Route: forwarded), or served here against
the database when none answers (Keyplane-Route: degraded). Without --gossip-listen the
node serves every request itself.

Example:
  KEYPLANE_OPERATOR_SECRET=$(cat secret) keyplane serve --region us-east \
      --db postgres://keyplane@127.0.0.1:5432/keyplane --listen 127.0.0.1:8080`)
	cfg := region.DefaultConfig()
	fs := c.flags
	fs.StringVar(&cfg.Region, "region", "", "the region this node serves (required; one of the database's regions)")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "node id used in logs, metrics, audit events and the Keyplane-Served-By header")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on (HTTP/1.1 and h2c)")
	db := fs.String("db", "", "database URL, postgres://… (required)")
	secretFile := fs.String("operator-secret-file", "", "file holding the operator secret")
	kekFile := fs.String("kek-file", "", "file holding the key-encryption key (base64 of 32 bytes)")
	fs.StringVar(&cfg.IssuerBase, "issuer-base", "", "URL prefix of tenant issuers, the same on every node (default http://<listen address>)")
	maxConns := fs.Int("max-conns", 0, "database pool size (0: 4 per CPU, at least 8)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or text")
	advertise := fs.String("advertise-url", "", "API URL other nodes reach this node at (default http://<listen address>)")
	gossipListen := fs.String("gossip-listen", "", "host:port for gossip (TCP and UDP); empty disables multi-region routing")
	gossipAdvertise := fs.String("gossip-advertise", "", "host:port other nodes reach this node's gossip at (default: --gossip-listen)")
	join := fs.String("join", "", "comma-separated gossip host:port of nodes to join")
	gossipKeyFile := fs.String("gossip-key-file", "", "file holding the gossip keys (or KEYPLANE_GOSSIP_KEYS): base64, one a line, the encrypting one first")
	gossipInsecure := fs.Bool("gossip-insecure", false, "gossip without a key: anyone who reaches the gossip port joins the cluster (development only)")
	profile := fs.String("gossip-profile", routing.ProfileWAN, "gossip timing: wan (dead node noticed in ~6s), lan (~3s) or local (~2s, one machine)")
	hedgeAfter := fs.Duration("hedge-after", 0, "send a slow idempotent forward to a second home node after this long (0: twice the recent forward latency)")
	forwardTimeout := fs.Duration("forward-timeout", 10*time.Second, "longest a forward may take when the caller set no deadline")
	dialMap := fs.String("peer-dial-map", "", "comma-separated from=to host:port rewrites applied when dialing peers (simulated networks)")
	loginFlags(fs, &cfg.Login)
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *db == "" {
		return usageErr("--db is required (or KEYPLANE_DB)")
	}
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
		gossip.URL = "http://" + *listen
	}
	if *gossipListen != "" {
		if err := gossip.Validate(); err != nil {
			return usageErr("%v", err)
		}
	}
	secret, err := operatorSecret(*secretFile)
	if err != nil {
		return err
	}
	cfg.OperatorSecret = region.Secret(secret)
	if cfg.KEK, err = loadKEK(*kekFile); err != nil {
		return err
	}
	defaultIssuer := cfg.IssuerBase == ""
	if defaultIssuer {
		cfg.IssuerBase = "http://" + *listen // the address actually bound, once listening
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

	pool, err := schema.Open(ctx, *db, schema.PoolConfig{MaxConns: int32(*maxConns)})
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
	if defaultIssuer {
		cfg.IssuerBase = "http://" + ln.Addr().String()
	}
	node, err := region.New(cfg, store, log, reg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if *gossipListen != "" {
		if *advertise == "" {
			gossip.URL = "http://" + ln.Addr().String()
		}
		gossip.Log = log
		members, err := routing.JoinMembership(gossip)
		if err != nil {
			return err
		}
		defer members.Leave(2 * time.Second)
		if err := node.EnableRouting(region.Routing{Peers: members, Gossip: members, HedgeAfter: *hedgeAfter,
			ForwardTimeout: *forwardTimeout, Dial: dial}); err != nil {
			return err
		}
		log.Info("multi-region routing on", "gossip", members.Addr(), "join", *join, "profile", *profile, "api", gossip.URL)
	}
	fmt.Fprintf(stdout, "keyplane %s serving region %s as node %s on http://%s\n", version(), cfg.Region, cfg.NodeID, ln.Addr())
	return node.Serve(ctx, ln)
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
