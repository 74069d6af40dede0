package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema/pglocal"
	"github.com/keyplane/keyplane/schema/schematest"
)

// startServe runs serve with args until the test ends, and returns the API URL it
// prints once serving.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	url, stop := serveUntilStopped(t, args...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve after ctx cancel: %v", err)
		}
	})
	return url
}

// serveUntilStopped runs serve with args and returns the API URL it prints once
// serving, and stop, which cancels serve's context and returns what serve returned.
func serveUntilStopped(t *testing.T, args ...string) (url string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, args, w)
		_ = w.Close()
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		_, url, ok := strings.Cut(strings.TrimSpace(line), " on ")
		if !ok {
			t.Fatalf("serve printed %q (%v)", line, stop())
		}
		return url, stop
	case <-time.After(30 * time.Second):
		t.Fatalf("serve printed nothing in 30 s (%v)", stop())
	}
	return "", stop
}

// serve --operator-listen moves /metrics and /members off the API port.
func TestServeOperatorListener(t *testing.T) {
	t.Parallel()
	port, err := pglocal.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ops := "http://127.0.0.1:" + strconv.Itoa(port)
	api := startServe(t, "--db-file", dbFile(t, schematest.NewDatabase(t)), "--region", schematest.Regions[0],
		"--listen", "127.0.0.1:0", "--operator-listen", strings.TrimPrefix(ops, "http://"), "--log-level", "error")
	for url, want := range map[string]int{api + "/metrics": 404, ops + "/metrics": 200, ops + "/readyz": 200, api + "/readyz": 200} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", url, resp.Status, want)
		}
	}
}

// serve starts with the documented defaults: no --issuer-base (the issuer is the
// address it listens on, port 0 resolved), no gossip; it answers, and stops on ctx.
func TestServeDefaults(t *testing.T) {
	t.Parallel()
	db := dbFile(t, schematest.NewDatabase(t))
	url, stop := serveUntilStopped(t, "--db-file", db, "--region", schematest.Regions[0], "--listen", "127.0.0.1:0", "--log-level", "error")
	if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("serve printed ... on %q, want ... on http://127.0.0.1:<port>", url)
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve after ctx cancel: %v", err)
	}
}
