package bench_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/bench"
)

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	rep := bench.Report{Command: "keyplane bench run", Results: []bench.Result{
		{Workload: "validate", Mode: "closed", Ops: 10, Timeline: []bench.Point{{T: 1, Throughput: 10, P99: 1}}},
		{Workload: "check", Mode: "closed", Ops: 20, Timeline: []bench.Point{{T: 1, Throughput: 20, P99: 2}}},
	}}
	dir := t.TempDir()
	files := bench.Files{JSON: filepath.Join(dir, "json", "out.json"), Markdown: filepath.Join(dir, "md", "out.md"),
		SVGDir: filepath.Join(dir, "svg")}
	if err := bench.WriteFiles(rep, files); err != nil {
		t.Fatal(err)
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var got bench.Report
	if err := json.Unmarshal([]byte(read(files.JSON)), &got); err != nil || got.Command != rep.Command || len(got.Results) != 2 {
		t.Errorf("JSON file: %v, %+v", err, got)
	}
	if md := read(files.Markdown); !strings.HasPrefix(md, "# keyplane load bench") {
		t.Errorf("Markdown file starts %.40q", md)
	}
	for _, w := range []string{"validate", "check"} {
		if svg := read(filepath.Join(files.SVGDir, w+".svg")); !strings.Contains(svg, "<svg") {
			t.Errorf("%s.svg is no SVG: %.80q", w, svg)
		}
	}

	t.Run("only JSON", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := bench.WriteFiles(rep, bench.Files{JSON: filepath.Join(dir, "out.json")}); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "out.json" {
			t.Errorf("wrote %v, want out.json only", entries)
		}
	})
	t.Run("unwritable", func(t *testing.T) {
		t.Parallel()
		blocker := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := bench.WriteFiles(rep, bench.Files{Markdown: filepath.Join(blocker, "out.md")}); err == nil {
			t.Error("writing under a regular file succeeded")
		}
	})
}
