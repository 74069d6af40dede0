package peers_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/bench"
	"github.com/keyplane/keyplane/bench/peers"
)

func sample() peers.Report {
	f := func(v float64) *float64 { return &v }
	return peers.Report{Started: time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC), Command: "keyplane bench peers",
		Machine: bench.Machine{CPUs: 2, Postgres: "PostgreSQL 15.9"}, Concurrency: 16, DurationS: 20, WarmupS: 3, Rounds: 4, LoadAvg: [2]float64{6.5, 9.25},
		Shape:     peers.ShapeInfo{Identities: 10_000, Others: 500, Roles: 100, Resources: 10_000, Memberships: 31_500, Grants: 20_000},
		Agreement: peers.Agreement{Pairs: 200, Allowed: 103, Systems: []string{"keyplane", "openfga", "spicedb"}},
		Builds: []peers.Build{{Name: "openfga", Version: "v1.22.1", Module: "github.com/openfga/openfga", Seconds: 312},
			{Name: "spicedb", Version: "v1.56.2", Module: "github.com/authzed/spicedb", Cached: true},
			{Name: "spicedb", Version: "v1.56.2", Module: "github.com/authzed/spicedb", Cached: true, Seconds: 601}},
		Results: []peers.Result{
			{System: "floor", Version: "15.9", Throughput: 30000, VsFloor: 1, Latency: bench.Latency{P50: 0.4, P99: 1.5}, Errors: map[string]int64{}},
			{System: "keyplane", Version: "dev", Throughput: 9000, VsFloor: 0.3, Latency: bench.Latency{P50: 1.5, P99: 4.25},
				Errors: map[string]int64{}, AllowedFraction: f(0.0594), Process: "keyplane node", CPUSeconds: 30.5, RSSEndM: 80, RSSPeakM: 85},
			{System: "openfga", Version: "v1.22.1", Throughput: 2500, VsFloor: 2500.0 / 30000, Latency: bench.Latency{P50: 5, P99: 20},
				Errors: map[string]int64{"transport": 2, "deadline_exceeded": 1}, FirstError: "boom", AllowedFraction: f(0.06),
				Process: "openfga", RSSEndM: 120, RSSPeakM: 130},
		}}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := peers.WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"checks/s", "30000", "1.00×", "9000", "0.30×", "4.25", "5.9%", "deadline_exceeded 1, transport 2",
		"80 (peak 85)", "20s per system in 4 rounds", "200 pairs answered alike by keyplane, openfga, spicedb (103 allowed)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	floor := strings.Split(out, "\n")[1]
	if !strings.HasPrefix(strings.TrimSpace(floor), "floor") || strings.Count(floor, "—") != 3 {
		t.Errorf("the floor row has no allowed share, CPU or RSS (want 3 dashes): %q", floor)
	}
}

func TestWriteMarkdown(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := peers.WriteMarkdown(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"| system | version | checks/s |", "| keyplane | dev | 9000 | 0.30× | 1.50 | 4.25 | 5.9% |",
		"| openfga | `github.com/openfga/openfga` | v1.22.1 | 312 s |", "| spicedb | `github.com/authzed/spicedb` | v1.56.2 | cached |", "| v1.56.2 | cached (built in 601 s) |",
		"- openfga: boom", "load average 6.5 before the run started anything, 9.2 when the measurements ended", "above the 2 CPUs: other processes competed", "in 4 rounds with the systems taking turns", "10000 identities (and 500 other group members, the load bench's token principals, in the data but not checked), 100 roles, 10000 resources: 31500 memberships, 20000 grants"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	rep := sample()
	if err := peers.WriteJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	var back peers.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Fatalf("round trip differs:\ngot  %+v\nwant %+v", back, rep)
	}
	var raw struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.Results[0]["allowed_fraction"]; ok {
		t.Errorf("the floor has an allowed_fraction: %v", raw.Results[0])
	}
	for _, k := range []string{"system", "throughput", "latency_ms", "vs_floor", "rss_peak_mib", "allowed_fraction"} {
		if _, ok := raw.Results[1][k]; !ok {
			t.Errorf("keyplane's result lacks %q", k)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := peers.WriteSVG(&b, sample()); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	var rects, texts int
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			switch el.Name.Local {
			case "rect":
				rects++
			case "text":
				texts++
			}
		case xml.CharData:
			text.Write(el)
		}
	}
	if rects != 1+3*3 { // background, then a throughput bar and two latency bars per system
		t.Errorf("%d rects, want 10", rects)
	}
	for _, want := range []string{"floor", "keyplane", "openfga", "9000/s (0.30× floor)", "p50 1.50 · p99 4.25", "RSS 85 MiB", "RSS 130 MiB"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("svg text lacks %q", want)
		}
	}
}

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := peers.Files{JSON: filepath.Join(dir, "a", "p.json"), Markdown: filepath.Join(dir, "p.md"), SVG: filepath.Join(dir, "b", "p.svg")}
	if err := peers.WriteFiles(sample(), f); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.JSON, f.Markdown, f.SVG} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v (size %v)", p, err, fi)
		}
	}
}
