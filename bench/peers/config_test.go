package peers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/bench/peers"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*peers.Config)
		want string // "" for valid
	}{
		{"default", func(*peers.Config) {}, ""},
		{"zero is default", func(c *peers.Config) { *c = peers.Config{} }, ""},
		{"subset", func(c *peers.Config) { c.Systems = []string{"spicedb", "floor"} }, ""},
		{"unknown system", func(c *peers.Config) { c.Systems = []string{"keyplane", "opa"} }, `only: "opa"`},
		{"twice", func(c *peers.Config) { c.Systems = []string{"floor", "floor"} }, "only: floor given twice"},
		{"concurrency", func(c *peers.Config) { c.Concurrency = 2000 }, "concurrency"},
		{"short duration", func(c *peers.Config) { c.Duration = time.Millisecond }, "duration"},
		{"long duration", func(c *peers.Config) { c.Duration = 2 * time.Hour }, "duration"},
		{"warmup", func(c *peers.Config) { c.Warmup = -time.Second }, "warmup"},
		{"identities", func(c *peers.Config) { c.Identities = 2_000_000 }, "identities"},
		{"resources", func(c *peers.Config) { c.Resources = -1 }, "resources"},
		{"roles", func(c *peers.Config) { c.Roles = 2 }, "roles"},
		{"pairs", func(c *peers.Config) { c.Pairs = -1 }, "pairs"},
		{"rounds", func(c *peers.Config) { c.Rounds = 101 }, "rounds: between"},
		{"round too short", func(c *peers.Config) { c.Rounds, c.Duration = 4, 3*time.Second }, "rounds: 4 rounds of a 3s duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := peers.DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}
