package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

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
}

// DefaultRegions are the local cluster's regions, in the order they are added.
var DefaultRegions = []string{"us-east", "eu-west", "ap-south"}

// Node is one `keyplane serve` process.
type Node struct {
	Region  string
	ID      string
	URL     string // http://127.0.0.1:port
	LogFile string

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
	IssuerBase     string // the issuer URL prefix shared by every node
	Dir            string // temporary directory with node logs and the operator secret file
	Nodes          []*Node
	Postgres       *pglocal.Server // nil when Config.DatabaseURL was given

	cfg Config
	env []string
}

// SecretFile is the path of the file holding the operator secret.
func (c *Cluster) SecretFile() string { return filepath.Join(c.Dir, "operator-secret") }

// Start brings a cluster up: PostgreSQL, migrations, then every node, and waits until
// each node reports ready.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if len(cfg.Regions) == 0 {
		cfg.Regions = DefaultRegions[:1]
	}
	if cfg.NodesPerRegion <= 0 {
		cfg.NodesPerRegion = 1
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
	c := &Cluster{cfg: cfg, Dir: dir, DatabaseURL: cfg.DatabaseURL, OperatorSecret: randomSecret(), KEK: randomKEK()}
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
	for _, r := range cfg.Regions {
		for i := 1; i <= cfg.NodesPerRegion; i++ {
			port, err := pglocal.FreePort()
			if err != nil {
				return nil, err
			}
			n := &Node{Region: r, ID: fmt.Sprintf("%s-%d", r, i), URL: "http://127.0.0.1:" + strconv.Itoa(port)}
			n.LogFile = filepath.Join(dir, n.ID+".log")
			n.args = []string{"serve", "--region", r, "--node-id", n.ID, "--listen", "127.0.0.1:" + strconv.Itoa(port),
				"--db", c.DatabaseURL, "--log-format", "json"}
			c.Nodes = append(c.Nodes, n)
		}
	}
	// Tokens carry the issuer, so every node must agree on it: the first node's URL.
	c.IssuerBase = c.Nodes[0].URL
	c.env = append(os.Environ(), "KEYPLANE_OPERATOR_SECRET="+c.OperatorSecret, "KEYPLANE_KEK="+c.KEK,
		"KEYPLANE_ISSUER_BASE="+c.IssuerBase)
	for _, n := range c.Nodes {
		if err := c.StartNode(ctx, n); err != nil {
			return nil, err
		}
	}
	ok = true
	return c, nil
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

// Stop stops every node, then PostgreSQL, and removes the cluster's directory.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
	if c.Postgres != nil {
		_ = c.Postgres.Stop()
	}
	_ = os.RemoveAll(c.Dir)
}

func randomSecret() string {
	return "kp-op-" + randomHex(24)
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	return string(b[max(0, len(b)-n):])
}
