package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFrontFlags(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(state, []byte(`{"regions":[{"name":"us-east","node_urls":[]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		contains string
	}{
		{[]string{"front"}, "--node: give at least one node"},
		{[]string{"front", "--node", "http://127.0.0.1:1"}, `--node: "http://127.0.0.1:1": want REGION=URL`},
		{[]string{"front", "--node", "us-east=ftp://x"}, `url "ftp://x" must be an http(s) URL`},
		{[]string{"front", "--node", "us-east=http://127.0.0.1:1", "--prefer-region", "mars"}, `prefer region: "mars" has no node`},
		{[]string{"front", "--node", "us-east=http://127.0.0.1:1", "--health-interval", "1s", "--health-timeout", "2s"}, "health timeout"},
		{[]string{"front", "--node", "us-east=http://127.0.0.1:1", "--attempts", "0"}, "--attempts: at least 1"},
		{[]string{"front", "--state-file", "/nonexistent/state.json"}, "--state-file"},
		{[]string{"front", "--state-file", state}, "names no node"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			code, out, errs := runCLI(t, tt.args...)
			if code != 2 || !strings.Contains(out+errs, tt.contains) {
				t.Fatalf("exit %d (want 2); output lacks %q:\n%s%s", code, tt.contains, out, errs)
			}
		})
	}
}

// TestFrontServes runs the command in front of a real HTTP server standing for a node
// and reads through it once the node passed its health check.
func TestFrontServes(t *testing.T) {
	t.Parallel()
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "node "+r.URL.Path)
	}))
	defer node.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runFront(ctx, []string{"--listen", addr, "--operator-listen", "", "--node", "us-east/n1=" + node.URL,
			"--health-interval", "100ms", "--health-timeout", "100ms"}, io.Discard)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for i := 0; i < 100 && last != "node /t/acme/.well-known/jwks.json"; i++ {
		<-tick.C
		resp, err := http.Get("http://" + addr + "/t/acme/.well-known/jwks.json")
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Keyplane-Front-Node") != "us-east/n1" {
			t.Errorf("front node header %q, want us-east/n1", resp.Header.Get("Keyplane-Front-Node"))
		}
	}
	if last != "node /t/acme/.well-known/jwks.json" {
		t.Errorf("through the front: %q, want the node's answer", last)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("front after its context ended: %v", err)
	}
}
