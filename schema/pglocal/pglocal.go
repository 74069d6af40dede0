// Package pglocal starts a private PostgreSQL server for tests, the demo, benchmarks
// and chaos drills: initdb into a temporary directory, listen on 127.0.0.1 on a free
// port, stop and clean up afterwards.
//
// When the process runs as root, initdb and postgres run as the "postgres" OS user
// (PostgreSQL refuses to run as root). The server gets SIGQUIT if its parent dies, and
// Start removes directories left behind by launchers that died.
package pglocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/procfs"
)

// InstallHint tells a person how to get the server binaries.
const InstallHint = "install them with `make postgres` (runs apt-get install postgresql as root) " +
	"or `sudo apt-get install postgresql`, or put initdb and postgres on PATH"

// ErrNoBinaries means no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found in PATH or /usr/lib/postgresql/*/bin; " + InstallHint)

// Config tunes Start. The zero value is a fast, non-durable server for tests.
type Config struct {
	// Durable keeps fsync and synchronous commit on. Tests leave it off for speed; the
	// demo, benchmarks and chaos drills turn it on so acknowledged writes survive.
	Durable bool
	// Port to listen on; 0 picks a free one.
	Port int
	// MaxConnections; 0 means 200.
	MaxConnections int
	// TempDir is where the data directory is created; "" means os.TempDir().
	TempDir string
}

// Server is a running private PostgreSQL. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	bin      string
	dir      string // temporary directory holding data/, the password file and the log
	port     int
	password string
	cred     *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits
}

const superuser = "keyplane"

// FindBinaries returns the directory holding initdb and postgres.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises a data directory and starts the server. Call Stop when done.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	removeStale(cfg.TempDir)
	dir, err := os.MkdirTemp(cfg.TempDir, "keyplane-pg-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	s := &Server{cfg: cfg, bin: bin, dir: dir, password: rand.Text()}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			return fail(err)
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fail(fmt.Errorf("chown temp dir: %w", err))
		}
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(s.password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	if s.cred != nil {
		_ = os.Chown(pwfile, int(s.cred.Uid), int(s.cred.Gid))
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", s.DataDir(), "-U", superuser,
		"--auth=scram-sha-256", "--pwfile="+pwfile, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w: %s", err, tail(out, 800)))
	}
	_ = os.Remove(pwfile)
	for attempt := 0; ; attempt++ {
		s.port = cfg.Port
		if s.port == 0 {
			if s.port, err = FreePort(); err != nil {
				return fail(err)
			}
		}
		err = s.launch(ctx)
		if err == nil {
			return s, nil
		}
		if cfg.Port != 0 || attempt == 4 || ctx.Err() != nil {
			return fail(err)
		}
	}
}

func (s *Server) launch(ctx context.Context) error {
	maxConns := s.cfg.MaxConnections
	if maxConns == 0 {
		maxConns = 200
	}
	args := []string{"-D", s.DataDir(), "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "max_connections=" + strconv.Itoa(maxConns), "-c", "shared_buffers=128MB",
		"-c", "max_pred_locks_per_transaction=256", "-c", "log_min_messages=warning"}
	if !s.cfg.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	logf, err := os.OpenFile(s.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(s.LogFile())
			return fmt.Errorf("postgres exited during startup: %s", tail(log, 1500))
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("postgres did not accept connections within 60s: %w", err)
		}
	}
}

// URL returns a connection string for database on this server as the superuser.
func (s *Server) URL(database string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(superuser, s.password),
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + database,
		RawQuery: "sslmode=disable"}
	return u.String()
}

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// LogFile is where the server's output goes.
func (s *Server) LogFile() string { return filepath.Join(s.dir, "postgres.log") }

// PID returns the postmaster's process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	select {
	case <-s.done:
		return 0
	default:
		return s.cmd.Process.Pid
	}
}

// CreateDatabase creates database name, as a copy of template when it is not "".
func (s *Server) CreateDatabase(ctx context.Context, name, template string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Signal sends sig to the postmaster only.
func (s *Server) Signal(sig syscall.Signal) error {
	pid := s.PID()
	if pid == 0 {
		return errors.New("postgres is not running")
	}
	return syscall.Kill(pid, sig)
}

// SignalAll sends sig to the postmaster and every process it started (backends,
// checkpointer, walwriter…). PostgreSQL makes each child the leader of its own process
// group (setsid), so signalling the postmaster's group would miss them: a "frozen"
// server would go on answering on its open connections. Chaos drills freeze the whole
// server with SignalAll(SIGSTOP) and thaw it with SIGCONT.
func (s *Server) SignalAll(sig syscall.Signal) error {
	pid := s.PID()
	if pid == 0 {
		return errors.New("postgres is not running")
	}
	return signalTree(pid, sig)
}

// signalTree signals pid first (so a stopping postmaster forks no new child), then its
// children.
func signalTree(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	for _, c := range children(pid) {
		_ = syscall.Kill(c, sig)
	}
	return err
}

// children lists the live processes whose parent is pid, from /proc.
func children(pid int) []int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range procs {
		st, err := p.Stat()
		if err == nil && st.PPID == pid && st.State != "Z" {
			out = append(out, p.PID)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z"
}

// Crash kills the server and all its backends at once, like a machine failure.
func (s *Server) Crash() {
	s.kill()
}

// Restart starts the server again on the same port and data directory after Crash.
func (s *Server) Restart(ctx context.Context) error {
	if s.PID() != 0 {
		return errors.New("postgres is still running")
	}
	// A backend of the crashed server may still hold its shared memory for a moment.
	var err error
	for range 10 {
		if err = s.launch(ctx); err == nil || !strings.Contains(err.Error(), "shared memory block") {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return err
}

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	// Every child is its own process group (see SignalAll): kill them one by one, with
	// the postmaster, at once.
	kids := children(cmd.Process.Pid)
	_ = signalTree(cmd.Process.Pid, syscall.SIGKILL)
	for _, c := range kids {
		_ = syscall.Kill(c, syscall.SIGCONT)
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
	<-done
	// Until the children are gone they hold the shared memory a restart needs: wait
	// (at most 3 s) for them.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range 60 {
		if !slices.ContainsFunc(kids, alive) {
			return
		}
		<-tick.C
	}
}

// Stop shuts the server down (fast shutdown, then SIGKILL after 10s) and removes its
// directory. It is safe to call more than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = signalTree(cmd.Process.Pid, syscall.SIGCONT) // a frozen server cannot shut down
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.kill()
		}
	}
	return os.RemoveAll(s.dir)
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the \"postgres\" OS user to run the server (%w); %s", err, InstallHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// removeStale deletes keyplane-pg-* directories whose launcher process is gone.
func removeStale(tempDir string) {
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(tempDir, "keyplane-pg-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
				if ppid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pm), "\n", 2)[0])); err == nil && ppid > 0 {
					_ = syscall.Kill(ppid, syscall.SIGQUIT)
				}
			}
			_ = os.RemoveAll(d)
		}
	}
}

// FreePort reserves a TCP port on 127.0.0.1 for a listener opened later, often by
// another process (PostgreSQL, cluster nodes, proxies). Ports come from below the
// kernel's ephemeral range (32768+), so outgoing connections made meanwhile cannot take
// them, and this process never hands the same port out twice.
//
// A port handed out stays reserved for this process's lifetime against every other
// process that uses FreePort (a lock file per port): a node of one test's cluster that
// is killed and restarted on its ports finds them free, not taken meanwhile by the
// cluster of a test running in parallel in another test binary.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + mrand.IntN(12000)
		if portsUsed[port] || !reserve(port) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: none free between 20000 and 32000 on 127.0.0.1")
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
	portLocks []*os.File // held until the process exits; kept so no finalizer closes them
)

// reserve takes port for this process: an exclusive lock on a file named after it,
// which the kernel releases when the process exits. It reports false when another
// process holds the port. Callers hold portsMu.
func reserve(port int) bool {
	dir := filepath.Join(os.TempDir(), "keyplane-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return false
	}
	portsUsed[port] = true
	portLocks = append(portLocks, f)
	return true
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
