package deploy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/canary"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// canaryAcrossRegions runs the revocation canary against every region of the cluster
// (acme, home us-east): two rounds, every (issue, revoke) pair, no stale read, and the
// per-pair visibility latencies recorded. Then a region whose introspection answers
// "active" from a stale cache (a proxy in front of a real node) is caught.
func canaryAcrossRegions(t *testing.T, mr *multiRegion) {
	ctx := context.Background()
	const tenant = "acme"
	admin := mr.admin(mr.cl.RegionNodes("eu-west")[0].URL, tenant)
	cl, err := admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: tenant, IdentityId: mr.svc[tenant], Name: "canary"}))
	if err != nil {
		t.Fatal(err)
	}
	var regions []canary.Region
	for _, r := range mr.cl.Regions() {
		regions = append(regions, canary.Region{Name: r, URL: mr.cl.RegionNodes(r)[0].URL})
	}
	reg := prometheus.NewRegistry()
	c, err := canary.New(canary.Config{Regions: regions, Tenant: tenant, ClientID: cl.Msg.ClientId, ClientSecret: cl.Msg.ClientSecret, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range c.Run(ctx, 0, 2) {
		if r.Pairs != len(regions)*len(regions) || len(r.Stale) > 0 || len(r.Errors) > 0 {
			t.Fatalf("round %d: %d pairs, stale %q, errors %v; want %d pairs and nothing else", i, r.Pairs, r.Stale, r.Errors, len(regions)*len(regions))
		}
	}
	if got := seriesValue(t, reg, "keyplane_canary_rounds_total", "ok"); got != 2 {
		t.Errorf("rounds_total{result=ok} = %v, want 2", got)
	}
	// Every (revoke, validate) pair saw the token inactive twice per issuing region.
	for _, a := range regions {
		for _, b := range regions {
			if n := seriesValue(t, reg, "keyplane_canary_revocation_visible_seconds", a.Name, b.Name); n != float64(2*len(regions)) {
				t.Errorf("revocation_visible_seconds{revoke=%s,validate=%s} counted %v, want %d (2 rounds × %d issuing regions)", a.Name, b.Name, n, 2*len(regions), len(regions))
			}
		}
	}

	// A "region" answering introspection from a stale cache: token and revoke go to a
	// real node, introspection always says active.
	real, _ := url.Parse(mr.cl.RegionNodes("us-east")[0].URL)
	proxy := httputil.NewSingleHostReverseProxy(real)
	stale := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/oauth2/introspect") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"active":true}`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer stale.Close()
	reg2 := prometheus.NewRegistry()
	c2, err := canary.New(canary.Config{Regions: []canary.Region{regions[0], {Name: "stale", URL: stale.URL}}, Tenant: tenant,
		ClientID: cl.Msg.ClientId, ClientSecret: cl.Msg.ClientSecret, Registry: reg2})
	if err != nil {
		t.Fatal(err)
	}
	r := c2.Round(ctx)
	if len(r.Stale) != 4 || !strings.Contains(r.Stale[0], "still active at stale") {
		t.Fatalf("stale findings = %q, want the stale region caught for each of the 4 pairs", r.Stale)
	}
	if got := seriesValue(t, reg2, "keyplane_canary_revocation_stale_total", regions[0].Name, "stale"); got != 2 {
		t.Errorf("revocation_stale_total{revoke=%s,validate=stale} = %v, want 2", regions[0].Name, got)
	}
	if got := seriesValue(t, reg2, "keyplane_canary_rounds_total", "stale"); got != 1 {
		t.Errorf("rounds_total{result=stale} = %v, want 1", got)
	}
}

// seriesValue is the value (a counter's, or a histogram's count) of the gathered
// series of name with exactly these label values, in label-name order.
func seriesValue(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(values) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetValue() != values[i] {
					continue next
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, values)
	return 0
}
