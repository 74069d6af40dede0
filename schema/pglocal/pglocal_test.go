package pglocal_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/procfs"

	"github.com/keyplane/keyplane/schema/pglocal"
)

// TestSignalAllReachesBackends freezes a server with a connection open: the backend
// serving it (its own session leader, not in the postmaster's process group) must
// stop too, and Crash must kill it.
func TestSignalAllReachesBackends(t *testing.T) {
	t.Parallel()
	if _, err := pglocal.FindBinaries(); err != nil {
		t.Fatal(err) // make test installs them; a missing server is a failure, not a skip
	}
	ctx := context.Background()
	s, err := pglocal.Start(ctx, pglocal.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	if pgid, err := syscall.Getpgid(backend); err != nil || pgid == s.PID() {
		t.Fatalf("backend %d is in process group %d (%v): this test needs it outside the postmaster's (%d)", backend, pgid, err, s.PID())
	}

	if err := s.SignalAll(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, backend, "T")
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = conn.QueryRow(qctx, "SELECT 1").Scan(new(int))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("query on a frozen server: %v, want a timeout", err)
	}
	if err := s.SignalAll(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	conn2, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("connect after thaw: %v", err)
	}
	defer conn2.Close(context.Background())
	if err := conn2.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}

	s.Crash()
	if s.PID() != 0 {
		t.Fatal("postmaster still running after Crash")
	}
	if p, err := procfs.NewProc(backend); err == nil {
		if st, err := p.Stat(); err == nil && st.State != "Z" {
			t.Fatalf("backend %d still alive (%s) after Crash", backend, st.State)
		}
	}
}

func waitState(t *testing.T, pid int, want string) {
	t.Helper()
	var got string
	for range 100 {
		p, err := procfs.NewProc(pid)
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if got = st.State; got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d is in state %s, want %s", pid, got, want)
}
