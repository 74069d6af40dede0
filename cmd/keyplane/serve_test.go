package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema/schematest"
)

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
