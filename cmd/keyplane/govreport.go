package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/bench/plot"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// The governance report (`keyplane governance report`): a tenant's governance
// figures now and their daily trend, as Markdown, JSON and SVG charts in one
// directory (docs/governance.md, "Governance figures").

func runGovernanceReport(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "governance report", "Write a tenant's governance figures — time to provision and deprovision, orphaned accounts, least privilege, policy coverage, MFA coverage of humans, NHIs on static secrets vs federated, login success and failures by reason — and their daily trends into a directory: report.md, report.json and SVG charts (docs/governance.md, \"Governance figures\"). It calls GovernanceService.GetGovernanceReport of any node.", `
The bearer credential comes from --token-file or KEYPLANE_TOKEN (never a flag value):
an access token of an identity of the tenant holding iam.governance.read, or the
operator secret.

Examples:
  KEYPLANE_TOKEN=$(cat token) keyplane governance report --url https://iam.example --tenant acme --out report/
  keyplane governance report --url http://127.0.0.1:8080 --tenant acme --token-file tok --days 365 --out q4/`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant to report on (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	out := fs.String("out", "governance-report", "directory to write the report into (created if missing)")
	days := fs.Int("days", 90, "days of daily history to chart (1 to 3660)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *days < 1 || *days > 3660 {
		return usageErr("--days: want 1 to 3660, got %d", *days)
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	gc := keyplanev1connect.NewGovernanceServiceClient(http.DefaultClient, api.url, api.options())
	resp, err := gc.GetGovernanceReport(ctx, connect.NewRequest(&keyplanev1.GetGovernanceReportRequest{TenantId: api.tenant, Days: int32(*days)}))
	if err != nil {
		return fmt.Errorf("governance report: %w", err)
	}
	files, err := writeGovernanceReport(*out, api.tenant, resp.Msg)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	return nil
}

// reportRatio is a ratio for the JSON report: null when there is nothing to divide by.
type reportRatio *float64

func ratioOf(a, b int32) reportRatio {
	if b == 0 {
		return nil
	}
	r := float64(a) / float64(b)
	return &r
}

// figureRatios are the ratios the report derives from one set of figures.
type figureRatios struct {
	LeastPrivilege reportRatio `json:"least_privilege"`
	PolicyCoverage reportRatio `json:"policy_coverage"`
	OwnedResources reportRatio `json:"owned_resources"`
	MFACoverage    reportRatio `json:"mfa_coverage"`
	LoginSuccess   reportRatio `json:"login_success"`
}

func ratiosOf(f *keyplanev1.GovernanceFigures) figureRatios {
	var failed int32
	for _, n := range f.GetLoginFailures() {
		failed += n
	}
	return figureRatios{
		LeastPrivilege: ratioOf(f.GetGrantsUsed(), f.GetGrantsHeld()),
		PolicyCoverage: ratioOf(f.GetResourcesCovered(), f.GetResourcesChecked()),
		OwnedResources: ratioOf(f.GetResourcesOwned(), f.GetResourcesChecked()),
		MFACoverage:    ratioOf(f.GetHumansMfa(), f.GetHumans()),
		LoginSuccess:   ratioOf(f.GetLoginSuccesses(), f.GetLoginSuccesses()+failed),
	}
}

// governanceChart is one SVG of the report.
type governanceChart struct {
	file, title, unit string
	percent           bool
	series            []chartSeries
}

type chartSeries struct {
	label string
	value func(*keyplanev1.GovernanceFigures) float64 // NaN: no data that day
}

func count(get func(*keyplanev1.GovernanceFigures) int32) func(*keyplanev1.GovernanceFigures) float64 {
	return func(f *keyplanev1.GovernanceFigures) float64 { return float64(get(f)) }
}

func ratioSeries(get func(figureRatios) reportRatio) func(*keyplanev1.GovernanceFigures) float64 {
	return func(f *keyplanev1.GovernanceFigures) float64 {
		if r := get(ratiosOf(f)); r != nil {
			return *r
		}
		return math.NaN()
	}
}

var governanceCharts = []governanceChart{
	{file: "orphaned.svg", title: "Orphaned accounts", unit: "identities", series: []chartSeries{
		{"orphaned NHIs", count((*keyplanev1.GovernanceFigures).GetOrphanedNhis)},
		{"frozen NHIs", count((*keyplanev1.GovernanceFigures).GetFrozenNhis)},
		{"disabled, still holding access", count((*keyplanev1.GovernanceFigures).GetDisabledWithAccess)},
	}},
	{file: "ratios.svg", title: "Least privilege, coverage and MFA", unit: "%", percent: true, series: []chartSeries{
		{"least privilege (grants used)", ratioSeries(func(r figureRatios) reportRatio { return r.LeastPrivilege })},
		{"policy coverage", ratioSeries(func(r figureRatios) reportRatio { return r.PolicyCoverage })},
		{"MFA coverage of humans", ratioSeries(func(r figureRatios) reportRatio { return r.MFACoverage })},
		{"login success", ratioSeries(func(r figureRatios) reportRatio { return r.LoginSuccess })},
	}},
	{file: "nhis.svg", title: "Non-human identities: static secrets vs federation", unit: "identities", series: []chartSeries{
		{"static only", count((*keyplanev1.GovernanceFigures).GetNhisStaticOnly)},
		{"federated only", count((*keyplanev1.GovernanceFigures).GetNhisFederatedOnly)},
		{"static and federated", count((*keyplanev1.GovernanceFigures).GetNhisStaticAndFederated)},
		{"no credential", count((*keyplanev1.GovernanceFigures).GetNhisWithoutCredentials)},
	}},
	{file: "lifecycle.svg", title: "Time to provision and deprovision (95th percentile)", unit: "hours", series: []chartSeries{
		{"provision p95", func(f *keyplanev1.GovernanceFigures) float64 {
			if f.GetProvisioned() == f.GetProvisionedWithoutAccess() {
				return math.NaN()
			}
			return f.GetProvisionP95Seconds() / 3600
		}},
		{"deprovision p95", func(f *keyplanev1.GovernanceFigures) float64 {
			if f.GetDeprovisioned() == 0 {
				return math.NaN()
			}
			return f.GetDeprovisionP95Seconds() / 3600
		}},
	}},
}

// writeGovernanceReport writes report.md, report.json and the charts of r into dir
// (created if missing) and returns the paths written.
func writeGovernanceReport(dir, tenant string, r *keyplanev1.GetGovernanceReportResponse) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cur := r.GetCurrent()
	if cur == nil {
		return nil, fmt.Errorf("the report has no current figures")
	}
	// The trend: each day's snapshot, then the figures computed now.
	type point struct {
		t time.Time
		f *keyplanev1.GovernanceFigures
	}
	var trend []point
	for _, s := range r.GetHistory() {
		trend = append(trend, point{s.GetDay().AsTime(), s.GetFigures()})
	}
	trend = append(trend, point{cur.GetComputeTime().AsTime(), cur})

	var written []string
	write := func(name string, b []byte) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		written = append(written, p)
		return nil
	}
	for _, c := range governanceCharts {
		var series []plot.Series
		for _, s := range c.series {
			ps := plot.Series{Label: s.label}
			for _, p := range trend {
				ps.Points = append(ps.Points, plot.TrendPoint{T: p.t, V: s.value(p.f)})
			}
			series = append(series, ps)
		}
		var b bytes.Buffer
		if err := plot.Trend(&b, c.title+" — "+tenant, c.unit, c.percent, series); err != nil {
			return nil, err
		}
		if err := write(c.file, b.Bytes()); err != nil {
			return nil, err
		}
	}

	type jsonDay struct {
		Day     time.Time                     `json:"day"`
		Figures *keyplanev1.GovernanceFigures `json:"figures"`
		Ratios  figureRatios                  `json:"ratios"`
	}
	out := struct {
		Tenant  string                        `json:"tenant"`
		Current *keyplanev1.GovernanceFigures `json:"current"`
		Ratios  figureRatios                  `json:"ratios"`
		History []jsonDay                     `json:"history"`
	}{Tenant: tenant, Current: cur, Ratios: ratiosOf(cur), History: []jsonDay{}}
	for _, s := range r.GetHistory() {
		out.History = append(out.History, jsonDay{s.GetDay().AsTime(), s.GetFigures(), ratiosOf(s.GetFigures())})
	}
	js, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := write("report.json", append(js, '\n')); err != nil {
		return nil, err
	}
	if err := write("report.md", []byte(governanceMarkdown(tenant, r))); err != nil {
		return nil, err
	}
	return written, nil
}

func pct(r reportRatio) string {
	if r == nil {
		return "no data"
	}
	return fmt.Sprintf("%.1f %%", *r*100)
}

func dur(secs float64) string {
	return (time.Duration(secs) * time.Second).String()
}

func governanceMarkdown(tenant string, r *keyplanev1.GetGovernanceReportResponse) string {
	cur := r.GetCurrent()
	rt := ratiosOf(cur)
	var b strings.Builder
	fmt.Fprintf(&b, "# Governance report: %s\n\n", tenant)
	fmt.Fprintf(&b, "Computed %s over the window from %s (flows), with %d daily snapshots of history.\n\n",
		cur.GetComputeTime().AsTime().UTC().Format(time.RFC3339), cur.GetWindowStartTime().AsTime().UTC().Format(time.RFC3339), len(r.GetHistory()))
	b.WriteString("| figure | value | what it counts |\n|---|---|---|\n")
	row := func(name, value, what string) { fmt.Fprintf(&b, "| %s | %s | %s |\n", name, value, what) }
	provision := "no data"
	if cur.GetProvisioned() > cur.GetProvisionedWithoutAccess() {
		provision = dur(cur.GetProvisionP50Seconds()) + " / " + dur(cur.GetProvisionP95Seconds())
	}
	deprovision := "no data"
	if cur.GetDeprovisioned() > 0 {
		deprovision = dur(cur.GetDeprovisionP50Seconds()) + " / " + dur(cur.GetDeprovisionP95Seconds())
	}
	row("time to provision (p50 / p95)", provision, fmt.Sprintf("%d identities created in the window; %d have no access yet", cur.GetProvisioned(), cur.GetProvisionedWithoutAccess()))
	row("time to deprovision (p50 / p95)", deprovision, fmt.Sprintf("%d identities offboarded in the window, from first disable to offboarding", cur.GetDeprovisioned()))
	row("disabled, still holding access", fmt.Sprint(cur.GetDisabledWithAccess()), "deprovisioning not finished")
	row("orphaned NHIs", fmt.Sprintf("%d of %d", cur.GetOrphanedNhis(), cur.GetNhis()), "owner disabled, frozen, offboarded, erased or expired")
	row("frozen NHIs", fmt.Sprint(cur.GetFrozenNhis()), "waiting for an owner")
	row("least privilege", pct(rt.LeastPrivilege), fmt.Sprintf("%d of %d held grants used in the window", cur.GetGrantsUsed(), cur.GetGrantsHeld()))
	row("policy coverage", pct(rt.PolicyCoverage), fmt.Sprintf("%d of %d resources checked are covered by an allow binding", cur.GetResourcesCovered(), cur.GetResourcesChecked()))
	row("owned resources", pct(rt.OwnedResources), fmt.Sprintf("%d of %d resources checked are covered by a binding an active human holds", cur.GetResourcesOwned(), cur.GetResourcesChecked()))
	row("MFA coverage of humans", pct(rt.MFACoverage), fmt.Sprintf("%d of %d active humans", cur.GetHumansMfa(), cur.GetHumans()))
	row("NHIs on static secrets", fmt.Sprint(cur.GetNhisStaticOnly()+cur.GetNhisStaticAndFederated()),
		fmt.Sprintf("%d static only, %d also federated", cur.GetNhisStaticOnly(), cur.GetNhisStaticAndFederated()))
	row("NHIs federated", fmt.Sprint(cur.GetNhisFederatedOnly()+cur.GetNhisStaticAndFederated()),
		fmt.Sprintf("%d federated only (no static secret)", cur.GetNhisFederatedOnly()))
	row("login success", pct(rt.LoginSuccess), fmt.Sprintf("%d successful password logins in the window", cur.GetLoginSuccesses()))
	if len(cur.GetLoginFailures()) > 0 {
		b.WriteString("\n## Login failures by reason\n\n| reason | failures |\n|---|---|\n")
		reasons := make([]string, 0, len(cur.GetLoginFailures()))
		for k := range cur.GetLoginFailures() {
			reasons = append(reasons, k)
		}
		slices.Sort(reasons)
		for _, k := range reasons {
			fmt.Fprintf(&b, "| %s | %d |\n", k, cur.GetLoginFailures()[k])
		}
	}
	b.WriteString("\n## Trends\n\n")
	for _, c := range governanceCharts {
		fmt.Fprintf(&b, "![%s](%s)\n\n", c.title, c.file)
	}
	return b.String()
}
