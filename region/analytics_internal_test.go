package region

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// traceIdentity is one identity of a synthetic trace and its habits.
type traceIdentity struct {
	id, kind string
	regions  []string // one per day, in turn
	networks []string
	hours    []int // hours (UTC) it acts in
	weekdays bool  // only Monday to Friday
	perDay   int   // events per active day
	perms    []string
	denyPct  int
}

// trace generates steady, realistic access for a few identities: people in business
// hours on weekdays from two networks (one of them in two regions on alternate days,
// with an occasional keyplane permission), and services on their schedules from one
// network. Deterministic for a seed.
type trace struct {
	rng   *rand.Rand
	start time.Time // a Monday, 00:00 UTC
	sc    schema.Scope
	ids   map[string]*traceIdentity
}

func newTrace(sc schema.Scope, seed uint64) *trace {
	tr := &trace{rng: rand.New(rand.NewPCG(seed, 17)), start: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), sc: sc, ids: map[string]*traceIdentity{}}
	business := []int{8, 9, 10, 11, 12, 13, 14, 15, 16, 17}
	add := func(name string, ti traceIdentity) {
		ti.id = uuid.NewString()
		tr.ids[name] = &ti
	}
	add("alice", traceIdentity{kind: schema.KindHuman, regions: []string{"us-east"}, networks: []string{"198.51.100.0/24", "203.0.113.0/24"},
		hours: business, weekdays: true, perDay: 40, perms: []string{"docs.doc.read", "docs.doc.write"}, denyPct: 5})
	add("bruno", traceIdentity{kind: schema.KindHuman, regions: []string{"eu-west"}, networks: []string{"192.0.2.0/24", "100.64.1.0/24"},
		hours: business, weekdays: true, perDay: 40, perms: []string{"docs.doc.read"}, denyPct: 5})
	add("chen", traceIdentity{kind: schema.KindHuman, regions: []string{"us-east", "eu-west"}, networks: []string{"198.18.0.0/24", "198.18.1.0/24"},
		hours: business, weekdays: true, perDay: 40, perms: []string{"docs.doc.read", "docs.doc.write", "iam.identities.read"}, denyPct: 3})
	add("etl", traceIdentity{kind: schema.KindServiceAccount, regions: []string{"us-east"}, networks: []string{"10.0.1.0/24"},
		hours: []int{2, 3}, perDay: 30, perms: []string{"data.table.read", "data.table.write"}, denyPct: 1})
	add("reporter", traceIdentity{kind: schema.KindServiceAccount, regions: []string{"eu-west"}, networks: []string{"10.0.2.0/24"},
		hours: []int{6}, perDay: 30, perms: []string{"reports.report.write"}, denyPct: 1})
	add("sync", traceIdentity{kind: schema.KindAgent, regions: []string{"ap-south"}, networks: []string{"10.0.3.0/24"},
		hours: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}, perDay: 48, perms: []string{"queue.message.read"}, denyPct: 2})
	return tr
}

// day is the steady traffic of day d.
func (tr *trace) day(d int) []accessEvent {
	var out []accessEvent
	base := tr.start.AddDate(0, 0, d)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range tr.ids {
			if !yield(k) {
				return
			}
		}
	}) {
		ti := tr.ids[name]
		if wd := base.Weekday(); ti.weekdays && (wd == time.Saturday || wd == time.Sunday) {
			continue
		}
		region := ti.regions[d%len(ti.regions)]
		session := fmt.Sprintf("%s-day%d", name, d)
		for i := range ti.perDay {
			hour := ti.hours[i%len(ti.hours)]
			at := base.Add(time.Duration(hour)*time.Hour + time.Duration(tr.rng.IntN(3600))*time.Second)
			e := tr.event(ti, at, region, ti.networks[i%len(ti.networks)], session)
			e.permission = ti.perms[i%len(ti.perms)]
			e.allowed = tr.rng.IntN(100) >= ti.denyPct
			out = append(out, e)
		}
	}
	return out
}

func (tr *trace) event(ti *traceIdentity, at time.Time, region, network, session string) accessEvent {
	return accessEvent{tenant: tr.sc, identity: ti.id, identityKind: ti.kind, at: at, region: region, network: network, client: "app-" + ti.kind,
		session: session, permission: ti.perms[0], resource: fmt.Sprintf("%s/%d", ti.perms[0][:4], tr.rng.IntN(50)), allowed: true}
}

type plantedAlert struct{ identity, kind, value string }

// anomalies plants one anomaly of every identity kind of alert on day d, and what each
// must raise.
func (tr *trace) anomalies(d int) ([]accessEvent, []plantedAlert) {
	base := tr.start.AddDate(0, 0, d)
	id := func(name string) *traceIdentity { return tr.ids[name] }
	var evs []accessEvent
	var want []plantedAlert
	// alice, from a known network, enters through a region she never used.
	a := id("alice")
	evs = append(evs, tr.event(a, base.Add(11*time.Hour), "ap-south", a.networks[0], "alice-abroad"))
	want = append(want, plantedAlert{a.id, AlertNewRegion, "ap-south"})
	// bruno, in his region, from a network he never used.
	b := id("bruno")
	evs = append(evs, tr.event(b, base.Add(10*time.Hour), "eu-west", "185.199.108.0/24", "bruno-cafe"))
	want = append(want, plantedAlert{b.id, AlertNewNetwork, "185.199.108.0/24"})
	// chen uses a keyplane permission he never used (he did use another one).
	c := id("chen")
	e := tr.event(c, base.Add(14*time.Hour), "us-east", c.networks[0], "chen-day-admin")
	e.permission, e.resource = "iam.roles.write", "tenant"
	evs = append(evs, e)
	want = append(want, plantedAlert{c.id, AlertSensitive, "iam.roles.write"})
	// chen's session: us-east, then eu-west 25 minutes later (5,500 km).
	evs = append(evs, tr.event(c, base.Add(15*time.Hour), "us-east", c.networks[0], "chen-stolen"),
		tr.event(c, base.Add(15*time.Hour+25*time.Minute), "eu-west", c.networks[1], "chen-stolen"))
	want = append(want, plantedAlert{c.id, AlertImpossibleTravel, "eu-west↔us-east"})
	// etl (02:00–03:59 UTC) runs at 14:00.
	etl := id("etl")
	evs = append(evs, tr.event(etl, base.Add(14*time.Hour+5*time.Minute), "us-east", etl.networks[0], "etl-odd"))
	want = append(want, plantedAlert{etl.id, AlertOffHours, "14"})
	// reporter is denied 30 times within a minute of its usual hour.
	r := id("reporter")
	burst := base.Add(6*time.Hour + 30*time.Minute)
	for i := range 30 {
		e := tr.event(r, burst.Add(time.Duration(i)*time.Second), "eu-west", r.networks[0], "reporter-burst")
		e.allowed = false
		evs = append(evs, e)
	}
	want = append(want, plantedAlert{r.id, AlertDenyBurst, burst.Truncate(time.Minute).Format(time.RFC3339)})
	// A new identity still learning: its new region, network and permission raise
	// nothing.
	fresh := &traceIdentity{id: uuid.NewString(), kind: schema.KindServiceAccount, perms: []string{"iam.roles.write"}}
	for i := range 20 {
		evs = append(evs, tr.event(fresh, base.Add(time.Duration(i)*time.Hour), []string{"us-east", "eu-west"}[i%2], fmt.Sprintf("10.9.%d.0/24", i), fmt.Sprintf("fresh-%d", i)))
	}
	return evs, want
}

func analyticsForTest(t *testing.T, store *schema.Store, cfg AnalyticsConfig) (*analytics, *analyticsMetrics) {
	t.Helper()
	am, err := newAnalyticsMetrics(prometheus.NewRegistry(), Config{Region: "us-east", NodeID: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return newAnalytics(cfg.withDefaults(), store, slog.New(slog.DiscardHandler), am), am
}

func alertsOf(t *testing.T, store *schema.Store, sc schema.Scope) []schema.Alert {
	t.Helper()
	as, _, err := store.ListAlerts(context.Background(), sc, schema.AlertFilter{}, schema.Page{Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// TestAnalyticsTraceFindsPlantedAnomalies feeds two weeks of steady synthetic traffic
// through the analytics engine and its real store, then a day with one planted
// anomaly of each kind: every planted anomaly is found, nothing else, and a replay of
// the anomalies is suppressed.
func TestAnalyticsTraceFindsPlantedAnomalies(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			t.Parallel()
			traceFindsPlantedAnomalies(t, seed)
		})
	}
}

func traceFindsPlantedAnomalies(t *testing.T, seed uint64) {
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	tn, err := store.CreateTenant(ctx, schema.Change{Actor: "operator"}, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	a, am := analyticsForTest(t, store, AnalyticsConfig{})
	tr := newTrace(tn.Scope(), seed)
	for d := range 14 {
		a.flush(ctx, tr.day(d))
		if got := alertsOf(t, store, tn.Scope()); len(got) != 0 {
			t.Fatalf("day %d of steady traffic raised %d alerts, first: %+v", d, len(got), got[0])
		}
	}
	fs, err := store.LoadFeatures(ctx, tn.Scope(), []string{tr.ids["etl"].id})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Kind == schema.FeatureEvents && f.Count < a.cfg.LearningEvents {
			t.Fatalf("etl's baseline has %d events after two weeks, want past the learning period (%d)", f.Count, a.cfg.LearningEvents)
		}
	}

	planted, want := tr.anomalies(14)
	a.flush(ctx, append(tr.day(14), planted...))
	got := alertsOf(t, store, tn.Scope())
	var gotKeys []plantedAlert
	for _, al := range got {
		gotKeys = append(gotKeys, plantedAlert{al.IdentityID, al.Kind, al.Value})
		if al.Reason == "" || al.Region != "us-east" {
			t.Errorf("alert %+v: want a reason and the raising region", al)
		}
	}
	cmpAlert := func(x, y plantedAlert) int {
		return strings.Compare(x.identity+x.kind+x.value, y.identity+y.kind+y.value)
	}
	slices.SortFunc(gotKeys, cmpAlert)
	slices.SortFunc(want, cmpAlert)
	if !slices.Equal(gotKeys, want) {
		t.Fatalf("alerts:\n got %v\nwant %v", gotKeys, want)
	}
	for _, k := range []string{AlertNewRegion, AlertNewNetwork, AlertSensitive, AlertOffHours, AlertImpossibleTravel, AlertDenyBurst} {
		if n := testutil.ToFloat64(am.alerts.WithLabelValues(k)); n != 1 {
			t.Errorf("keyplane_analytics_alerts_total{kind=%q} = %v, want 1", k, n)
		}
	}

	// The same anomalies again on the next day: within the suppression window,
	// nothing new (the burst of a new minute is a new value).
	again, _ := tr.anomalies(14)
	a.flush(ctx, again)
	if n := len(alertsOf(t, store, tn.Scope())); n != len(want) {
		t.Fatalf("after a replay: %d alerts, want still %d (suppressed)", n, len(want))
	}
}

func TestNetworkOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"198.51.100.77", "198.51.100.0/24"},
		{"::ffff:198.51.100.77", "198.51.100.0/24"},
		{"2001:db8:1234:5678::1", "2001:db8:1234::/48"},
		{"fe80::1%eth0", "fe80::/48"},
		{"", ""},
		{"not-an-ip", ""},
	} {
		if got := networkOf(c.in); got != c.want {
			t.Errorf("networkOf(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestValidateWebhookURL(t *testing.T) {
	t.Parallel()
	strict, tests := webhookPolicy{}, webhookPolicy{allowLoopback: true}
	for _, c := range []struct {
		url  string
		p    webhookPolicy
		want string // "" means accepted; otherwise part of the refusal
	}{
		{"https://hooks.example.com/keyplane", strict, ""},
		{"https://hooks.example.com:8443/k?x=1", strict, ""},
		{"https://93.184.216.34/hook", strict, ""},
		{"http://hooks.example.com/keyplane", strict, "https"},
		{"http://127.0.0.1:8080/hook", strict, "loopback"},
		{"http://127.0.0.1:8080/hook", tests, ""},
		{"http://[::1]:8080/hook", tests, ""},
		{"http://localhost:8080/hook", tests, ""},
		{"http://localhost:8080/hook", strict, "loopback"},
		{"http://hooks.example.com/x", tests, "https"},
		{"https://10.0.0.5/hook", strict, "private"},
		{"https://10.0.0.5/hook", tests, "private"},
		{"https://10.0.0.5/hook", webhookPolicy{allowPrivate: true}, ""},
		{"https://169.254.169.254/latest/meta-data", strict, "private"},
		{"https://[fe80::1]/x", strict, "private"},
		{"https://[fe80::1%25eth0]/x", strict, "zone"},
		{"https://100.64.0.1/x", strict, "private"},
		{"https://0.0.0.0/x", strict, "unicast"},
		{"https://[::ffff:10.0.0.1]/x", strict, "private"},
		{"https://user:pw@hooks.example.com/x", strict, "user info"},
		{"https://hooks.example.com/x#frag", strict, "fragment"},
		{"ftp://hooks.example.com/x", strict, "https"},
		{"https:///x", strict, "host"},
		{"https://hooks.example.com:0/x", strict, "port"},
		{"", strict, "required"},
		{"https://hooks.example.com/" + string(make([]byte, 3000)), strict, "2048"},
		{"::not a url", strict, "URL"},
	} {
		_, err := validateWebhookURL(c.url, c.p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: refused: %v", c.url, err)
		case c.want != "" && err == nil:
			t.Errorf("%q: accepted, want refused (%s)", c.url, c.want)
		case c.want != "" && !mentions(err.Error(), c.want):
			t.Errorf("%q: %v, want it to mention %q", c.url, err, c.want)
		case err != nil && !mentions(err.Error(), "webhook.url"):
			t.Errorf("%q: %v does not name the field", c.url, err)
		}
	}
}

func mentions(s, sub string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(sub)) }

// FuzzValidateWebhookURL: whatever the URL, validation never panics, and what it
// accepts under the strict policy is https to a host that is a name or a public
// address.
func FuzzValidateWebhookURL(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/k", "http://127.0.0.1:1/x", "https://[::1]/", "https://10.1.2.3/", "https://169.254.169.254/",
		"https://u:p@h/", "https://h/#f", "https://[fe80::1%25en0]/", "https://h:99999/", "https://0x7f.1/", "https://2130706433/", "//h/x", "https:h"} {
		f.Add(s, false, false)
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, raw string, loopback, private bool) {
		u, err := validateWebhookURL(raw, webhookPolicy{allowLoopback: loopback, allowPrivate: private})
		if err != nil {
			return
		}
		if u.Hostname() == "" || u.User != nil || u.Fragment != "" {
			t.Fatalf("accepted %q: host %q, user %v, fragment %q", raw, u.Hostname(), u.User, u.Fragment)
		}
		if !loopback && u.Scheme != "https" {
			t.Fatalf("accepted %q without https", raw)
		}
	})
}

func TestParseRegionCoordinates(t *testing.T) {
	t.Parallel()
	got, err := ParseRegionCoordinates(" us-east = 38.9,-77.0 ; mars-base=-4.5,137.4;")
	if err != nil || len(got) != 2 || got["us-east"] != (Coordinates{38.9, -77}) || got["mars-base"] != (Coordinates{-4.5, 137.4}) {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"us-east", "us-east=1", "us-east=91,0", "us-east=0,181", "US East=1,2", "x=NaN,1", "=1,2", "a=1,2,3"} {
		if _, err := ParseRegionCoordinates(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// FuzzParseRegionCoordinates: never panics; what it accepts is in range.
func FuzzParseRegionCoordinates(f *testing.F) {
	for _, s := range []string{"us-east=38.9,-77.0;eu-west=53.3,-6.3", "a=1,2", "a=1e308,2", "a=-0,0;", ";;", "a=0x10,1", "a=Inf,1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseRegionCoordinates(s)
		if err != nil {
			return
		}
		for name, p := range m {
			if name == "" || p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
				t.Fatalf("%q: accepted %q=%v", s, name, p)
			}
		}
	})
}

// FuzzNetworkOf: never panics; a network it returns contains the address.
func FuzzNetworkOf(f *testing.F) {
	for _, s := range []string{"198.51.100.7", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "", "1.2.3", "2001:db8::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := networkOf(s)
		if n == "" {
			return
		}
		p, err := netip.ParsePrefix(n)
		a, aerr := netip.ParseAddr(s)
		if err != nil || aerr != nil || !p.Contains(a.Unmap().WithZone("")) {
			t.Fatalf("networkOf(%q) = %q", s, n)
		}
	})
}
