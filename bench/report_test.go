package bench_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/bench"
)

// sampleReport is a hand-made run: validate with a baseline, targets (one unmet), node
// usage and errors; check-reload in multi-region mode with routes and reloads; a rate
// ladder; and revoke with nothing but its figures.
func sampleReport() bench.Report {
	return bench.Report{
		Started: time.Date(2025, 11, 23, 13, 0, 0, 0, time.UTC),
		Machine: bench.Machine{CPUs: 2, CPUModel: "AMD EPYC 7B13", MemoryGiB: 7.75, OS: "linux/amd64", Go: "go1.26.8",
			Version: "v0.9.0", Postgres: "PostgreSQL 17.2", Note: "shared | noisy"},
		Command: "keyplane bench run --workload all --duration 30s --json out.json > log",
		Results: []bench.Result{
			{
				Workload: "validate", Mode: "closed", Concurrency: 16, DurationS: 30, Ops: 120000, Throughput: 3999.6,
				Latency: bench.Latency{P50: 0.8123, P90: 1.5, P99: 3.14159, P999: 7, Max: 12.346},
				Errors:  map[string]int64{"unavailable": 2, "transport": 1},
				Baseline: &bench.Baseline{Query: "session point read", Ops: 240000, Throughput: 8000.4,
					Latency: bench.Latency{P50: 0.5, P99: 2.1}},
				Ratio: 0.4999, P99DiffMS: 1.04159,
				Nodes:    []bench.NodeUsage{{Node: "us-east-1", CPUs: 41.26, RSSStartM: 100, RSSEndM: 110, RSSPeakM: 120.55}},
				Timeline: []bench.Point{{T: 1, Throughput: 3900, P99: 3}, {T: 2, Throughput: 4100, Errors: 3, P99: 3.2}},
				Targets: []bench.Target{
					{Name: "throughput ≥ 0.5 × baseline", Want: "≥ 4000/s", Got: "4000/s", Met: true},
					{Name: "p99 within baseline + 1 ms", Want: "≤ 3.10 ms", Got: "3.14 ms", Met: false},
				},
			},
			{
				Workload: "check-reload", Mode: "open", Concurrency: 64, Rate: 2000, DurationS: 30, Ops: 60000, Throughput: 2000,
				Latency: bench.Latency{P50: 1, P90: 2, P99: 4, P999: 8, Max: 20},
				Baseline: &bench.Baseline{Query: "identity point read", Ops: 300000, Throughput: 10000,
					Latency: bench.Latency{P50: 0.4, P99: 1.5}},
				Ratio: 0.2, P99DiffMS: 2.5,
				BindingsBaseline: &bench.Baseline{Query: "bindings read", Ops: 45000, Throughput: 1500,
					Latency: bench.Latency{P50: 3, P99: 9}},
				BindingsRatio: 1.3333,
				Routes: map[string]bench.Route{
					"degraded":  {Ops: 10, Latency: bench.Latency{P50: 2, P99: 3}, RTTms: 1},
					"forwarded": {Ops: 20000, Latency: bench.Latency{P50: 42.5, P99: 60}, RTTms: 40, ZeroLatencyP50: ptr(1.25), OverheadMS: ptr(1.25)},
					"local":     {Ops: 39990, Latency: bench.Latency{P50: 0.9, P99: 3}, RTTms: 0},
				},
				ZeroLatency: &bench.ZeroLatency{Rate: 2000, DurationS: 5, Routes: map[string]bench.Route{
					"local":     {Ops: 6660, Latency: bench.Latency{P50: 0.8, P99: 2}},
					"forwarded": {Ops: 3340, Latency: bench.Latency{P50: 1.25, P99: 3}},
				}, Errors: map[string]int64{"unavailable": 1}},
				Nodes:   []bench.NodeUsage{{Node: "a"}, {Node: "b"}, {Node: "c"}},
				Reloads: 300, Writes: 100,
			},
			{
				Workload: "mixed", Mode: "ladder", Concurrency: 16, DurationS: 60, Ops: 1000, Throughput: 900,
				Ladder: []bench.Step{
					{Rate: 500, Throughput: 500, Latency: bench.Latency{P50: 1, P99: 2}, OK: true},
					{Rate: 1000, Throughput: 990, Latency: bench.Latency{P50: 2, P99: 9}, Errors: 4, OK: false},
				},
				MaxRate: 500,
			},
			{Workload: "revoke", Mode: "closed", Concurrency: 16, DurationS: 10, Ops: 5000, Throughput: 500,
				Latency: bench.Latency{P50: 2, P90: 3, P99: 4, P999: 5, Max: 6}},
		},
	}
}

// section returns the part of a Markdown report under the heading that starts with
// head, up to the next heading of the same level.
func section(md, head string) string {
	i := strings.Index(md, "\n"+head)
	if i < 0 {
		return ""
	}
	rest := md[i+1:]
	level := strings.SplitN(head, " ", 2)[0] + " "
	if j := strings.Index(rest[len(head):], "\n"+level); j >= 0 {
		return rest[:len(head)+j]
	}
	return rest
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := bench.WriteMarkdown(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	tests := []struct {
		name    string
		in      string // the part of the report searched; all of it when empty
		want    []string
		notWant []string
	}{
		{name: "title and machine", want: []string{
			"# keyplane load bench\n",
			"- **When:** 2025-11-23 13:00:00 UTC\n",
			"- **Machine:** 2 CPUs, AMD EPYC 7B13, 7.8 GiB memory, linux/amd64\n",
			"- **Go:** go1.26.8\n", "- **Database:** PostgreSQL 17.2\n", "- **Note:** shared | noisy\n",
			"```sh\nkeyplane bench run --workload all --duration 30s --json out.json > log\n```\n",
		}},
		{name: "summary header", in: "## Summary", want: []string{
			"| workload | mode | conc | rate | ops | throughput/s | p50 | p90 | p99 | p99.9 | max (ms) | errors | floor thr/s | floor p99 | ratio | p99 diff | bindings thr/s | bindings ratio |\n",
		}},
		{name: "summary row with baseline", in: "## Summary", want: []string{
			"| validate | closed | 16 | — | 120000 | 4000 | 0.812 | 1.50 | 3.14 | 7.00 | 12.35 | 3 | 8000 | 2.10 | 0.50 | +1.04 | — | — |\n",
		}},
		{name: "summary row open loop with floor and bindings baseline", in: "## Summary", want: []string{
			"| check-reload | open | 64 | 2000 | 60000 | 2000 | 1.00 | 2.00 | 4.00 | 8.00 | 20.00 | 0 | 10000 | 1.50 | 0.20 | +2.50 | 1500 | 1.33 |\n",
		}},
		{name: "summary row without baseline", in: "## Summary", want: []string{
			"| revoke | closed | 16 | — | 5000 | 500 | 2.00 | 3.00 | 4.00 | 5.00 | 6.00 | 0 | — | — | — | — | — | — |\n",
		}},
		{name: "every workload has a section", want: []string{
			"## validate (closed, c=16)\n", "## check-reload (open, c=64)\n", "## mixed (ladder, c=16)\n", "## revoke (closed, c=16)\n",
		}},
		{name: "floor query", in: "## validate", want: []string{"Floor (session point read): 240000 operations, 8000/s, p50 0.500 ms, p99 2.10 ms; ratio 0.50, p99 diff +1.04 ms."},
			notWant: []string{"Bindings baseline"}},
		{name: "floor and bindings baseline", in: "## check-reload", want: []string{
			"Floor (identity point read): 300000 operations, 10000/s, p50 0.400 ms, p99 1.50 ms; ratio 0.20, p99 diff +2.50 ms.",
			"Bindings baseline (bindings read): 45000 operations, 1500/s, p50 3.00 ms, p99 9.00 ms; ratio 1.33.",
		}},
		{name: "targets with an unmet one", in: "## validate", want: []string{
			"| target | want | got | met |\n",
			"| throughput ≥ 0.5 × baseline | ≥ 4000/s | 4000/s | ✓ |\n",
			"| p99 within baseline + 1 ms | ≤ 3.10 ms | 3.14 ms | ✗ |\n",
		}},
		{name: "errors by code, most first", in: "## validate", want: []string{"| code | count |\n", "| unavailable | 2 |\n| transport | 1 |\n"}},
		{name: "node usage and growth", in: "## validate", want: []string{
			"| node | CPU s | RSS start | end | peak MiB | growth |\n",
			"| us-east-1 | 41.3 | 100.0 | 110.0 | 120.5 | +10.0 MiB (+10.0%) |\n",
		}},
		{name: "routes in route order", in: "## check-reload", want: []string{
			"| route | ops | p50 | p99 | configured RTT | p50 − RTT | zero-latency p50 | overhead |\n",
			"| local | 39990 | 0.900 | 3.00 | 0 | +0.900 | — | — |\n| forwarded | 20000 | 42.50 | 60.00 | 40.00 | +2.50 | 1.25 | +1.25 |\n| degraded | 10 | 2.00 | 3.00 | 1.00 | +1.00 | — | — |\n",
			"Zero-latency pass: every simulated round trip at 0, open loop at 2000/s for 5 s; local: 6660 ops, p50 0.800 ms, p99 2.00 ms; " +
				"forwarded: 3340 ops, p50 1.25 ms, p99 3.00 ms; 1 errors.",
		}},
		{name: "policy reloads per node per write", in: "## check-reload", want: []string{
			"300 policy reloads across all nodes for 100 policy writes: 3.00 per write, 1.00 per node per write (3 nodes).",
		}},
		{name: "ladder and max sustainable rate", in: "## mixed", want: []string{
			"| rate | throughput/s | p50 | p99 | p99.9 | max | errors | ok |\n",
			"| 500 | 500 | 1.00 | 2.00 | 0 | 0 | 0 | ✓ |\n| 1000 | 990 | 2.00 | 9.00 | 0 | 0 | 4 | ✗ |\n",
			"Max sustainable rate: **500/s**.",
		}},
		{name: "empty sections omitted", in: "## revoke", want: []string{"10 s, 5000 operations, 500/s, p99 4.00 ms.\n"}, notWant: []string{
			"### Routes", "### Rate ladder", "### Node usage", "### Policy reloads", "### Errors", "### Targets", "Floor", "Bindings baseline",
		}},
		{name: "no routes, ladder or reloads where none", in: "## validate", notWant: []string{"### Routes", "### Rate ladder", "### Policy reloads"}},
		{name: "how to read this", want: []string{"## How to read this\n", "bench/README.md"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := md
			if tt.in != "" {
				if in = section(md, tt.in); in == "" {
					t.Fatalf("no section %q in:\n%s", tt.in, md)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(in, w) {
					t.Errorf("want %q in:\n%s", w, in)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(in, w) {
					t.Errorf("got %q, want it absent from:\n%s", w, in)
				}
			}
		})
	}
}

func TestWriteMarkdownEmptyReport(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := bench.WriteMarkdown(&buf, bench.Report{}); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, absent := range []string{"## Summary", "**When:**", "**Machine:**", "```"} {
		if strings.Contains(md, absent) {
			t.Errorf("got %q in an empty report:\n%s", absent, md)
		}
	}
	if !strings.Contains(md, "No workloads ran.") {
		t.Errorf("want %q in:\n%s", "No workloads ran.", md)
	}
}

func TestWriteMarkdownEdgeCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    bench.Report
		want string
	}{
		{"ladder without a good rung",
			bench.Report{Results: []bench.Result{{Workload: "w", Mode: "ladder", Ladder: []bench.Step{{Rate: 100}}}}},
			"Max sustainable rate: **none**"},
		{"backticks in the command",
			bench.Report{Command: "echo ```"},
			"````sh\necho ```\n````\n"},
		{"pipes and newlines in cells",
			bench.Report{Results: []bench.Result{{Workload: "a|b", Mode: "closed", Targets: []bench.Target{{Name: "x\ny", Want: "|", Met: true}}}}},
			"| x y | \\| |  | ✓ |"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			if err := bench.WriteMarkdown(&buf, tt.r); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), tt.want) {
				t.Errorf("want %q in:\n%s", tt.want, buf.String())
			}
		})
	}
}

// TestWriteMarkdownNumbers checks the number formats through the p50 cell of a row.
func TestWriteMarkdownNumbers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p50  float64
		want string
	}{
		{"zero", 0, "0"},
		{"three significant digits under 1 ms", 0.8123, "0.812"},
		{"three significant digits under 0.1 ms", 0.04567, "0.0457"},
		{"rounding into the next decade", 0.09996, "0.100"},
		{"rounding up to 1 ms", 0.9996, "1.00"},
		{"two decimals from 1 ms", 1, "1.00"},
		{"two decimals rounded", 12.346, "12.35"},
		{"not a number", math.NaN(), "—"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			r := bench.Report{Results: []bench.Result{{Workload: "w", Mode: "closed", Concurrency: 1, Latency: bench.Latency{P50: tt.p50}}}}
			if err := bench.WriteMarkdown(&buf, r); err != nil {
				t.Fatal(err)
			}
			want := "| w | closed | 1 | — | 0 | 0 | " + tt.want + " | 0 |"
			if !strings.Contains(buf.String(), want) {
				t.Errorf("want %q in:\n%s", want, section(buf.String(), "## Summary"))
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	t.Parallel()
	in := sampleReport()
	var buf bytes.Buffer
	if err := bench.WriteJSON(&buf, in); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()

	t.Run("indented", func(t *testing.T) {
		if !bytes.HasPrefix(raw, []byte("{\n  \"started\"")) {
			t.Errorf("got %.40q, want indented JSON", raw)
		}
		if bytes.Contains(raw, []byte(`\u003e`)) {
			t.Errorf("got > escaped in %q", in.Command)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		var got bench.Report
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		want := sampleReport()
		for i := range want.Results { // WriteJSON writes {} and [] for nil
			if want.Results[i].Errors == nil {
				want.Results[i].Errors = map[string]int64{}
			}
			if want.Results[i].Timeline == nil {
				want.Results[i].Timeline = []bench.Point{}
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})

	var doc struct {
		Results []map[string]json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(msg json.RawMessage) []string {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	has := func(t *testing.T, got []string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("got keys %q, want %q among them", got, w)
			}
		}
	}
	validate, checkReload, revoke := doc.Results[0], doc.Results[1], doc.Results[3]
	tests := []struct {
		name string
		obj  json.RawMessage
		want []string
	}{
		{"result", mustJSON(t, validate), []string{"workload", "mode", "concurrency", "rate", "duration_s", "ops", "throughput",
			"latency_ms", "errors", "baseline", "ratio", "p99_diff_ms", "timeline", "nodes", "targets"}},
		{"latency", validate["latency_ms"], []string{"p50", "p90", "p99", "p999", "max"}},
		{"baseline", validate["baseline"], []string{"query", "ops", "throughput", "latency_ms"}},
		{"bindings baseline", mustJSON(t, checkReload), []string{"baseline", "bindings_baseline", "bindings_ratio", "zero_latency"}},
		{"bindings baseline fields", checkReload["bindings_baseline"], []string{"query", "ops", "throughput", "latency_ms"}},
		{"zero latency", checkReload["zero_latency"], []string{"rate", "duration_s", "routes", "errors"}},
		{"forwarded route vs zero latency", mustRoute(t, checkReload["routes"]), []string{"zero_latency_p50_ms", "overhead_ms"}},
		{"routes", checkReload["routes"], []string{"local", "forwarded", "degraded"}},
		{"route", mustRoute(t, checkReload["routes"]), []string{"ops", "latency_ms", "rtt_ms"}},
		{"reloads", mustJSON(t, checkReload), []string{"policy_reloads", "policy_writes"}},
		{"ladder", mustJSON(t, doc.Results[2]), []string{"ladder", "max_sustainable_rate"}},
	}
	for _, tt := range tests {
		t.Run("keys/"+tt.name, func(t *testing.T) { has(t, keys(tt.obj), tt.want...) })
	}
	t.Run("empty collections", func(t *testing.T) {
		for _, k := range []string{"baseline", "bindings_baseline", "bindings_ratio", "zero_latency", "routes", "ladder", "nodes", "targets", "policy_reloads"} {
			if _, ok := revoke[k]; ok {
				t.Errorf("got %q in a result without one", k)
			}
		}
		if got := string(revoke["errors"]); got != "{}" {
			t.Errorf("errors: got %s, want {}", got)
		}
		if got := string(revoke["timeline"]); got != "[]" {
			t.Errorf("timeline: got %s, want []", got)
		}
	})
	t.Run("input untouched", func(t *testing.T) {
		if in.Results[3].Errors != nil || in.Results[3].Timeline != nil {
			t.Error("WriteJSON changed its argument")
		}
	})
}

func mustJSON(t *testing.T, m map[string]json.RawMessage) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRoute(t *testing.T, routes json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(routes, &m); err != nil {
		t.Fatal(err)
	}
	return m["forwarded"]
}

func TestWriteSVG(t *testing.T) {
	t.Parallel()
	r := sampleReport().Results[0]
	var buf bytes.Buffer
	if err := bench.WriteSVG(&buf, r); err != nil {
		t.Fatal(err)
	}
	// bench/plot tests the drawing; here only that the result's title and timeline
	// reach the chart, and that it is well-formed SVG.
	var doc struct {
		XMLName   xml.Name `xml:"http://www.w3.org/2000/svg svg"`
		Title     string   `xml:"title"`
		Polylines []struct {
			Class  string `xml:"class,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not well-formed SVG: %v\n%s", err, buf.Bytes())
	}
	if want := "validate (closed, c=16)"; doc.Title != want {
		t.Errorf("title: got %q, want %q", doc.Title, want)
	}
	lines := map[string]int{}
	for _, l := range doc.Polylines {
		lines[l.Class] = len(strings.Fields(l.Points))
	}
	if want := map[string]int{"throughput": len(r.Timeline), "p99": len(r.Timeline)}; !reflect.DeepEqual(lines, want) {
		t.Errorf("lines (points each): got %v, want %v", lines, want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestReportWriteErrors(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	tests := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"json", func(w io.Writer) error { return bench.WriteJSON(w, r) }},
		{"markdown", func(w io.Writer) error { return bench.WriteMarkdown(w, r) }},
		{"svg", func(w io.Writer) error { return bench.WriteSVG(w, r.Results[0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.write(failWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
				t.Errorf("got %v, want the writer's error", err)
			}
		})
	}
}
