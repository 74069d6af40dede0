package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// TestWriteGovernanceReport: the report's files, the ratios it derives (null, not 0,
// over nothing) and the Markdown's rows.
func TestWriteGovernanceReport(t *testing.T) {
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	figs := func(orphaned, used int32) *keyplanev1.GovernanceFigures {
		return &keyplanev1.GovernanceFigures{ComputeTime: timestamppb.New(day), WindowStartTime: timestamppb.New(day.AddDate(0, 0, -30)),
			Nhis: 4, OrphanedNhis: orphaned, GrantsHeld: 8, GrantsUsed: used, Humans: 0,
			Provisioned: 2, ProvisionP50Seconds: 60, ProvisionP95Seconds: 7200,
			LoginSuccesses: 3, LoginFailures: map[string]int32{"bad_password": 1}}
	}
	r := &keyplanev1.GetGovernanceReportResponse{
		Current: figs(1, 6),
		History: []*keyplanev1.GovernanceSnapshot{
			{Day: timestamppb.New(day.AddDate(0, 0, -2)), Figures: figs(3, 2)},
			{Day: timestamppb.New(day.AddDate(0, 0, -1)), Figures: figs(2, 4)},
		},
	}
	dir := t.TempDir()
	files, err := writeGovernanceReport(dir, "acme", r)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.md", "report.json", "orphaned.svg", "ratios.svg", "nhis.svg", "lifecycle.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not written (%v); wrote %v", f, err, files)
		}
	}
	var js struct {
		Ratios struct {
			LeastPrivilege *float64 `json:"least_privilege"`
			MFACoverage    *float64 `json:"mfa_coverage"`
			LoginSuccess   *float64 `json:"login_success"`
		} `json:"ratios"`
		History []json.RawMessage `json:"history"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if js.Ratios.LeastPrivilege == nil || *js.Ratios.LeastPrivilege != 0.75 || js.Ratios.MFACoverage != nil ||
		js.Ratios.LoginSuccess == nil || *js.Ratios.LoginSuccess != 0.75 || len(js.History) != 2 {
		t.Errorf("report.json ratios/history wrong:\n%s", b)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, want := range []string{"| orphaned NHIs | 1 of 4 |", "| least privilege | 75.0 % | 6 of 8 held grants",
		"| MFA coverage of humans | no data |", "| time to provision (p50 / p95) | 1m0s / 2h0m0s |", "| bad_password | 1 |", "![Orphaned accounts](orphaned.svg)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "orphaned.svg"))
	if !strings.Contains(string(svg), `<polyline class="series-0"`) {
		t.Errorf("orphaned.svg draws no trend line for three days of figures")
	}
}
