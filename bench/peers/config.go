package peers

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// The systems, in the order they are measured and reported.
const (
	Floor    = "floor"
	Keyplane = "keyplane"
	OpenFGA  = "openfga"
	SpiceDB  = "spicedb"
)

// Systems are every system a run can measure.
var Systems = []string{Floor, Keyplane, OpenFGA, SpiceDB}

// Config configures a run. The zero value of a field means its DefaultConfig value.
type Config struct {
	Systems     []string      // subset of Systems, measured in Systems' order; empty means all
	Concurrency int           // closed-loop workers per system
	Duration    time.Duration // measured time per system
	Warmup      time.Duration // unmeasured load before each system's first round
	Rounds      int           // the systems take turns, each measured Rounds times for Duration/Rounds
	Identities  int
	Roles       int
	Resources   int
	Pairs       int    // (identity, resource) pairs every system must answer alike before the runs
	BinDir      string // where peer binaries are built and cached (<name>-<version>)
	Binary      string // the keyplane executable for the node; "" means this process
	Version     string // keyplane's version, for the report
	Progress    io.Writer
}

// DefaultConfig is the reference run: every system, c=16, 20 s each (4 rounds of
// 5 s, the systems taking turns) after 3 s of warm-up, the load bench's shape, 200
// agreement pairs.
func DefaultConfig() Config {
	return Config{Systems: Systems, Concurrency: 16, Duration: 20 * time.Second, Warmup: 3 * time.Second,
		Identities: 10_000, Roles: 100, Resources: 10_000, Pairs: 200, Rounds: 4, BinDir: ".bin/peers", Progress: io.Discard}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if len(c.Systems) == 0 {
		c.Systems = d.Systems
	}
	ordered := make([]string, 0, len(c.Systems))
	for _, s := range Systems {
		if slices.Contains(c.Systems, s) {
			ordered = append(ordered, s)
		}
	}
	c.Systems = ordered
	pick := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	pick(&c.Concurrency, d.Concurrency)
	pick(&c.Identities, d.Identities)
	pick(&c.Roles, d.Roles)
	pick(&c.Resources, d.Resources)
	pick(&c.Pairs, d.Pairs)
	pick(&c.Rounds, d.Rounds)
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Warmup == 0 {
		c.Warmup = d.Warmup
	}
	if c.BinDir == "" {
		c.BinDir = d.BinDir
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate names the first bad field (by its flag name).
func (c Config) Validate() error {
	seen := map[string]bool{}
	for _, s := range c.Systems {
		if !slices.Contains(Systems, s) {
			return fmt.Errorf("only: %q is not one of %s", s, strings.Join(Systems, ", "))
		}
		if seen[s] {
			return fmt.Errorf("only: %s given twice", s)
		}
		seen[s] = true
	}
	switch {
	case c.Concurrency < 0 || c.Concurrency > 1024:
		return errors.New("concurrency: between 1 and 1024")
	case c.Duration < 0 || c.Duration > time.Hour || (c.Duration > 0 && c.Duration < time.Second):
		return errors.New("duration: between 1s and 1h")
	case c.Warmup < 0 || c.Warmup > 10*time.Minute:
		return errors.New("warmup: between 0 and 10m")
	case c.Identities < 0 || c.Identities > 1_000_000:
		return errors.New("identities: at most 1,000,000")
	case c.Resources < 0 || c.Resources > 1_000_000:
		return errors.New("resources: at most 1,000,000")
	case c.Roles < 0 || c.Roles > 10_000 || (c.Roles > 0 && c.Roles < 3):
		return errors.New("roles: between 3 and 10,000")
	case c.Pairs < 0 || c.Pairs > 100_000:
		return errors.New("pairs: at most 100,000")
	case c.Rounds < 0 || c.Rounds > 100:
		return errors.New("rounds: between 1 and 100")
	case c.Rounds > 0 && c.Duration > 0 && c.Duration/time.Duration(c.Rounds) < time.Second:
		return fmt.Errorf("rounds: %d rounds of a %s duration are shorter than 1s each", c.Rounds, c.Duration)
	}
	return nil
}
