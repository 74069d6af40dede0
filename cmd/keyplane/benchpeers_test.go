package main

import (
	"strings"
	"testing"
)

func TestBenchPeersFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"bench"}, 2, "want a subcommand: run or peers"},
		{[]string{"bench", "--help"}, 0, "keyplane bench peers [flags]"},
		{[]string{"bench", "peers", "--help"}, 0, "Usage: keyplane bench peers"},
		{[]string{"bench", "peers", "--help"}, 0, "--bin-dir"},
		{[]string{"bench", "peers", "--only", "keyplane,zanzibar"}, 2, `only: "zanzibar" is not one of floor, keyplane, openfga, spicedb`},
		{[]string{"bench", "peers", "--only", "keyplane,keyplane"}, 2, "only: keyplane given twice"},
		{[]string{"bench", "peers", "--only", ","}, 2, "only: name at least one"},
		{[]string{"bench", "peers", "--concurrency", "0"}, 2, "concurrency: must be positive"},
		{[]string{"bench", "peers", "--concurrency", "5000"}, 2, "concurrency: between 1 and 1024"},
		{[]string{"bench", "peers", "--duration", "0s"}, 2, "duration: must be positive"},
		{[]string{"bench", "peers", "--duration", "500ms"}, 2, "duration: between 1s and 1h"},
		{[]string{"bench", "peers", "--roles", "2"}, 2, "roles: between 3 and 10,000"},
		{[]string{"bench", "peers", "--rounds", "0"}, 2, "rounds: must be positive"},
		{[]string{"bench", "peers", "--rounds", "30", "--duration", "20s"}, 2, "rounds: 30 rounds of a 20s duration are shorter than 1s each"},
		{[]string{"bench", "peers", "--identities", "-1"}, 2, "identities: must be positive"},
		{[]string{"bench", "peers", "--bin-dir", ""}, 2, "bin-dir: must not be empty"},
		{[]string{"bench", "peers", "--svgs", "x"}, 2, "flag provided but not defined: -svgs"},
		{[]string{"bench", "peers", "extra"}, 2, `unexpected argument "extra"`},
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
}
