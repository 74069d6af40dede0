package main

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/keyplane/keyplane/bench/peers"
)

// runBenchPeers is `keyplane bench peers`: keyplane's fresh Check next to OpenFGA,
// SpiceDB and the raw-SQL floor, in one run (package bench/peers does the work).
func runBenchPeers(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "bench peers", "Measure keyplane's fresh Check next to OpenFGA "+peers.OpenFGAVersion+", SpiceDB "+peers.SpiceDBVersion+
		" and the raw-SQL floor (the identity row by primary key), on one private PostgreSQL, with the same data, concurrency and duration. Prints one table; writes JSON, Markdown and one SVG on request.", `
Systems: `+strings.Join(peers.Systems, ", ")+` (--only picks a subset). The peers are built from
the Go module proxy at pinned versions into --bin-dir on first use (several minutes on
2 cores; later runs reuse the binaries). keyplane is seeded through its API (--identities
in 3 of --roles roles each, --resources each granting 2 roles), the peers get the same
relationships read back from keyplane's database. Every system must answer a sample of
200 pairs alike before anything is measured, else the run fails. Checks are fully
consistent: keyplane fully_consistent, OpenFGA HIGHER_CONSISTENCY, SpiceDB
fully_consistent. bench/README.md ("Peers") explains the report.

Examples:
  keyplane bench peers
  keyplane bench peers --duration 20s --json peers.json --report peers.md --svg peers.svg
  keyplane bench peers --only keyplane,floor --identities 2000 --resources 2000 --duration 5s`)
	fs := c.flags
	cfg := peers.DefaultConfig()
	only := fs.String("only", strings.Join(peers.Systems, ","), "systems to measure, comma-separated: "+strings.Join(peers.Systems, ", "))
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time per system")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured load before each system's first round")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "the systems take turns: each is measured in this many slices of --duration / --rounds")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "closed-loop workers per system")
	fs.IntVar(&cfg.Identities, "identities", cfg.Identities, "identities")
	fs.IntVar(&cfg.Roles, "roles", cfg.Roles, "roles (each with one group holding its members)")
	fs.IntVar(&cfg.Resources, "resources", cfg.Resources, "resources (each granting 2 roles)")
	fs.StringVar(&cfg.BinDir, "bin-dir", cfg.BinDir, "where the peer binaries are built and cached, as <name>-<version>")
	var files peers.Files
	fs.StringVar(&files.JSON, "json", "", "write the results as JSON to this file (schema: bench/README.md)")
	fs.StringVar(&files.Markdown, "report", "", "write a Markdown report to this file")
	fs.StringVar(&files.SVG, "svg", "", "write one SVG chart (throughput, p50, p99 per system) to this file")
	quiet := fs.Bool("quiet", false, "no progress lines")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	cfg.Systems = splitList(*only)
	if len(cfg.Systems) == 0 {
		return usageErr("only: name at least one of %s", strings.Join(peers.Systems, ", "))
	}
	if err := validatePeers(cfg); err != nil {
		return err
	}
	cfg.Version = version()
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	rep, err := peers.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Command = "keyplane bench peers " + strings.Join(args, " ")
	if err := peers.WriteTable(stdout, rep); err != nil {
		return err
	}
	return peers.WriteFiles(rep, files)
}

// validatePeers turns a bad configuration into a usage error naming the flag. Zero
// values are refused here (Config would read them as defaults).
func validatePeers(cfg peers.Config) error {
	for name, v := range map[string]int{"rounds": cfg.Rounds, "concurrency": cfg.Concurrency, "identities": cfg.Identities, "roles": cfg.Roles, "resources": cfg.Resources} {
		if v <= 0 {
			return usageErr("%s: must be positive, got %d", name, v)
		}
	}
	if cfg.Duration <= 0 {
		return usageErr("duration: must be positive, got %s", cfg.Duration)
	}
	if cfg.BinDir == "" {
		return usageErr("bin-dir: must not be empty")
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	return nil
}
