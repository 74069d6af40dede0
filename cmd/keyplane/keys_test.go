package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/routing"
)

// TestKeysNewCAAndNodeCert: the CLI writes a CA and a node certificate that serve's
// peer TLS accepts, keys readable by the owner only, and never overwrites a file.
func TestKeysNewCAAndNodeCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	if code, out, errs := runCLI(t, "keys", "new-ca", "--cert", p("ca.crt"), "--key", p("ca.key")); code != 0 {
		t.Fatalf("new-ca: exit %d\n%s%s", code, out, errs)
	}
	args := []string{"keys", "node-cert", "--ca-cert", p("ca.crt"), "--ca-key", p("ca.key"), "--region", "us-east", "--node-id", "us-east-1",
		"--host", "127.0.0.1,node1.internal", "--cert", p("n.crt"), "--key", p("n.key"), "--validity", "24h"}
	code, out, errs := runCLI(t, args...)
	if code != 0 || !strings.Contains(out, "keyplane://us-east/us-east-1") {
		t.Fatalf("node-cert: exit %d\n%s%s", code, out, errs)
	}
	for _, f := range []string{"ca.key", "n.key"} {
		fi, err := os.Stat(p(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (err %v), want 0600", f, fi.Mode().Perm(), err)
		}
	}
	tlsc, err := routing.LoadPeerTLS(p("n.crt"), p("n.key"), p("ca.crt"))
	if err != nil {
		t.Fatalf("LoadPeerTLS: %v", err)
	}
	if got, want := tlsc.Identity(), (routing.Identity{Region: "us-east", NodeID: "us-east-1"}); got != want {
		t.Errorf("identity = %s, want %s", got, want)
	}
	if code, _, _ := runCLI(t, args...); code == 0 {
		t.Errorf("node-cert overwrote an existing certificate")
	}
}
