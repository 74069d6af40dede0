package bench

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
)

// WriteTable writes the summary of a run for a terminal: one row per workload next to
// its baseline, then each workload's routes, sustainable rate and targets.
func WriteTable(w io.Writer, rep Report) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmode\tconc\tops\tops/s\tp50 ms\tp99 ms\tp99.9 ms\terrors\tfloor/s\tfloor p99\tratio\tbindings/s\tb.ratio\t")
	for _, r := range rep.Results {
		base, bp99, ratio := "-", "-", "-"
		if r.Baseline != nil {
			base, bp99, ratio = fmt.Sprintf("%.0f", r.Baseline.Throughput), fmt.Sprintf("%.2f", r.Baseline.Latency.P99), fmt.Sprintf("%.2f", r.Ratio)
		}
		sbase, sratio := "-", "-"
		if r.BindingsBaseline != nil {
			sbase, sratio = fmt.Sprintf("%.0f", r.BindingsBaseline.Throughput), fmt.Sprintf("%.2f", r.BindingsRatio)
		}
		var errs int64
		for _, n := range r.Errors {
			errs += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Workload, r.Mode, r.Concurrency, r.Ops, r.Throughput,
			r.Latency.P50, r.Latency.P99, r.Latency.P999, errs, base, bp99, ratio, sbase, sratio)
	}
	_ = tw.Flush() // into b, which does not fail
	for _, r := range rep.Results {
		for _, name := range slices.Sorted(maps.Keys(r.Routes)) {
			rt := r.Routes[name]
			fmt.Fprintf(&b, "%s route %-9s %7d ops  p50 %7.2f ms  p99 %7.2f ms  configured RTT %6.2f ms", r.Workload, name, rt.Ops,
				rt.Latency.P50, rt.Latency.P99, rt.RTTms)
			if rt.ZeroLatencyP50 != nil && rt.OverheadMS != nil {
				fmt.Fprintf(&b, "  zero-latency p50 %5.2f ms  overhead %+.2f ms", *rt.ZeroLatencyP50, *rt.OverheadMS)
			}
			if rt.NetOverheadMS != nil {
				fmt.Fprintf(&b, "  net of the proxies %+.2f ms", *rt.NetOverheadMS)
			}
			b.WriteString("\n")
		}
		if r.MaxRate > 0 {
			fmt.Fprintf(&b, "%s: max sustainable rate %.0f/s\n", r.Workload, r.MaxRate)
		}
		for _, t := range r.Targets {
			mark := "met"
			if !t.Met {
				mark = "MISSED"
			}
			fmt.Fprintf(&b, "%s: %s: want %s, got %s: %s\n", r.Workload, t.Name, t.Want, t.Got, mark)
		}
	}
	if h := rep.History; h != nil {
		for _, c := range []struct {
			name string
			c    HistoryCheck
		}{{"revocation (validate vs revoke)", h.Tokens}, {"binding removal (check vs delete)", h.Bindings}} {
			fmt.Fprintf(&b, "history: %s: %d reads (%d after an acknowledged revoke), %d revokes, %d violations\n",
				c.name, c.c.Reads, c.c.ReadsAfterRevoke, c.c.Revokes, c.c.Violations)
		}
		fmt.Fprintf(&b, "history: under %.0f load ops/s over %.0f s\n", h.LoadThroughput, h.DurationS)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}
