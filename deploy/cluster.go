package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyplane/keyplane/deploy/front"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/pglocal"
)

// Config describes a local cluster.
type Config struct {
	// Binary is the keyplane executable to run nodes with; "" means this process's own.
	Binary string
	// Regions, primary first; empty means DefaultRegions[:1].
	Regions []string
	// NodesPerRegion; 0 means 1.
	NodesPerRegion int
	// Durable keeps fsync on in PostgreSQL (the demo and benchmarks want it).
	Durable bool
	// DatabaseURL, when set, uses that database instead of starting a private one.
	DatabaseURL string
	// RTT gives the simulated round trip between two regions (and within one, a == b);
	// nil means DefaultRTT.
	RTT func(a, b string) time.Duration
	// ServeArgs are extra `keyplane serve` flags for every node (never secrets: argv
	// is public). The bench uses them to lift per-address rate limits, since all its
	// load comes from one address.
	ServeArgs []string
}

// DefaultRegions are the local cluster's regions, in the order they are added.
var DefaultRegions = []string{"us-east", "eu-west", "ap-south"}

// Node is one `keyplane serve` process.
type Node struct {
	Region string
	ID     string
	URL    string // http://127.0.0.1:port
	// OperatorURL serves /members, /metrics and /debug/pprof (the node's
	// --operator-listen); the API port does not.
	OperatorURL string
	LogFile     string
	Gossip      string // gossip host:port
	Peer        string // peer listener host:port (mutual TLS): where other nodes forward to it

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	args []string
}

// Cluster is a running local cluster. Stop it when done.
type Cluster struct {
	DatabaseURL    string
	OperatorSecret string
	KEK            string // base64 key-encryption key shared by every node
	IssuerBase     string // the issuer URL prefix shared by every node: FrontURL
	// FrontURL is the global front (package deploy/front) in front of every node, this
	// cluster's stand-in for a production global name: a health-checked proxy in this
	// process that sends each request to a healthy node, preferring the region named
	// by the Keyplane-Region request header. Every tenant's issuer is under it, so no
	// single node's death breaks discovery.
	FrontURL string
	// Front is that proxy; nil once the cluster is stopped.
	Front    *front.Front
	Dir      string // temporary directory with node logs, the secret files and the cluster CA and node certificates
	Nodes    []*Node
	Postgres *pglocal.Server // nil when Config.DatabaseURL was given

	cfg       Config
	env       []string
	net       *network
	frontLn   net.Listener
	frontSrv  *http.Server
	stopFront context.CancelFunc
}

// SecretFile is the path of the file holding the operator secret.
func (c *Cluster) SecretFile() string { return filepath.Join(c.Dir, "operator-secret") }

// DatabaseURLFile is the path of the file holding the database URL (with its
// password): nodes read it with --db-file, so it never shows in their argv.
func (c *Cluster) DatabaseURLFile() string { return filepath.Join(c.Dir, "database-url") }

// Start brings a cluster up: PostgreSQL, migrations, then every node, and waits until
// each node reports ready.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if len(cfg.Regions) == 0 {
		cfg.Regions = DefaultRegions[:1]
	}
	if cfg.NodesPerRegion <= 0 {
		cfg.NodesPerRegion = 1
	}
	if cfg.RTT == nil {
		cfg.RTT = DefaultRTT
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find keyplane binary: %w", err)
		}
		cfg.Binary = exe
	}
	dir, err := os.MkdirTemp("", "keyplane-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, Dir: dir, DatabaseURL: cfg.DatabaseURL, OperatorSecret: randomSecret(), KEK: randomKey(),
		net: newNetwork(cfg.RTT, cfg.Regions)}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	if err := os.WriteFile(c.SecretFile(), []byte(c.OperatorSecret+"\n"), 0o600); err != nil {
		return nil, err
	}
	if c.DatabaseURL == "" {
		if c.Postgres, err = pglocal.Start(ctx, pglocal.Config{Durable: cfg.Durable}); err != nil {
			return nil, err
		}
		if err := c.Postgres.CreateDatabase(ctx, "keyplane", ""); err != nil {
			return nil, err
		}
		c.DatabaseURL = c.Postgres.URL("keyplane")
	}
	if err := migrate(ctx, c.DatabaseURL, cfg.Regions); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.DatabaseURLFile(), []byte(c.DatabaseURL+"\n"), 0o600); err != nil {
		return nil, err
	}
	for _, r := range cfg.Regions {
		for i := 1; i <= cfg.NodesPerRegion; i++ {
			api, err := freeAddr()
			if err != nil {
				return nil, err
			}
			gossip, err := freeAddr()
			if err != nil {
				return nil, err
			}
			peerAddr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			ops, err := freeAddr()
			if err != nil {
				return nil, err
			}
			n := &Node{Region: r, ID: fmt.Sprintf("%s-%d", r, i), URL: "http://" + api, OperatorURL: "http://" + ops, Gossip: gossip, Peer: peerAddr}
			n.LogFile = filepath.Join(dir, n.ID+".log")
			c.Nodes = append(c.Nodes, n)
		}
	}
	// Every region's clients reach every node through a latency proxy, and so do the
	// nodes of every other region.
	for _, n := range c.Nodes {
		for _, from := range cfg.Regions {
			if _, err := c.net.add("client", from, n); err != nil {
				return nil, err
			}
			if from != n.Region {
				if _, err := c.net.add("peer", from, n); err != nil {
					return nil, err
				}
			}
		}
	}
	var seeds []string
	for _, r := range cfg.Regions {
		seeds = append(seeds, c.RegionNodes(r)[0].Gossip)
	}
	for _, n := range c.Nodes {
		var dial []string
		for _, r := range cfg.Regions {
			if r == n.Region {
				continue
			}
			for _, l := range c.net.linksTo("peer", n.Region, r) {
				dial = append(dial, l.Node.Peer+"="+l.Addr)
			}
		}
		// Secrets (database URL, operator secret, KEK, gossip key) go by file or
		// environment, never argv: ps shows argv to every user of the machine.
		n.args = []string{"serve", "--region", n.Region, "--node-id", n.ID, "--listen", strings.TrimPrefix(n.URL, "http://"),
			"--operator-listen", strings.TrimPrefix(n.OperatorURL, "http://"),
			"--db-file", c.DatabaseURLFile(), "--log-format", "json", "--gossip-listen", n.Gossip, "--gossip-profile", "local",
			"--join", strings.Join(seeds, ","), "--peer-dial-map", strings.Join(dial, ","),
			"--peer-listen", n.Peer, "--peer-cert", c.certFile(n.ID + ".crt"), "--peer-key", c.certFile(n.ID + ".key"), "--peer-ca", c.certFile("ca.crt")}
		n.args = append(n.args, cfg.ServeArgs...)
	}
	if err := c.issueCerts(ctx); err != nil {
		return nil, err
	}
	// Tokens carry the issuer, so every node must agree on it: the front's URL, which
	// outlives any node.
	if c.frontLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	c.FrontURL = "http://" + c.frontLn.Addr().String()
	c.IssuerBase = c.FrontURL
	c.env = append(os.Environ(), "KEYPLANE_OPERATOR_SECRET="+c.OperatorSecret, "KEYPLANE_KEK="+c.KEK, "KEYPLANE_GOSSIP_KEYS="+randomKey(),
		"KEYPLANE_ISSUER_BASE="+c.IssuerBase)
	errs := make(chan error, len(c.Nodes))
	for _, n := range c.Nodes {
		go func() { errs <- c.StartNode(ctx, n) }()
	}
	var startErr []error
	for range c.Nodes {
		startErr = append(startErr, <-errs)
	}
	if err := errors.Join(startErr...); err != nil {
		return nil, err
	}
	if err := c.WaitRouted(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := c.startFront(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// FrontHealth is how often the cluster's front polls every node's /readyz.
const FrontHealth = 500 * time.Millisecond

// startFront serves the front on the listener reserved for it, over every node by its
// own address (no simulated latency: the front stands for a global name, not a
// region), once it saw the nodes ready.
func (c *Cluster) startFront(ctx context.Context) error {
	cfg := front.DefaultConfig()
	cfg.HealthInterval, cfg.HealthTimeout = FrontHealth, 400*time.Millisecond
	for _, n := range c.Nodes {
		cfg.Nodes = append(cfg.Nodes, front.Node{Region: n.Region, Name: n.ID, URL: n.URL})
	}
	f, err := front.New(cfg)
	if err != nil {
		return fmt.Errorf("front: %w", err)
	}
	f.Check(ctx)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go f.Run(runCtx)
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // gRPC clients
	go func() { _ = srv.Serve(c.frontLn) }()
	c.Front, c.frontSrv, c.stopFront = f, srv, cancel
	return nil
}

func (c *Cluster) certFile(name string) string { return filepath.Join(c.Dir, "tls", name) }

// issueCerts makes the cluster's CA and one certificate per node (naming its region
// and node id, for 127.0.0.1) with the keyplane binary, as an operator would.
func (c *Cluster) issueCerts(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(c.Dir, "tls"), 0o700); err != nil {
		return err
	}
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, c.cfg.Binary, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("keyplane %s: %w\n%s", strings.Join(args[:2], " "), err, out)
		}
		return nil
	}
	ca, caKey := c.certFile("ca.crt"), c.certFile("ca.key")
	if err := run("keys", "new-ca", "--cert", ca, "--key", caKey, "--name", "keyplane local cluster CA", "--validity", "720h"); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := run("keys", "node-cert", "--ca-cert", ca, "--ca-key", caKey, "--region", n.Region, "--node-id", n.ID,
			"--host", "127.0.0.1,localhost", "--cert", c.certFile(n.ID+".crt"), "--key", c.certFile(n.ID+".key"), "--validity", "720h"); err != nil {
			return err
		}
	}
	return nil
}

func migrate(ctx context.Context, url string, regions []string) error {
	pool, err := schema.Open(ctx, url, schema.PoolConfig{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = schema.Migrate(ctx, pool, schema.MigrateConfig{Regions: regions})
	return err
}

// StartNode starts (or restarts) a node's process and waits until it is ready.
func (c *Cluster) StartNode(ctx context.Context, n *Node) error {
	logf, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.cfg.Binary, n.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	return n.waitReady(ctx, 30*time.Second)
}

func (n *Node) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-n.done:
			log, _ := os.ReadFile(n.LogFile)
			return fmt.Errorf("node %s exited during startup: %s", n.ID, tail(log, 1500))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := client.Get(n.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not ready after %s (log: %s)", n.ID, limit, n.LogFile)
		}
	}
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the node's process.
func (n *Node) Signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return errors.New("node not started")
	}
	return n.cmd.Process.Signal(sig)
}

// Stop asks the node to shut down (SIGTERM) and waits, killing it after 15 seconds.
func (n *Node) Stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// WaitFront waits until the front's health view matches the nodes' processes: every
// running node healthy and every stopped one out of rotation.
func (c *Cluster) WaitFront(ctx context.Context, limit time.Duration) error {
	if c.Front == nil {
		return errors.New("the cluster's front is stopped")
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(limit)
	for {
		var wrong []string
		seen := c.Front.Nodes()
		for _, n := range c.Nodes {
			for fn, healthy := range seen {
				if fn.Name == n.ID && healthy != n.Running() {
					wrong = append(wrong, fmt.Sprintf("%s (running %v, healthy to the front %v)", n.ID, n.Running(), healthy))
				}
			}
		}
		if len(wrong) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the front's view differs after %v: %s", limit, strings.Join(wrong, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stop stops the front, every node, then PostgreSQL, and removes the cluster's directory.
func (c *Cluster) Stop() {
	if c.stopFront != nil {
		c.stopFront()
		_ = c.frontSrv.Close()
		c.Front.Close()
		c.Front, c.stopFront = nil, nil
	} else if c.frontLn != nil {
		_ = c.frontLn.Close()
	}
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
	c.net.stop()
	if c.Postgres != nil {
		_ = c.Postgres.Stop()
	}
	_ = os.RemoveAll(c.Dir)
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	return string(b[max(0, len(b)-n):])
}

// RegionNodes returns the nodes of a region.
func (c *Cluster) RegionNodes(region string) []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Region == region {
			out = append(out, n)
		}
	}
	return out
}

// Regions returns the cluster's regions, primary first.
func (c *Cluster) Regions() []string { return slices.Clone(c.cfg.Regions) }

// ClientURLs returns the URLs an application placed in region from uses to reach the
// nodes of region to: each goes through a proxy adding the simulated round trip.
func (c *Cluster) ClientURLs(from, to string) []string {
	var out []string
	for _, l := range c.net.linksTo("client", from, to) {
		out = append(out, l.URL())
	}
	return out
}

// RTT is the simulated round trip between two regions.
func (c *Cluster) RTT(a, b string) time.Duration { return c.net.RTT(a, b) }

// SetRTT changes the simulated round trip between two regions while the cluster runs.
func (c *Cluster) SetRTT(a, b string, rtt time.Duration) error { return c.net.SetRTT(a, b, rtt) }

// Partition cuts the network from region a to region b, and back unless oneWay:
// clients of one region can no longer reach the other's nodes, nor can its nodes
// forward there. Gossip is not cut (it is not proxied).
func (c *Cluster) Partition(a, b string, oneWay bool) error { return c.net.Partition(a, b, oneWay) }

// Heal undoes Partition between a and b.
func (c *Cluster) Heal(a, b string) error { return c.net.Heal(a, b) }

// WaitRouted waits until every running node's gossip (GET /members on its operator
// listener) lists every
// running node as alive and ready, so requests route as they will in steady state.
func (c *Cluster) WaitRouted(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for {
		var want []string
		for _, n := range c.Nodes {
			if n.Running() {
				want = append(want, n.ID)
			}
		}
		slices.Sort(want)
		lagging := ""
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			if got, all, err := readyMembers(ctx, client, n.OperatorURL); err != nil || !slices.Equal(got, want) {
				lagging = fmt.Sprintf("node %s sees %v ready, want %v (all it lists: %s; err %v)", n.ID, got, want, all, err)
				break
			}
		}
		if lagging == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gossip did not converge in %s: %s", limit, lagging)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readyMembers returns the sorted ids of the alive, ready nodes a node's gossip knows,
// and every member it lists with its state, for error messages.
func readyMembers(ctx context.Context, client *http.Client, url string) (ready []string, all string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/members", nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Members []struct {
			NodeID string `json:"node_id"`
			Ready  bool   `json:"ready"`
			State  string `json:"state"`
		} `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, "", fmt.Errorf("GET /members: %w", err)
	}
	var listed []string
	for _, m := range body.Members {
		listed = append(listed, fmt.Sprintf("%s %s ready=%v", m.NodeID, m.State, m.Ready))
		if m.Ready && m.State == "alive" {
			ready = append(ready, m.NodeID)
		}
	}
	slices.Sort(ready)
	return ready, strings.Join(listed, ", "), nil
}

// Pid is the node's process id, 0 when it is not running.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Build compiles cmd/keyplane into dir, with extra go build flags (such as -race), and
// returns the binary's path: tests and benchmarks outside cmd run the real binary as
// cluster nodes.
func Build(dir string, flags ...string) (string, error) {
	bin := filepath.Join(dir, "keyplane")
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/keyplane/keyplane/cmd/keyplane")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build keyplane: %w\n%s", err, out)
	}
	return bin, nil
}
