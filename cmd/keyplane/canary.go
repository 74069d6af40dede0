package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyplane/keyplane/canary"
)

func runCanary(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "canary", "Watch the revocation promise from outside, through the standard OAuth endpoints: every round, for every pair of regions, get a token from one region (client credentials), revoke it at the other, and introspect it at every region at once as soon as the revocation returns. A region that still says active is a stale read, counted in keyplane_canary_revocation_stale_total (it must stay 0); the time until each region says inactive is keyplane_canary_revocation_visible_seconds. Metrics are served on --listen for Prometheus (docs/operations.md has the alerts).", `
The client is an OAuth client of the tenant (any client: a client may introspect and
revoke its own tokens; give its identity no permission). Its secret comes from
--client-secret-file or KEYPLANE_CANARY_CLIENT_SECRET, never a flag value.

Examples:
  keyplane canary --tenant canary --client-id cl_... --client-secret-file /etc/canary/secret \
      --region us-east=https://us-east.iam.example --region eu-west=https://eu-west.iam.example \
      --region ap-south=https://ap-south.iam.example --listen :9102
  keyplane canary ... --rounds 1     # one round, then exit 1 if anything was stale or failed`)
	fs := c.flags
	var regions listFlag
	fs.Var(&regions, "region", "NAME=URL of a region's API, as applications reach it (repeatable, or ';'-separated in the environment; at least one)")
	tenant := fs.String("tenant", "", "the tenant the canary's client belongs to (required)")
	clientID := fs.String("client-id", "", "the canary's OAuth client id (required)")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (or KEYPLANE_CANARY_CLIENT_SECRET)")
	interval := fs.Duration("interval", 15*time.Second, "time between rounds")
	timeout := fs.Duration("timeout", 10*time.Second, "longest a call may take")
	rounds := fs.Int("rounds", 0, "stop after this many rounds and exit non-zero if any saw a stale read or an error (0: run until stopped)")
	listen := fs.String("listen", "127.0.0.1:9102", "host:port serving /metrics (empty: none)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	rs, err := canary.Regions(regions)
	if err != nil {
		return usageErr("--region: %v", err)
	}
	if *interval <= 0 || *timeout <= 0 || *rounds < 0 {
		return usageErr("--interval and --timeout must be positive and --rounds 0 or more")
	}
	secret, err := secretText(*secretFile, "KEYPLANE_CANARY_CLIENT_SECRET", "client secret file")
	if err != nil {
		return usageErr("%v", err)
	}
	log, err := newLogger(os.Stderr, *logLevel, "text")
	if err != nil {
		return usageErr("%v", err)
	}
	reg := prometheus.NewRegistry()
	can, err := canary.New(canary.Config{Regions: rs, Tenant: *tenant, ClientID: *clientID, ClientSecret: strings.TrimSpace(secret),
		Timeout: *timeout, Registry: reg, Log: log})
	if err != nil {
		return usageErr("%v", err)
	}
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		fmt.Fprintf(stdout, "canary: metrics on http://%s/metrics\n", ln.Addr())
	}
	bad := 0
	for i, r := range can.Run(ctx, *interval, *rounds) {
		for _, s := range r.Stale {
			fmt.Fprintf(stdout, "round %d: STALE: %s\n", i+1, s)
		}
		for _, e := range r.Errors {
			fmt.Fprintf(stdout, "round %d: error: %v\n", i+1, e)
		}
		if len(r.Stale)+len(r.Errors) > 0 {
			bad++
			continue
		}
		fmt.Fprintf(stdout, "round %d: %d region pairs, no stale read\n", i+1, r.Pairs)
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d rounds saw a stale read or an error", bad, *rounds)
	}
	if ctx.Err() != nil && *rounds > 0 {
		return errors.New("stopped before the rounds were done")
	}
	return nil
}
