package region_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// TestGovernanceFiguresExported: a node computes its home tenants' governance figures
// on its own, exports them as keyplane_governance_* gauges per tenant, and records the
// day's snapshot; offboarding the owner of an NHI shows up as an orphaned, frozen NHI.
func TestGovernanceFiguresExported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) { c.GovernanceFiguresEvery, c.MetricsPublic = 20*time.Millisecond, true })
	metrics := f.url + "/metrics"
	tenant := `tenant="acme"`
	// waitFor polls until the gauge has the value (each round recomputes).
	waitFor := func(name string, want float64, labels ...string) {
		t.Helper()
		for i := 0; ; i++ {
			got := metricValue(t, metrics, name, append([]string{tenant}, labels...)...)
			if got == want {
				return
			}
			if i > 400 {
				t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	// The tenant's admin client and the fixture's bot hold client secrets (the bot an
	// API key too): static; their owners are active.
	waitFor("keyplane_governance_nhis", 2, `auth="static"`)
	waitFor("keyplane_governance_nhis", 0, `auth="federated"`)
	waitFor("keyplane_governance_orphaned_nhis", 0)
	waitFor("keyplane_governance_mfa_coverage_ratio", 0)

	offboarded := time.Now()
	if _, err := f.admin.OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: "acme", IdentityId: f.owner,
		Reason: "HR-1 leaver"})); err != nil {
		t.Fatal(err)
	}
	waitFor("keyplane_governance_orphaned_nhis", 1)
	waitFor("keyplane_governance_frozen_nhis", 1)
	if got := metricValue(t, metrics, "keyplane_governance_figure_rounds_total", `result="error"`); got != 0 {
		t.Errorf("%v rounds failed", got)
	}
	snaps, err := f.store.GovernanceSnapshots(ctx, schema.Scope{TenantID: "acme", Region: "us-east"}, time.Now().Add(-48*time.Hour))
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %d, %v; want today's", len(snaps), err)
	}
	// The day's first round ran while the fixture was being set up; later rounds
	// (after the offboarding) did not replace it.
	if s := snaps[0].Figures; !s.At.Before(offboarded) || s.OrphanedNHIs != 0 {
		t.Errorf("today's snapshot = %+v, want the day's first figures, from before the offboarding (nothing orphaned)", s)
	}
}
