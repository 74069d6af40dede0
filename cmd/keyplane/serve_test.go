package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema/pglocal"
	"github.com/keyplane/keyplane/schema/schematest"
)

// startServe runs serve with args until the test ends, and returns the API URL it
// prints once serving.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, args, w)
		_ = w.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve after ctx cancel: %v", err)
		}
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
			t.Fatalf("serve printed %q", line)
		}
		return url
	case <-time.After(30 * time.Second):
		t.Fatal("serve printed nothing in 30 s")
	}
	return ""
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--db-file", db, "--region", schematest.Regions[0], "--listen", "127.0.0.1:0", "--log-level", "error"}, w)
		_ = w.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		t.Fatalf("serve exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve printed nothing in 30 s")
	}
	_, url, ok := strings.Cut(strings.TrimSpace(line), " on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("serve printed %q, want ... on http://127.0.0.1:<port>", line)
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after ctx cancel: %v", err)
	}
}
