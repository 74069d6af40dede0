package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/keyplane/keyplane/bench"
)

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(stdout, "Usage: keyplane bench run [flags]   start a local cluster, seed it, measure workloads next to raw-SQL baselines")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return usageErr("want a subcommand: run")
	}
	c := newCommand(stdout, "bench run", "Start a local keyplane cluster on a private PostgreSQL, seed it, and measure workloads, each next to the same logical read done with raw pgx in the same run. Prints a table; writes JSON, Markdown and SVG on request.", `
Workloads: `+strings.Join(bench.Workloads, ", ")+` (or all). mixed is 94% check, 5% validate,
0.9% exchange, 0.1% revoke and policy writes. The data (per tenant, one tenant per region)
is --identities identities in 3 of --roles roles each, and --resources resources each
granting 2 roles; seeding goes through the API and takes a while at full size.

Load models: closed (--concurrency workers back to back), open (--rate arrivals per
second; latency measured from each operation's intended start), ladder (open-loop rungs
doubling from --rate until p99 exceeds --p99-target). bench/README.md explains the report.

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
	fs.BoolVar(&cfg.MultiRegion, "multi-region", false, "three regions behind the simulated WAN, workers placed in each; results split by route")
	jsonFile := fs.String("json", "", "write the results as JSON to this file (schema: bench/README.md)")
	reportFile := fs.String("report", "", "write a Markdown report to this file")
	svgDir := fs.String("svg", "", "write one SVG latency/throughput chart per workload into this directory")
	quiet := fs.Bool("quiet", false, "no live progress line")
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
	printBench(stdout, rep)
	if *jsonFile != "" {
		if err := writeFile(*jsonFile, func(w io.Writer) error { return bench.WriteJSON(w, rep) }); err != nil {
			return err
		}
	}
	if *reportFile != "" {
		if err := writeFile(*reportFile, func(w io.Writer) error { return bench.WriteMarkdown(w, rep) }); err != nil {
			return err
		}
	}
	if *svgDir != "" {
		if err := os.MkdirAll(*svgDir, 0o755); err != nil {
			return err
		}
		for _, r := range rep.Results {
			if err := writeFile(filepath.Join(*svgDir, r.Workload+".svg"), func(w io.Writer) error { return bench.WriteSVG(w, r) }); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// printBench prints the summary table and every target.
func printBench(w io.Writer, rep bench.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmode\tconc\tops\tops/s\tp50 ms\tp99 ms\tp99.9 ms\terrors\tbaseline/s\tbase p99\tratio\t")
	for _, r := range rep.Results {
		base, bp99, ratio := "-", "-", "-"
		if r.Baseline != nil {
			base, bp99, ratio = fmt.Sprintf("%.0f", r.Baseline.Throughput), fmt.Sprintf("%.2f", r.Baseline.Latency.P99), fmt.Sprintf("%.2f", r.Ratio)
		}
		var errs int64
		for _, n := range r.Errors {
			errs += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%s\t%s\t\n", r.Workload, r.Mode, r.Concurrency, r.Ops, r.Throughput,
			r.Latency.P50, r.Latency.P99, r.Latency.P999, errs, base, bp99, ratio)
	}
	_ = tw.Flush()
	for _, r := range rep.Results {
		for name, rt := range r.Routes {
			fmt.Fprintf(w, "%s route %-9s %7d ops  p50 %7.2f ms  p99 %7.2f ms  configured RTT %6.2f ms\n", r.Workload, name, rt.Ops,
				rt.Latency.P50, rt.Latency.P99, rt.RTTms)
		}
		if r.MaxRate > 0 {
			fmt.Fprintf(w, "%s: max sustainable rate %.0f/s\n", r.Workload, r.MaxRate)
		}
		for _, t := range r.Targets {
			mark := "met"
			if !t.Met {
				mark = "MISSED"
			}
			fmt.Fprintf(w, "%s: %s: want %s, got %s: %s\n", r.Workload, t.Name, t.Want, t.Got, mark)
		}
	}
}
