package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/keyplane/keyplane/routing"
)

// WriteJSON writes r as indented JSON: the schema documented in bench/README.md. Nil
// error maps and timelines are written as {} and [] so that readers always find the
// same types; r itself is not modified.
func WriteJSON(w io.Writer, r Report) error {
	results := make([]Result, len(r.Results))
	for i, res := range r.Results {
		if res.Errors == nil {
			res.Errors = map[string]int64{}
		}
		if res.Timeline == nil {
			res.Timeline = []Point{}
		}
		results[i] = res
	}
	r.Results = results
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // commands contain > and &
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

// WriteMarkdown writes r as a Markdown report: the machine and the command, a summary
// table of every workload next to its baseline, then one section per workload (routes,
// ladder, node usage, policy reloads, errors and targets, each only when present).
func WriteMarkdown(w io.Writer, r Report) error {
	var b strings.Builder
	b.WriteString("# keyplane load bench\n\n")
	writeMachine(&b, r)
	if len(r.Results) == 0 {
		b.WriteString("No workloads ran.\n\n")
	} else {
		writeSummary(&b, r.Results)
		for _, res := range r.Results {
			writeResult(&b, res)
		}
	}
	if r.History != nil {
		writeHistory(&b, *r.History)
	}
	b.WriteString("## How to read this\n\n" +
		"Latencies are in milliseconds and throughput counts successful operations per second. " +
		"The floor is the one point read a decision cannot avoid (the token's session row, or the principal's " +
		"identity row), done with raw pgx against the same database at the same concurrency in the same run; " +
		"ratio is keyplane's throughput over the floor's and p99 diff keyplane's p99 minus the floor's. The " +
		"bindings baseline (check, check-reload) reads all the principal's bindings instead. The load generator, the nodes and the database share one " +
		"machine. bench/README.md describes the workloads, the load models, the JSON schema and the targets.\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func writeMachine(b *strings.Builder, r Report) {
	m := r.Machine
	if !r.Started.IsZero() {
		fmt.Fprintf(b, "- **When:** %s\n", r.Started.UTC().Format("2006-01-02 15:04:05 MST"))
	}
	var machine []string
	if m.CPUs > 0 {
		machine = append(machine, fmt.Sprintf("%d CPUs", m.CPUs))
	}
	if m.CPUModel != "" {
		machine = append(machine, m.CPUModel)
	}
	if m.MemoryGiB > 0 {
		machine = append(machine, fmt.Sprintf("%.1f GiB memory", m.MemoryGiB))
	}
	if m.OS != "" {
		machine = append(machine, m.OS)
	}
	for _, f := range []struct{ name, v string }{
		{"Machine", strings.Join(machine, ", ")},
		{"Go", m.Go},
		{"keyplane", m.Version},
		{"Database", m.Postgres},
		{"Note", m.Note},
	} {
		if f.v != "" {
			fmt.Fprintf(b, "- **%s:** %s\n", f.name, inline(f.v))
		}
	}
	b.WriteString("\n")
	if r.Command != "" {
		fence := strings.Repeat("`", max(3, longestRun(r.Command, '`')+1))
		fmt.Fprintf(b, "%ssh\n%s\n%s\n\n", fence, r.Command, fence)
	}
}

func writeSummary(b *strings.Builder, results []Result) {
	b.WriteString("## Summary\n\n")
	t := table{left: 2, head: []string{"workload", "mode", "conc", "rate", "ops", "throughput/s", "p50", "p90", "p99", "p99.9",
		"max (ms)", "errors", "floor thr/s", "floor p99", "ratio", "p99 diff", "bindings thr/s", "bindings ratio"}}
	for _, res := range results {
		rate := "—"
		if res.Rate > 0 {
			rate = fmtCount(res.Rate)
		}
		bthr, bp99, ratio, diff := "—", "—", "—", "—"
		if res.Baseline != nil {
			bthr = fmtCount(res.Baseline.Throughput)
			bp99 = fmtMS(res.Baseline.Latency.P99)
			ratio = fmtRatio(res.Ratio)
			diff = fmtDiffMS(res.P99DiffMS)
		}
		sthr, sratio := "—", "—"
		if res.BindingsBaseline != nil {
			sthr, sratio = fmtCount(res.BindingsBaseline.Throughput), fmtRatio(res.BindingsRatio)
		}
		l := res.Latency
		t.add(res.Workload, res.Mode, strconv.Itoa(res.Concurrency), rate, strconv.FormatInt(res.Ops, 10),
			fmtCount(res.Throughput), fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.P999), fmtMS(l.Max),
			strconv.FormatInt(sum(res.Errors), 10), bthr, bp99, ratio, diff, sthr, sratio)
	}
	t.write(b)
}

func writeResult(b *strings.Builder, res Result) {
	fmt.Fprintf(b, "## %s\n\n", inline(resultTitle(res)))
	fmt.Fprintf(b, "%s s, %d operations, %s/s, p99 %s ms.", fmtNumber(res.DurationS), res.Ops, fmtCount(res.Throughput),
		fmtMS(res.Latency.P99))
	if bl := res.Baseline; bl != nil {
		fmt.Fprintf(b, " Floor (%s): %d operations, %s/s, p50 %s ms, p99 %s ms; ratio %s, p99 diff %s ms.", inline(bl.Query), bl.Ops,
			fmtCount(bl.Throughput), fmtMS(bl.Latency.P50), fmtMS(bl.Latency.P99), fmtRatio(res.Ratio), fmtDiffMS(res.P99DiffMS))
	}
	if bl := res.BindingsBaseline; bl != nil {
		fmt.Fprintf(b, " Bindings baseline (%s): %d operations, %s/s, p50 %s ms, p99 %s ms; ratio %s.", inline(bl.Query), bl.Ops,
			fmtCount(bl.Throughput), fmtMS(bl.Latency.P50), fmtMS(bl.Latency.P99), fmtRatio(res.BindingsRatio))
	}
	b.WriteString("\n\n")

	if len(res.Routes) > 0 {
		b.WriteString("### Routes\n\n")
		head := []string{"route", "ops", "p50", "p99", "configured RTT", "p50 − RTT"}
		if res.ZeroLatency != nil {
			head = append(head, "zero-latency p50", "overhead")
			if res.ProxyOvershootMS != nil {
				head = append(head, "net of the proxies")
			}
		}
		t := table{head: head}
		for _, name := range routeOrder(res.Routes) {
			rt := res.Routes[name]
			row := []string{name, strconv.FormatInt(rt.Ops, 10), fmtMS(rt.Latency.P50), fmtMS(rt.Latency.P99), fmtMS(rt.RTTms),
				fmtDiffMS(rt.Latency.P50 - rt.RTTms)}
			if res.ZeroLatency != nil {
				zero, over := "—", "—"
				if rt.ZeroLatencyP50 != nil && rt.OverheadMS != nil {
					zero, over = fmtMS(*rt.ZeroLatencyP50), fmtDiffMS(*rt.OverheadMS)
				}
				row = append(row, zero, over)
				if res.ProxyOvershootMS != nil {
					net := "—"
					if rt.NetOverheadMS != nil {
						net = fmtDiffMS(*rt.NetOverheadMS)
					}
					row = append(row, net)
				}
			}
			t.add(row...)
		}
		t.write(b)
		if res.ProxyOvershootMS != nil {
			fmt.Fprintf(b, "A forward's two simulated links added %s ms beyond their configured round trips during the run (a trivial "+
				"endpoint through two chained latency proxies at a client's and a forward's round trip, and through two at 0, p50 "+
				"against p50); the last column takes it off.\n\n", fmtMS(*res.ProxyOvershootMS))
		}
		if z := res.ZeroLatency; z != nil {
			fmt.Fprintf(b, "Zero-latency pass: every simulated round trip at 0, open loop at %s/s for %s s", fmtCount(z.Rate), fmtNumber(z.DurationS))
			for _, name := range routeOrder(z.Routes) {
				rt := z.Routes[name]
				fmt.Fprintf(b, "; %s: %d ops, p50 %s ms, p99 %s ms", name, rt.Ops, fmtMS(rt.Latency.P50), fmtMS(rt.Latency.P99))
			}
			if n := sum(z.Errors); n > 0 {
				fmt.Fprintf(b, "; %d errors", n)
			}
			b.WriteString(". Overhead is p50 − RTT − the zero-latency forwarded p50.\n\n")
		}
	}

	if len(res.Ladder) > 0 {
		b.WriteString("### Rate ladder\n\n")
		t := table{head: []string{"rate", "throughput/s", "p50", "p99", "p99.9", "max", "errors", "ok"}}
		for _, s := range res.Ladder {
			t.add(fmtCount(s.Rate), fmtCount(s.Throughput), fmtMS(s.Latency.P50), fmtMS(s.Latency.P99),
				fmtMS(s.Latency.P999), fmtMS(s.Latency.Max), strconv.FormatInt(s.Errors, 10), mark(s.OK))
		}
		t.write(b)
		if res.MaxRate > 0 {
			fmt.Fprintf(b, "Max sustainable rate: **%s/s**.\n\n", fmtCount(res.MaxRate))
		} else {
			b.WriteString("Max sustainable rate: **none**, no step stayed under the threshold.\n\n")
		}
	}

	if len(res.Nodes) > 0 {
		b.WriteString("### Node usage\n\n")
		t := table{head: []string{"node", "CPU s", "RSS start", "end", "peak MiB", "growth"}}
		for _, n := range res.Nodes {
			t.add(n.Node, fmtNumber(n.CPUs), fmtMiB(n.RSSStartM), fmtMiB(n.RSSEndM), fmtMiB(n.RSSPeakM),
				fmtGrowth(n.RSSStartM, n.RSSEndM))
		}
		t.write(b)
		for _, n := range res.Nodes {
			if len(n.RSSPerMinute) > 1 {
				mib := make([]string, len(n.RSSPerMinute))
				for i, v := range n.RSSPerMinute {
					mib[i] = fmtMiB(v)
				}
				fmt.Fprintf(b, "RSS of %s at the start and every minute (MiB): %s\n\n", n.Node, strings.Join(mib, ", "))
			}
		}
	}

	if res.Reloads > 0 || res.Writes > 0 {
		b.WriteString("### Policy reloads\n\n")
		fmt.Fprintf(b, "%d policy reloads across all nodes for %d policy writes", res.Reloads, res.Writes)
		if res.Writes > 0 {
			per := float64(res.Reloads) / float64(res.Writes)
			fmt.Fprintf(b, ": %s per write", fmtRatio(per))
			if len(res.Nodes) > 0 {
				fmt.Fprintf(b, ", %s per node per write (%d nodes)", fmtRatio(per/float64(len(res.Nodes))), len(res.Nodes))
			}
		}
		b.WriteString(".\n\n")
	}

	if sum(res.Errors) > 0 {
		b.WriteString("### Errors\n\n")
		codes := make([]string, 0, len(res.Errors))
		for c, n := range res.Errors {
			if n != 0 {
				codes = append(codes, c)
			}
		}
		slices.SortFunc(codes, func(x, y string) int {
			if res.Errors[x] != res.Errors[y] {
				if res.Errors[x] > res.Errors[y] {
					return -1
				}
				return 1
			}
			return strings.Compare(x, y)
		})
		t := table{head: []string{"code", "count"}}
		for _, c := range codes {
			t.add(c, strconv.FormatInt(res.Errors[c], 10))
		}
		t.write(b)
	}

	if res.NoisyNeighbour != nil {
		writeNoisy(b, res.NoisyNeighbour)
	}
	if len(res.Targets) > 0 {
		b.WriteString("### Targets\n\n")
		t := table{head: []string{"target", "want", "got", "met"}, left: 3}
		for _, tg := range res.Targets {
			t.add(tg.Name, tg.Want, tg.Got, mark(tg.Met))
		}
		t.write(b)
	}
}

// resultTitle names a result in headings and chart titles.
// writeHistory is the linearizability pass's section.
func writeHistory(b *strings.Builder, h History) {
	b.WriteString("## Linearizability under load\n\n")
	fmt.Fprintf(b, "%.0f s of validations and fresh checks at %.0f/s (%d operations, %d failed) while probe tokens were revoked "+
		"and probe bindings removed; every probe call recorded and checked by the drills' checkers (chaos/history): no read "+
		"that started after a revocation was acknowledged may grant access.\n\n", h.DurationS, h.LoadThroughput, h.LoadOps, sum(h.LoadErrors))
	t := table{head: []string{"checker", "reads", "after a revoke", "failed reads", "revokes", "violations"}}
	for _, c := range []struct {
		name string
		c    HistoryCheck
	}{{"revocation: ValidateToken vs RevokeToken", h.Tokens}, {"binding removal: fresh Check vs DeleteBinding", h.Bindings}} {
		t.add(c.name, strconv.Itoa(c.c.Reads), strconv.Itoa(c.c.ReadsAfterRevoke), strconv.Itoa(c.c.FailedReads), strconv.Itoa(c.c.Revokes), strconv.Itoa(c.c.Violations))
	}
	t.write(b)
	for _, c := range []HistoryCheck{h.Tokens, h.Bindings} {
		if c.FirstViolation != "" {
			fmt.Fprintf(b, "First violation: %s\n\n", inline(c.FirstViolation))
		}
	}
}

func resultTitle(res Result) string {
	return fmt.Sprintf("%s (%s, c=%d)", res.Workload, res.Mode, res.Concurrency)
}

// routeOrder lists the routes local, forwarded, degraded first, then any others by name.
func routeOrder(routes map[string]Route) []string {
	rank := func(s string) int {
		s, _, _ = strings.Cut(s, " ") // "forwarded 71ms"
		switch s {
		case routing.RouteLocal:
			return 0
		case routing.RouteForwarded:
			return 1
		case routing.RouteDegraded:
			return 2
		}
		return 3
	}
	names := make([]string, 0, len(routes))
	for n := range routes {
		names = append(names, n)
	}
	slices.SortFunc(names, func(x, y string) int {
		if d := rank(x) - rank(y); d != 0 {
			return d
		}
		return strings.Compare(x, y)
	})
	return names
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

// table is a Markdown table: the first left columns (at least one) aligned left, the
// others, numbers, right. Cells are escaped when written.
type table struct {
	head []string
	left int
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	row := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" ")
			b.WriteString(cell(c))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	row(t.head)
	b.WriteString("|")
	for i := range t.head {
		if i < max(t.left, 1) {
			b.WriteString(" --- |")
		} else {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		row(r)
	}
	b.WriteString("\n")
}

// cell makes s safe inside a table cell: one line, pipes escaped.
func cell(s string) string {
	return strings.ReplaceAll(inline(s), "|", `\|`)
}

// inline makes s a single line.
func inline(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func longestRun(s string, c rune) int {
	best, n := 0, 0
	for _, r := range s {
		if r == c {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

// fmtMS formats a latency in milliseconds: 2 decimals from 1 ms up, 3 significant
// digits below (0.123, 0.0456).
func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case v == 0:
		return "0"
	case v < 0:
		return "-" + fmtMS(-v)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	// Digits after the point for 3 significant digits (at most 6: a nanosecond).
	exp := int(math.Floor(math.Log10(v)))
	decimals := min(2-exp, 6)
	if r := math.Round(v*math.Pow10(decimals)) / math.Pow10(decimals); r >= math.Pow10(exp+1) {
		decimals-- // 0.09996 rounds up into the next decade: 0.100, not 0.1000
	}
	if decimals < 2 {
		return "1.00" // 0.9996 rounds up to 1 ms
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

// fmtDiffMS formats a latency difference with its sign.
func fmtDiffMS(v float64) string {
	s := fmtMS(v)
	if v > 0 {
		return "+" + s
	}
	return s
}

// fmtCount formats a throughput or rate: no decimals.
func fmtCount(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// fmtNumber formats a duration or a CPU time: at most one decimal, none when whole.
func fmtNumber(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

func fmtMiB(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// fmtGrowth is the RSS growth from start to end in MiB and percent.
func fmtGrowth(start, end float64) string {
	signed := func(v float64) string {
		v = math.Round(v*10) / 10
		if v == 0 {
			return "+0.0" // not -0.0
		}
		s := strconv.FormatFloat(v, 'f', 1, 64)
		if v > 0 {
			s = "+" + s
		}
		return s
	}
	d := end - start
	s := signed(d) + " MiB"
	if start > 0 {
		s += " (" + signed(d/start*100) + "%)"
	}
	return s
}
