package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyplane/keyplane/deploy/demo"
	"github.com/keyplane/keyplane/deploy/front"
)

func runFront(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "front", "Run a global front: one URL in front of every region's nodes, so that tenants' issuers (--issuer-base on every node) survive the death of any node or region. It polls every node's /readyz and sends each request to a healthy node, of the caller's region when known (the Keyplane-Region request header, else --prefer-region), else any healthy node round robin. The node's router forwards it to the tenant's home region as usual. In production the global name is GeoDNS, anycast or a GSLB (docs/operations.md); this command is the demo's and a test rig's.", `
Retries: a request that fails at transport level goes to the next healthy node when it
never reached a node (connection refused, dial timeout) or is safe to repeat (GET, HEAD,
introspection, revocation, or any call with an Idempotency-Key). Token minting without a
key that failed after it was sent is answered 502 "outcome unknown", never sent twice. With no healthy node the answer is 503
temporarily_unavailable at once.

Nodes see the front as the client: per-address rate limits count the front's address
(nodes trust no X-Forwarded-For; the front sets it for logs only).

Examples:
  keyplane front --listen :8000 --node us-east=http://10.0.1.5:8080 --node us-east=http://10.0.1.6:8080 \
      --node eu-west=http://10.1.1.5:8080 --prefer-region us-east
  keyplane front --state-file demo-state.json      # every node of a running keyplane demo
  # then on every node: keyplane serve --issuer-base http://front.example:8000 ...`)
	fs := c.flags
	var nodes listFlag
	fs.Var(&nodes, "node", "REGION=URL (or REGION/NAME=URL) of a node's API (repeatable, or ';'-separated in the environment)")
	stateFile := fs.String("state-file", "", "take the nodes from a keyplane demo state file (its regions' node_urls)")
	listen := fs.String("listen", "127.0.0.1:8000", "host:port the front serves on (HTTP/1.1 and h2c)")
	opsListen := fs.String("operator-listen", "127.0.0.1:9104", "host:port serving /metrics and /healthz (empty: none)")
	prefer := fs.String("prefer-region", "", "region preferred for requests without a Keyplane-Region header (empty: none, round robin over every healthy node)")
	d := front.DefaultConfig()
	interval := fs.Duration("health-interval", d.HealthInterval, "how often every node's /readyz is polled")
	timeout := fs.Duration("health-timeout", d.HealthTimeout, "longest one /readyz poll may take (at most --health-interval)")
	respTimeout := fs.Duration("response-timeout", d.ResponseTimeout, "longest wait for a node's response headers once a request is sent")
	attempts := fs.Int("attempts", d.Attempts, "nodes one request may be tried on (1 to 10)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	ns, err := front.ParseNodes(nodes)
	if err != nil {
		return usageErr("--node: %v", err)
	}
	if *stateFile != "" {
		more, err := stateNodes(*stateFile)
		if err != nil {
			return usageErr("--state-file: %v", err)
		}
		ns = append(ns, more...)
	}
	if len(ns) == 0 {
		return usageErr("--node: give at least one node (or --state-file)")
	}
	if *interval <= 0 || *timeout <= 0 || *respTimeout <= 0 {
		return usageErr("--health-interval, --health-timeout and --response-timeout must be positive")
	}
	if *attempts < 1 {
		return usageErr("--attempts: at least 1, got %d", *attempts)
	}
	log, err := newLogger(os.Stderr, *logLevel, "text")
	if err != nil {
		return usageErr("%v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f, err := front.New(front.Config{Nodes: ns, PreferRegion: *prefer, HealthInterval: *interval, HealthTimeout: *timeout,
		ResponseTimeout: *respTimeout, Attempts: *attempts, Log: log, Metrics: reg})
	if err != nil {
		return usageErr("%v", err)
	}
	defer f.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	if *opsListen != "" {
		ops, err := net.Listen("tcp", *opsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("--operator-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		osrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = osrv.Serve(ops) }()
		defer osrv.Close()
		fmt.Fprintf(stdout, "front: metrics on http://%s/metrics\n", ops.Addr())
	}
	go f.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "front: serving http://%s in front of %d nodes; give every node the URL clients reach it at as --issuer-base\n", ln.Addr(), len(ns))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// stateNodes reads every region's node URLs from a demo state file.
func stateNodes(path string) ([]front.Node, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st demo.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []front.Node
	for _, r := range st.Regions {
		for _, u := range r.NodeURLs {
			out = append(out, front.Node{Region: r.Name, URL: u})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no node", path)
	}
	return out, nil
}
