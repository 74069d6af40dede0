package peers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes rep as indented JSON.
func WriteJSON(w io.Writer, rep Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// WriteTable writes the one table for a terminal.
func WriteTable(w io.Writer, rep Report) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tversion\tchecks/s\tvs floor\tp50 ms\tp99 ms\tallowed\terrors\tCPU s\tRSS MiB\t")
	for _, r := range rep.Results {
		c := cells(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.System, r.Version, c.tput, c.vs, c.p50, c.p99, c.allowed, c.errors, c.cpu, c.rss)
	}
	_ = tw.Flush() // into b, which does not fail
	fmt.Fprintf(&b, "c=%d closed loop, %.0fs per system in %d rounds; %d pairs answered alike by %s (%d allowed)\n", rep.Concurrency, rep.DurationS, max(rep.Rounds, 1),
		rep.Agreement.Pairs, strings.Join(rep.Agreement.Systems, ", "), rep.Agreement.Allowed)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// row holds one result's formatted cells.
type row struct{ tput, vs, p50, p99, allowed, errors, cpu, rss string }

func cells(r Result) row {
	c := row{tput: fmt.Sprintf("%.0f", r.Throughput), vs: "—", p50: fmt.Sprintf("%.2f", r.Latency.P50), p99: fmt.Sprintf("%.2f", r.Latency.P99),
		allowed: "—", errors: "0", cpu: "—", rss: "—"}
	if r.VsFloor > 0 {
		c.vs = fmt.Sprintf("%.2f×", r.VsFloor)
	}
	if r.AllowedFraction != nil {
		c.allowed = fmt.Sprintf("%.1f%%", 100**r.AllowedFraction)
	}
	if n := sumErrors(r.Errors); n > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Errors[k]))
		}
		c.errors = strings.Join(parts, ", ")
	}
	if r.Process != "" {
		c.cpu = fmt.Sprintf("%.1f", r.CPUSeconds)
		c.rss = fmt.Sprintf("%.0f (peak %.0f)", r.RSSEndM, r.RSSPeakM)
	}
	return c
}

// WriteMarkdown writes the report: the machine, the one table, how each system was
// driven, the builds and the mapping.
func WriteMarkdown(w io.Writer, rep Report) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# keyplane vs OpenFGA vs SpiceDB vs the raw-SQL floor: fresh checks\n\n")
	fmt.Fprintf(&b, "Started %s. Command: `%s`\n\n", rep.Started.Format("2006-01-02 15:04:05 UTC"), rep.Command)
	m := rep.Machine
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.1f GiB, %s, %s; %s; %s. 1-minute load average %.1f before the run "+
		"started anything, %.1f when the measurements ended (the run's own load included)", m.CPUs, m.CPUModel, m.MemoryGiB, m.OS, m.Go, m.Postgres, m.Note, rep.LoadAvg[0], rep.LoadAvg[1])
	if rep.LoadAvg[0] > float64(m.CPUs) {
		fmt.Fprintf(&b, "; the load before the run was above the %d CPUs: other processes competed with the run for them, so "+
			"compare the systems with each other, not with runs on a quiet machine", m.CPUs)
	}
	fmt.Fprint(&b, ".\n\n")
	fmt.Fprintf(&b, "Closed loop, c=%d, %.0f s measured per system after %.0f s of warm-up, in %d rounds with the systems taking turns "+
		"(so load from outside the run falls on all alike); every worker draws uniform random (identity, resource) pairs from the same "+
		"seeded stream for every system.\n\n", rep.Concurrency, rep.DurationS, rep.WarmupS, max(rep.Rounds, 1))
	fmt.Fprintln(&b, "| system | version | checks/s | vs floor | p50 ms | p99 ms | allowed | errors | CPU s | RSS MiB (peak) |")
	fmt.Fprintln(&b, "|---|---|--:|--:|--:|--:|--:|---|--:|--:|")
	for _, r := range rep.Results {
		c := cells(r)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.System, r.Version, c.tput, c.vs, c.p50, c.p99, c.allowed, c.errors, c.cpu, c.rss)
	}
	fmt.Fprintf(&b, "\nCPU s and RSS are the server process's over the measured run, from /proc (PostgreSQL's are not counted; the floor "+
		"runs inside the load generator). `allowed` is the share of checks answered allowed.\n\n")
	fmt.Fprintf(&b, "## How each system was asked\n\n| system | API | consistency |\n|---|---|---|\n")
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.System, r.API, r.Consistency)
	}
	s := rep.Shape
	others := ""
	if s.Others > 0 {
		others = fmt.Sprintf(" (and %d other group members, the load bench's token principals, in the data but not checked)", s.Others)
	}
	fmt.Fprintf(&b, "\n## Data\n\n%d identities%s, %d roles, %d resources: %d memberships, %d grants, read back from keyplane's database "+
		"after seeding and written to each peer. Mapping: %s.\n\n", s.Identities, others, s.Roles, s.Resources, s.Memberships, s.Grants, rep.Mapping)
	a := rep.Agreement
	fmt.Fprintf(&b, "Before the runs, %s answered the same %d pairs (%d allowed) as the data implies; the run fails on any difference.\n",
		strings.Join(a.Systems, ", "), a.Pairs, a.Allowed)
	if len(rep.Builds) > 0 {
		fmt.Fprintf(&b, "\n## Builds\n\n| peer | module | version | build |\n|---|---|---|---|\n")
		for _, bl := range rep.Builds {
			how := fmt.Sprintf("%.0f s", bl.Seconds)
			switch {
			case bl.Cached && bl.Seconds > 0:
				how = fmt.Sprintf("cached (built in %.0f s)", bl.Seconds)
			case bl.Cached:
				how = "cached"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", bl.Name, bl.Module, bl.Version, how)
		}
	}
	var errs []string
	for _, r := range rep.Results {
		if r.FirstError != "" {
			errs = append(errs, fmt.Sprintf("- %s: %s", r.System, r.FirstError))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\n## First error per system\n\n%s\n", strings.Join(errs, "\n"))
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write markdown: %w", err)
	}
	return nil
}
