package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema/schematest"
)

func TestMain(m *testing.M) { os.Exit(schematest.Run(m)) }

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndHelp(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"help"}, 0, "Commands:"},
		{nil, 2, "Commands:"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"version"}, 0, "keyplane "},
		{[]string{"serve"}, 2, "--db is required"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x"}, 2, "region"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0",
			"--gossip-profile", "moon"}, 2, "gossip profile"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0",
			"--join", "nohost"}, 2, "join"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--peer-dial-map", "a:1"}, 2, "peer-dial-map"},
		{[]string{"migrate", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"chaos"}, 2, "want a subcommand"},
		{[]string{"chaos", "run"}, 2, "--all or --drill"},
		{[]string{"chaos", "run", "--drill", "meteor"}, 2, `drill: "meteor"`},
		{[]string{"chaos", "run", "--all", "--fault-cmd", "node-kill"}, 2, "NAME=COMMAND"},
		{[]string{"chaos", "run", "--all", "--fault-cmd", "meteor=true"}, 2, "not a drill"},
		{[]string{"chaos", "run", "--drill", "node-kill", "--state-file", "st.json"}, 2, "needs --fault-cmd and --recover-cmd"},
		{[]string{"bench", "run", "--workload", "nap"}, 2, `workload: "nap"`},
		{[]string{"bench", "run", "--mode", "open"}, 2, "rate"},
		{[]string{"migrate", "--db", "postgres://x@127.0.0.1:1/x", "--survive", "planet"}, 2, "survive"},
		{[]string{"migrate", "--db", "postgres://x@127.0.0.1:1/x", "--super-region", "eu"}, 2, "super_region"},
		{[]string{"demo", "--nodes-per-region", "9"}, 2, "between 1 and 5"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errs, tt.contains) {
				t.Fatalf("exit %d (want %d); output lacks %q:\n%s%s", code, tt.code, tt.contains, out, errs)
			}
		})
	}
	for _, c := range commands {
		code, out, errs := runCLI(t, c.name, "--help")
		if code != 0 || !strings.Contains(out+errs, "Usage: keyplane "+c.name) {
			t.Errorf("%s --help: exit %d\n%s%s", c.name, code, out, errs)
		}
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("KEYPLANE_SURVIVE", "planet")
	code, _, errs := runCLI(t, "migrate", "--db", "postgres://x@127.0.0.1:1/x", "--regions", "a")
	if code != 2 || !strings.Contains(errs, `survive: must be "zone" or "region", got "planet"`) {
		t.Fatalf("KEYPLANE_SURVIVE not applied: exit %d %s", code, errs)
	}
	// A flag on the command line wins over the environment.
	t.Setenv("KEYPLANE_REGIONS", "BAD REGION")
	code, _, errs = runCLI(t, "migrate", "--db", "postgres://x@127.0.0.1:1/x", "--survive", "zone", "--regions", "ok-region")
	if code == 2 {
		t.Fatalf("command-line flag should win over KEYPLANE_REGIONS: %s", errs)
	}
}

func TestMigrateCommandIsIdempotent(t *testing.T) {
	db := schematest.NewEmptyDatabase(t)
	code, out, errs := runCLI(t, "migrate", "--db", db, "--regions", "us-east,eu-west", "--super-region", "eu=eu-west")
	if code != 0 || !strings.Contains(out, "engine: postgres") || !strings.Contains(out, "migrations applied: 0001_initial") ||
		!strings.Contains(out, "region: eu-west (super region eu)") {
		t.Fatalf("first migrate: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "migrate", "--db", db)
	if code != 0 || !strings.Contains(out, "nothing applied") {
		t.Fatalf("second migrate: exit %d\n%s%s", code, out, errs)
	}
}

// TestDemo runs the real binary the way `make demo` does: it must come up, answer the
// admin API with the credentials it wrote, and remove everything it started on SIGINT.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "keyplane")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	stateFile := filepath.Join(dir, "state.json")
	var out syncBuffer
	cmd := exec.Command(bin, "demo", "--state-file", stateFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()

	var st demoState
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(stateFile)
		if err == nil && json.Unmarshal(b, &st) == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("demo exited early: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no state file after 90s:\n%s", out.String())
		}
	}
	if len(st.Regions) != 3 || len(st.Tenants) != 3 || st.Tenants[0].ID != "demo-us-east" || st.DatabaseURL == "" ||
		len(st.ClientURLs["eu-west"]["ap-south"]) != 2 || st.RTTMillis["us-east"]["ap-south"] != 200 {
		t.Fatalf("state file: %+v", st)
	}
	secret, err := os.ReadFile(st.OperatorSecretFile)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost,
		st.Regions[0].URL+"/keyplane.v1.AdminService/GetTenant", strings.NewReader(`{"id":"demo-us-east"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(secret)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(body.String(), `"homeRegion":"us-east"`) {
		t.Fatalf("GetTenant through the demo: %d %s", resp.StatusCode, body.String())
	}
	// The tour's OAuth steps: token, introspect, revoke, introspect again.
	tn := st.Tenants[0]
	if tn.Issuer == "" || tn.ClientID == "" || !strings.HasPrefix(tn.ClientSecret, "kpc_") {
		t.Fatalf("state file lacks the admin client: %+v", tn)
	}
	form := func(path string, v url.Values) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, tn.Issuer+path, strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(tn.ClientID, tn.ClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %v", path, resp.StatusCode, m)
		}
		return m
	}
	tok, _ := form("/oauth2/token", url.Values{"grant_type": {"client_credentials"}})["access_token"].(string)
	if got := form("/oauth2/introspect", url.Values{"token": {tok}}); got["active"] != true {
		t.Fatalf("introspect a fresh token: %v", got)
	}
	form("/oauth2/revoke", url.Values{"token": {tok}})
	if got := form("/oauth2/introspect", url.Values{"token": {tok}}); got["active"] != false {
		t.Fatalf("introspect a revoked token: %v", got)
	}
	if !strings.Contains(out.String(), "keyplane demo is running") {
		t.Fatalf("no tour printed:\n%s", out.String())
	}
	// The cross-region tour ran: issued in eu-west, checked in ap-south, both forwarded
	// to us-east; inactive from every region after the revoke.
	for _, want := range []string{"token issued by an app in eu-west  forwarded → us-east/", "checked by an app in ap-south",
		"from us-east", "from eu-west", "from ap-south"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tour output lacks %q:\n%s", want, out.String())
		}
	}
	if got := strings.Count(out.String(), " inactive"); got != 3 {
		t.Errorf("tour shows %d inactive answers, want 3:\n%s", got, out.String())
	}

	clusterDir := filepath.Dir(st.OperatorSecretFile)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exit: %v\n%s", err, out.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("demo did not stop within 45s of SIGINT:\n%s", out.String())
	}
	for _, p := range []string{clusterDir, stateFile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the demo stopped", p)
		}
	}
	if _, err := http.Get(st.Regions[0].URL + "/healthz"); err == nil {
		t.Error("the demo's node still answers after the demo stopped")
	}
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec.Cmd and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
