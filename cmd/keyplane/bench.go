package main

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/keyplane/keyplane/bench"
)

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "peers" {
		return runBenchPeers(ctx, args[1:], stdout)
	}
	if len(args) == 0 || args[0] != "run" {
		err := onlyRun(stdout, args, "Usage: keyplane bench run [flags]     start a local cluster, seed it, measure workloads next to their raw-SQL floors\n"+
			"       keyplane bench peers [flags]   fresh checks of keyplane, OpenFGA, SpiceDB and the raw-SQL floor, side by side")
		if err != nil {
			return usageErr("want a subcommand: run or peers")
		}
		return nil
	}
	c := newCommand(stdout, "bench run", "Start a local keyplane cluster on a private PostgreSQL, seed it, and measure workloads, each decision workload next to its floor (the one point read it cannot avoid: the token's session row, or the principal's identity row) done with raw pgx in the same run. Prints a table; writes JSON, Markdown and SVG on request.", `
Workloads: `+strings.Join(bench.Workloads, ", ")+` (or all). check-token is check with
a live access token as the principal. mixed is 94% check, 5% validate,
0.9% exchange, 0.1% revoke and policy writes. The data (per tenant, one tenant per region)
is --identities identities in 3 of --roles roles each, and --resources resources each
granting 2 roles; seeding goes through the API and takes a while at full size.

Load models: closed (--concurrency workers back to back), open (--rate arrivals per
second; latency measured from each operation's intended start), ladder (open-loop rungs
doubling from --rate until p99 exceeds --p99-target). check and check-reload also show the
read of the principal's bindings as a second baseline. --multi-region adds a short pass at
zero simulated latency per workload: forwarded overhead is measured against it.
bench/README.md explains the report.

Examples:
  keyplane bench run --workload mixed --duration 30s
  keyplane bench run --workload all --duration 10s --json out.json --report out.md --svg out/
  keyplane bench run --workload validate --mode ladder --rate 500 --p99-target 5ms
  keyplane bench run --workload mixed --multi-region --identities 2000 --resources 2000`)
	fs := c.flags
	var cfg bench.Config
	workload := fs.String("workload", "mixed", "workload(s), comma-separated, or all")
	fs.StringVar(&cfg.Mode, "mode", "closed", "closed, open or ladder")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "closed-loop workers (open loop: the most operations in flight ×4)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: operations per second; ladder: the first rung (default 100)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured time per workload, per rung for the ladder (default 30s)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "unmeasured load before each workload (default 3s)")
	fs.DurationVar(&cfg.P99Target, "p99-target", 0, "ladder: the highest acceptable p99 (default 10ms)")
	fs.IntVar(&cfg.ReloadEvery, "reload-every", 0, "check-reload: a policy write every N checks (default 100)")
	fs.IntVar(&cfg.Identities, "identities", 0, "identities per tenant (default 10000)")
	fs.IntVar(&cfg.Roles, "roles", 0, "roles per tenant (default 100)")
	fs.IntVar(&cfg.Resources, "resources", 0, "resources per tenant (default 10000)")
	fs.BoolVar(&cfg.MultiRegion, "multi-region", false, "three regions behind the simulated WAN, workers placed in each; results split by route, forwarded overhead against a zero-latency pass")
	var files bench.Files
	fs.StringVar(&files.JSON, "json", "", "write the results as JSON to this file (schema: bench/README.md)")
	fs.StringVar(&files.Markdown, "report", "", "write a Markdown report to this file")
	fs.StringVar(&files.SVGDir, "svg", "", "write one SVG latency/throughput chart per workload into this directory")
	quiet := fs.Bool("quiet", false, "no live progress line")
	fs.StringVar(&cfg.Binary, "node-binary", "", "run the nodes from this keyplane executable instead of this one (the same load generator against two builds)")
	fs.BoolVar(&cfg.History, "history", false, "after the workloads, revoke probe tokens and remove probe bindings under the full load of validations and checks, and check the recorded history for stale reads (0 violations is the promise)")
	fs.StringVar(&cfg.ProfileDir, "pprof", "", "save a CPU profile of the first node per workload into this directory")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	cfg.Workloads = splitList(*workload)
	if err := cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	cfg.Version = version()
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Command = "keyplane bench " + strings.Join(args, " ")
	if err := bench.WriteTable(stdout, rep); err != nil {
		return err
	}
	return bench.WriteFiles(rep, files)
}
