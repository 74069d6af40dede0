package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/deploy/demo"
	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestMain lowers the cost of new password hashes for this test binary: its tests
// log in thousands of times under the race detector (region/credential's own tests
// pin the production parameters).
func TestMain(m *testing.M) {
	credential.UseTestHashParams()
	os.Exit(schematest.Run(m))
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"help"}, 0, "Commands:"},
		{nil, 2, "Commands:"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"version"}, 0, "keyplane "},
		{[]string{"serve"}, 2, "a database is required: --db-file, KEYPLANE_DB"},
		{[]string{"serve", "--db-file", "/nonexistent/db-url"}, 2, "db file"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--db-file", "/nonexistent/db-url"}, 2, "not both"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--forward-timeout", "2m"}, 2, "shorter than --write-timeout"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x"}, 2, "region"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0",
			"--gossip-profile", "moon"}, 2, "gossip profile"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0",
			"--join", "nohost"}, 2, "join"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--peer-dial-map", "a:1"}, 2, "peer-dial-map"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0"}, 2, "gossip keys: none given"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-key-file", "/nonexistent/key"}, 2, "gossip key file"},
		{[]string{"keys", "new-gossip-key", "extra"}, 2, "unexpected argument"},
		{[]string{"keys", "reseal"}, 2, "a database is required"},
		{[]string{"audit"}, 2, "want a subcommand: export"},
		{[]string{"audit", "export", "--tenant", "acme"}, 2, "--url"},
		{[]string{"audit", "export", "--url", "http://127.0.0.1:1"}, 2, "--tenant is required"},
		{[]string{"audit", "export", "--url", "http://127.0.0.1:1", "--tenant", "acme", "--token-file", "/nonexistent/tok"}, 2, "token file"},
		{[]string{"audit", "export", "--url", "http://127.0.0.1:1", "--tenant", "acme", "--page-size", "0"}, 2, "--page-size"},
		{[]string{"keys", "reseal", "--db", "postgres://x@127.0.0.1:1/x", "--kek-file", "/nonexistent/kek"}, 1, "kek file"},
		{[]string{"keys", "rotate", "--alg", "HS256"}, 2, "--alg"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0", "--gossip-insecure"}, 2,
			"--peer-listen is required"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0", "--gossip-insecure",
			"--peer-listen", "127.0.0.1:0"}, 2, "--peer-cert, --peer-key and --peer-ca are required"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0", "--gossip-insecure",
			"--peer-listen", "127.0.0.1:0", "--peer-cert", "/nonexistent/c", "--peer-key", "/nonexistent/k", "--peer-ca", "/nonexistent/ca"}, 2, "peer TLS"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--gossip-listen", "127.0.0.1:0", "--gossip-insecure",
			"--peer-listen", "127.0.0.1:0", "--peer-insecure", "--peer-ca", "ca.crt"}, 2, "choose one"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--tls-cert", "/nonexistent/c"}, 2, "--tls-cert/--tls-key"},
		{[]string{"serve", "--db", "postgres://x@127.0.0.1:1/x", "--region", "us-east", "--geoip-db", "/nonexistent/country.mmdb"}, 2, "--geoip-db"},
		{[]string{"keys", "node-cert"}, 2, "--region and --node-id are required"},
		{[]string{"canary"}, 2, "--region: at least one region"},
		{[]string{"canary", "--region", "us-east"}, 2, "want NAME=URL"},
		{[]string{"canary", "--region", "us-east=ftp://x", "--tenant", "t", "--client-id", "c"}, 2, "http(s) URL"},
		{[]string{"canary", "--region", "us-east=http://127.0.0.1:1"}, 2, "the tenant is required"},
		{[]string{"canary", "--region", "us-east=http://127.0.0.1:1", "--tenant", "t", "--client-id", "c"}, 2, "client id and secret"},
		{[]string{"canary", "--region", "a=http://127.0.0.1:1", "--region", "a=http://127.0.0.1:2", "--tenant", "t", "--client-id", "c",
			"--client-secret-file", "/nonexistent/s"}, 2, "client secret file"},
		{[]string{"canary", "--region", "a=http://127.0.0.1:1", "--interval", "0s"}, 2, "--interval"},
		{[]string{"keys", "new-ca", "--validity", "-1h"}, 2, "--validity must be positive"},
		{[]string{"migrate", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"migrate"}, 2, "a database is required"},
		{[]string{"keys", "rotate", "--region", "us-east"}, 2, "a database is required"},
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
			t.Parallel()
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
	// Not parallel: t.Setenv.
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
	t.Parallel()
	db := dbFile(t, schematest.NewEmptyDatabase(t))
	code, out, errs := runCLI(t, "migrate", "--db-file", db, "--regions", "us-east,eu-west", "--super-region", "eu=eu-west")
	if code != 0 || !strings.Contains(out, "engine: postgres") || !strings.Contains(out, "migrations applied: 0001_initial") ||
		!strings.Contains(out, "region: eu-west (super region eu)") {
		t.Fatalf("first migrate: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "migrate", "--db-file", db)
	if code != 0 || !strings.Contains(out, "nothing applied") {
		t.Fatalf("second migrate: exit %d\n%s%s", code, out, errs)
	}
}

// dbFile writes a database URL to a file for --db-file.
func dbFile(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db-url")
	if err := os.WriteFile(path, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSecurityDBPasswordNotInArgv (issue 12, finding 14): a database URL with a password
// on the command line is visible to every user of the machine in ps; every command that
// opens the database refuses one there and names the way that keeps it out of argv.
func TestSecurityDBPasswordNotInArgv(t *testing.T) {
	t.Parallel()
	for _, cmd := range [][]string{{"serve", "--region", "us-east"}, {"migrate"}, {"keys", "rotate", "--region", "us-east"}} {
		for _, db := range []string{
			"postgres://keyplane:hunter2@127.0.0.1:1/keyplane",
			"postgresql://keyplane:p%40ss@[::1]:1,127.0.0.1:2/keyplane?sslmode=disable",
			"postgres://keyplane@127.0.0.1:1/keyplane?password=hunter2",
			"postgres://keyplane@127.0.0.1:1/keyplane?sslmode=verify-full&sslpassword=hunter2",
			"host=127.0.0.1 user=keyplane password=hunter2 dbname=keyplane",
			"host=127.0.0.1 user=keyplane PASSWORD = 'hunter2'",
		} {
			t.Run(strings.Join(cmd, " ")+" "+db, func(t *testing.T) {
				t.Parallel()
				code, out, errs := runCLI(t, append(slices.Clone(cmd), "--db", db)...)
				if code != 2 || !strings.Contains(errs, "--db-file") || !strings.Contains(errs, "KEYPLANE_DB") {
					t.Fatalf("exit %d (want 2, a usage error naming --db-file and KEYPLANE_DB):\n%s%s", code, out, errs)
				}
				if strings.Contains(out+errs, "hunter2") || strings.Contains(out+errs, "p%40ss") {
					t.Errorf("the refusal repeats the password:\n%s%s", out, errs)
				}
			})
		}
	}
}

func TestDBHasPassword(t *testing.T) {
	t.Parallel()
	for db, want := range map[string]bool{
		"postgres://keyplane@127.0.0.1:5432/keyplane":                 false,
		"postgres://127.0.0.1:5432/keyplane?sslmode=disable":          false,
		"postgres://keyplane:@127.0.0.1/keyplane":                     true, // an empty password is still one
		"postgres://keyplane:s3cret@127.0.0.1/keyplane":               true,
		"postgres://keyplane:a@b@127.0.0.1/keyplane":                  true,
		"host=/var/run/postgresql user=keyplane dbname=keyplane":      false,
		"host=/var/run/postgresql user=keyplane password=x dbname=kp": true,
	} {
		if got := dbHasPassword(db); got != want {
			t.Errorf("dbHasPassword(%q) = %v, want %v", db, got, want)
		}
	}
}

// TestDemoFlags checks that the demo command's flags reach demo.Config; the scenario
// itself is tested in deploy/demo.
func TestDemoFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want demo.Config
		err  string // "" for no error
	}{
		{"defaults", nil, demo.Config{Regions: []string{"us-east", "eu-west", "ap-south"}, NodesPerRegion: 2}, ""},
		{"every flag", []string{"--regions", "eu-west, us-east", "--nodes-per-region", "1", "--state-file", "st.json"},
			demo.Config{Regions: []string{"eu-west", "us-east"}, NodesPerRegion: 1, StateFile: "st.json"}, ""},
		{"too many nodes", []string{"--nodes-per-region", "9"}, demo.Config{}, "between 1 and 5"},
		{"too many regions", []string{"--regions", "a,b,c,d,e,f,g"}, demo.Config{}, "1 to 6"},
		{"region twice", []string{"--regions", "a,a"}, demo.Config{}, `"a" is empty or named twice`},
		{"argument", []string{"now"}, demo.Config{}, `unexpected argument "now"`},
		{"unknown flag", []string{"--bogus"}, demo.Config{}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			got, err := demoConfig(tt.args, &out)
			if tt.err != "" {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Out != &out {
				t.Errorf("Out is %v, want the command's stdout", got.Out)
			}
			got.Out = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
