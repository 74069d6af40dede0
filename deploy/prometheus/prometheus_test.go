package prometheus_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool finds promtool: on PATH (make test puts .bin there) or in the module's .bin.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if p, err := filepath.Abs("../../.bin/promtool"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("promtool is missing: run `make .bin/promtool` (deploy/ensure-promtool.sh fetches it from Debian's prometheus package)")
	return ""
}

// TestPrometheusRules checks the rules and runs their unit tests
// (keyplane-rules.test.yml) with promtool: every alert fires on the series it is for
// and not on healthy ones.
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", "keyplane-rules.yml"}, {"test", "rules", "keyplane-rules.test.yml"}} {
		out, err := exec.CommandContext(context.Background(), bin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEveryAlertHasARunbookAndATest: each alert links to its runbook section in
// docs/operations.md, that section exists, and the unit tests exercise the alert.
func TestEveryAlertHasARunbookAndATest(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile("keyplane-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("keyplane-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(rules), "\n") {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: ")
		if !ok {
			continue
		}
		n++
		anchor := "docs/operations.md#" + strings.ToLower(name)
		if !strings.Contains(string(rules), "runbook: "+anchor) {
			t.Errorf("%s: no runbook annotation %s", name, anchor)
		}
		if !strings.Contains(string(ops), "### "+name+"\n") {
			t.Errorf("%s: docs/operations.md has no section \"### %s\"", name, name)
		}
		if !strings.Contains(string(tests), "alertname: "+name+"\n") {
			t.Errorf("%s: keyplane-rules.test.yml never tests it", name)
		}
	}
	if n < 15 {
		t.Errorf("found %d alerts: the scan is broken", n)
	}
}

// TestDashboardsAreGrafanaJSON: each dashboard is JSON with panels whose targets
// query the templated Prometheus data source.
func TestDashboardsAreGrafanaJSON(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr       string `json:"expr"`
					Datasource struct {
						UID string `json:"uid"`
					} `json:"datasource"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || len(d.Panels) < 8 {
			t.Errorf("%s: uid %q, %d panels", f, d.UID, len(d.Panels))
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, q := range p.Targets {
				if q.Expr == "" || q.Datasource.UID != "${datasource}" || strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") {
					t.Errorf("%s: panel %q: bad target %+v", f, p.Title, q)
				}
			}
		}
	}
}
