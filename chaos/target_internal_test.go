package chaos

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/deploy/demo"
)

// A state file as `keyplane demo --state-file` writes it is a target; one that lacks
// what a run needs is refused, naming what is missing.
func TestLoadTarget(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("kp-op-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name string, st demo.State) string {
		t.Helper()
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := demo.State{OperatorSecretFile: secretFile,
		Regions:    []demo.Region{{Name: "us-east", NodeURLs: []string{"http://n1", "http://n2"}}, {Name: "eu-west", NodeURLs: []string{"http://n3"}}},
		ClientURLs: map[string]map[string][]string{"us-east": {"us-east": {"http://c1"}}, "eu-west": {"eu-west": {"http://c3"}}}}
	tg, err := loadTarget(write("good.json", good))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tg.regions, []string{"us-east", "eu-west"}) || tg.secret != "kp-op-secret" ||
		tg.adminURL["eu-west"] != "http://n3" || !slices.Equal(tg.nodeURLs, []string{"http://n1", "http://n2", "http://n3"}) {
		t.Fatalf("loadTarget = %+v", tg)
	}

	noClients := good
	noClients.ClientURLs = nil
	noSecret := good
	noSecret.OperatorSecretFile = filepath.Join(dir, "missing")
	for _, tt := range []struct {
		name, path, want string
	}{
		{"no file", filepath.Join(dir, "nope.json"), "state file"},
		{"no client urls", write("noclients.json", noClients), `region "us-east" needs node_urls and client_urls`},
		{"no secret", write("nosecret.json", noSecret), "operator_secret_file"},
		{"no regions", write("empty.json", demo.State{OperatorSecretFile: secretFile}), "no regions"},
	} {
		if _, err := loadTarget(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: loadTarget = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
