package region

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/schema"
)

// Identity analytics (docs/analytics.md). Every decision and every token issued is
// an access event; checks hand them to the node's analytics without waiting (a full
// buffer drops the event and counts it). A background flusher aggregates the buffered
// events per tenant and identity, compares them with the identities' baselines read
// in one statement per tenant and batch, raises alerts on deviations, and adds the
// batch to the baselines in one batched write.

// Alert kinds.
const (
	AlertNewRegion        = "new_region"
	AlertNewNetwork       = "new_network"
	AlertSensitive        = "sensitive_permission"
	AlertOffHours         = "off_hours"
	AlertImpossibleTravel = "impossible_travel"
	AlertDenyBurst        = "deny_burst"
	AlertPolicyDrift      = "policy_drift"
)

// AlertKinds are every alert kind, in the order docs/analytics.md lists them.
var AlertKinds = []string{AlertNewRegion, AlertNewNetwork, AlertSensitive, AlertOffHours, AlertImpossibleTravel, AlertDenyBurst, AlertPolicyDrift}

// Coordinates place a region on the globe for impossible travel (degrees).
type Coordinates struct{ Lat, Lon float64 }

// DefaultRegionCoordinates places the region names keyplane's deployments and tests
// use, and common cloud region names, at a city of the region.
func DefaultRegionCoordinates() map[string]Coordinates {
	return map[string]Coordinates{
		"us-east": {38.9, -77.0}, "us-east-1": {38.9, -77.0}, "us-east-2": {40.0, -83.0},
		"us-west": {37.4, -122.1}, "us-west-1": {37.4, -122.1}, "us-west-2": {45.6, -121.2}, "us-central": {41.3, -95.9},
		"eu-west": {53.3, -6.3}, "eu-west-1": {53.3, -6.3}, "eu-west-2": {51.5, -0.1}, "eu-west-3": {48.9, 2.35},
		"eu-central": {50.1, 8.7}, "eu-central-1": {50.1, 8.7}, "eu-north": {59.3, 18.1},
		"ap-south": {19.1, 72.9}, "ap-south-1": {19.1, 72.9}, "ap-southeast": {1.35, 103.8}, "ap-southeast-1": {1.35, 103.8},
		"ap-southeast-2": {-33.9, 151.2}, "ap-northeast": {35.7, 139.7}, "ap-northeast-1": {35.7, 139.7},
		"sa-east": {-23.5, -46.6}, "sa-east-1": {-23.5, -46.6}, "ca-central": {45.5, -73.6}, "me-central": {25.2, 55.3}, "af-south": {-33.9, 18.4},
	}
}

// AnalyticsConfig configures identity analytics; zero fields take the defaults in
// brackets. docs/analytics.md explains each rule.
type AnalyticsConfig struct {
	// Off turns analytics off: no events, alerts, deliveries or drift rounds.
	Off bool
	// FlushEvery is how often buffered events are judged and added to the baselines
	// [1s]; Buffer how many events wait at most [20,000].
	FlushEvery time.Duration
	Buffer     int
	// LearningEvents is how many events an identity's baseline needs before its
	// deviations raise alerts [200].
	LearningEvents int64
	// Suppress is how long a repeat of the same identity, kind and value raises no
	// alert [24h].
	Suppress time.Duration
	// MaxValues bounds the values kept per identity and feature [256].
	MaxValues int
	// DenyWindow, DenyBurstMin, DenyBurstFactor: a burst is at least DenyBurstMin
	// denies of one identity within one DenyWindow, more than DenyBurstFactor times the
	// identity's usual denies per window [1m, 20, 5].
	DenyWindow      time.Duration
	DenyBurstMin    int
	DenyBurstFactor float64
	// TravelKmh is the fastest a session may move between regions [1000 km/h];
	// Regions places region names (over DefaultRegionCoordinates).
	TravelKmh float64
	Regions   map[string]Coordinates
	// Webhooks: each attempt's timeout [5s], attempts before giving up [6], the first
	// retry's delay, doubling after each failure up to an hour [2s], and how often the
	// outbox is polled [1s].
	WebhookTimeout  time.Duration
	WebhookAttempts int
	WebhookBackoff  time.Duration
	DeliverEvery    time.Duration
	// WebhookAllowLoopback accepts http:// webhook URLs on loopback hosts and lets
	// deliveries reach loopback addresses (tests, local development).
	// WebhookAllowPrivate lets deliveries reach private, link-local and other
	// non-public addresses (an endpoint inside the deployment's network).
	WebhookAllowLoopback bool
	WebhookAllowPrivate  bool
	// DriftEvery is how often the node compares its decisions of a sample with the
	// other nodes' [5m; negative: never]; DriftSample how many recent decisions of a
	// tenant the sample takes [50].
	DriftEvery  time.Duration
	DriftSample int
}

func (c AnalyticsConfig) withDefaults() AnalyticsConfig {
	c.FlushEvery = cmp.Or(c.FlushEvery, time.Second)
	c.Buffer = cmp.Or(c.Buffer, 20_000)
	c.LearningEvents = cmp.Or(c.LearningEvents, 200)
	c.Suppress = cmp.Or(c.Suppress, 24*time.Hour)
	c.MaxValues = cmp.Or(c.MaxValues, 256)
	c.DenyWindow = cmp.Or(c.DenyWindow, time.Minute)
	c.DenyBurstMin = cmp.Or(c.DenyBurstMin, 20)
	c.DenyBurstFactor = cmp.Or(c.DenyBurstFactor, 5)
	c.TravelKmh = cmp.Or(c.TravelKmh, 1000)
	regions := DefaultRegionCoordinates()
	for k, v := range c.Regions {
		regions[k] = v
	}
	c.Regions = regions
	c.WebhookTimeout = cmp.Or(c.WebhookTimeout, 5*time.Second)
	c.WebhookAttempts = cmp.Or(c.WebhookAttempts, 6)
	c.WebhookBackoff = cmp.Or(c.WebhookBackoff, 2*time.Second)
	c.DeliverEvery = cmp.Or(c.DeliverEvery, time.Second)
	c.DriftEvery = cmp.Or(c.DriftEvery, 5*time.Minute)
	c.DriftSample = cmp.Or(c.DriftSample, 50)
	return c
}

// Validate reports the first invalid field.
func (c AnalyticsConfig) Validate() error {
	switch {
	case c.FlushEvery < 0 || c.Buffer < 0 || c.LearningEvents < 0 || c.Suppress < 0 || c.MaxValues < 0:
		return errors.New("analytics: flush interval, buffer, learning events, suppression and max values must not be negative")
	case c.DenyWindow < 0 || c.DenyBurstMin < 0 || c.DenyBurstFactor < 0 || math.IsNaN(c.DenyBurstFactor):
		return errors.New("analytics: deny burst settings must not be negative")
	case c.TravelKmh < 0 || math.IsNaN(c.TravelKmh):
		return errors.New("analytics: travel speed must not be negative")
	case c.WebhookTimeout < 0 || c.WebhookAttempts < 0 || c.WebhookBackoff < 0 || c.DeliverEvery < 0 || c.DriftSample < 0:
		return errors.New("analytics: webhook and drift settings must not be negative")
	case c.DriftSample > 1000:
		return errors.New("analytics: drift sample at most 1000")
	}
	for name, p := range c.Regions {
		if p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 || math.IsNaN(p.Lat) || math.IsNaN(p.Lon) {
			return fmt.Errorf("analytics: region %q: latitude within ±90 and longitude within ±180", name)
		}
	}
	return nil
}

// analyticsMetrics are the keyplane_analytics_* series.
type analyticsMetrics struct {
	alerts     *prometheus.CounterVec
	dropped    prometheus.Counter
	deliveries *prometheus.CounterVec
}

func newAnalyticsMetrics(reg prometheus.Registerer, cfg Config) (*analyticsMetrics, error) {
	labels := prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID}
	m := &analyticsMetrics{
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "keyplane", Name: "analytics_alerts_total",
			Help: "Anomaly alerts this node raised (after suppression), by kind.", ConstLabels: labels}, []string{"kind"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "keyplane", Name: "analytics_events_dropped_total",
			Help: "Access events left out of the baselines because the analytics buffer was full (checks never wait for analytics).", ConstLabels: labels}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "keyplane", Name: "analytics_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result: delivered, retry (failed, will be retried) or failed (gave up).", ConstLabels: labels}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.alerts, m.dropped, m.deliveries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, k := range AlertKinds {
		m.alerts.WithLabelValues(k)
	}
	for _, r := range []string{"delivered", "retry", "failed"} {
		m.deliveries.WithLabelValues(r)
	}
	return m, nil
}

// accessEvent is one decision or issued token, as the baselines see it.
type accessEvent struct {
	tenant       schema.Scope
	identity     string
	identityKind string // schema's kinds ("human" is the only human one); "" when not known (tokens)
	at           time.Time
	region       string // the entry region
	network      string // "" when unknown
	client       string
	session      string
	permission   string // "" for an issued token
	resource     string
	allowed      bool
	sensitive    bool // decided by a sensitive role
}

func (e accessEvent) decision() bool { return e.permission != "" }

// networkOf is the /24 (IPv4) or /48 (IPv6) network of ip, "" when ip is not an
// address.
func networkOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.String()
}

// resourcePrefix is what the baseline keeps of a resource: its first segment (with
// its "/"), or the whole resource when it has one segment.
func resourcePrefix(r string) string {
	if i := strings.IndexByte(r, '/'); i >= 0 {
		return r[:i+1]
	}
	return r
}

// sensitivePermission reports whether an allowed use of perm is sensitive: keyplane's
// own permissions (iam.*) and anything a sensitive role decided.
func sensitivePermission(e accessEvent) bool {
	return e.allowed && (strings.HasPrefix(e.permission, "iam.") || e.sensitive)
}

// analytics judges and records access events. observe is safe for concurrent use;
// run is one goroutine, the only one touching the burst windows.
type analytics struct {
	cfg   AnalyticsConfig
	store *schema.Store
	log   *slog.Logger
	m     *analyticsMetrics
	ch    chan accessEvent
	// bursts are the current deny windows, per tenant and identity.
	bursts map[burstKey]*burstWindow
}

type burstKey struct{ tenant, identity string }

type burstWindow struct {
	start   time.Time
	denies  int
	alerted bool
}

func newAnalytics(cfg AnalyticsConfig, store *schema.Store, log *slog.Logger, m *analyticsMetrics) *analytics {
	return &analytics{cfg: cfg, store: store, log: log, m: m, ch: make(chan accessEvent, cfg.Buffer), bursts: map[burstKey]*burstWindow{}}
}

// observe queues e without waiting: a full buffer drops it (counted).
func (a *analytics) observe(e accessEvent) {
	if a.cfg.Off {
		return
	}
	select {
	case a.ch <- e:
	default:
		a.m.dropped.Inc()
	}
}

// run flushes every cfg.FlushEvery until ctx is done, then once more with what is
// queued (for at most 10 s).
func (a *analytics) run(ctx context.Context) {
	if a.cfg.Off {
		return
	}
	tick := time.NewTicker(a.cfg.FlushEvery)
	defer tick.Stop()
	batch := make([]accessEvent, 0, 5000)
	for {
		select {
		case e := <-a.ch:
			batch = append(batch, e)
			if len(batch) == cap(batch) {
				a.flush(ctx, batch)
				batch = batch[:0]
			}
		case <-tick.C:
			a.flush(ctx, batch)
			batch = batch[:0]
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
		drain:
			for {
				select {
				case e := <-a.ch:
					batch = append(batch, e)
				default:
					break drain
				}
			}
			a.flush(dctx, batch)
			return
		}
	}
}

// flush judges and records one batch, tenant by tenant. A tenant whose baseline
// cannot be read or written is logged and its events are dropped (baselines are
// statistics; the decision log keeps every decision).
func (a *analytics) flush(ctx context.Context, batch []accessEvent) {
	if len(batch) == 0 {
		return
	}
	by := map[schema.Scope][]accessEvent{}
	var latest time.Time
	for _, e := range batch {
		by[e.tenant] = append(by[e.tenant], e)
		if e.at.After(latest) {
			latest = e.at
		}
	}
	for sc, evs := range by {
		if err := a.process(ctx, sc, evs); err != nil && ctx.Err() == nil {
			a.log.Warn("analytics: tenant batch not recorded", "tenant", sc.TenantID, "events", len(evs), "err", err)
		}
	}
	// Bound the burst windows: drop those whose window has passed.
	horizon := latest.Add(-2 * a.cfg.DenyWindow)
	for k, w := range a.bursts {
		if w.start.Before(horizon) {
			delete(a.bursts, k)
		}
	}
}

// process judges and records one tenant's events.
func (a *analytics) process(ctx context.Context, sc schema.Scope, evs []accessEvent) error {
	slices.SortStableFunc(evs, func(x, y accessEvent) int { return x.at.Compare(y.at) })
	var ids []string
	seen := map[string]bool{}
	for _, e := range evs {
		if !seen[e.identity] {
			seen[e.identity] = true
			ids = append(ids, e.identity)
		}
	}
	base := map[string]*baseline{}
	for chunk := range slices.Chunk(ids, 1000) {
		fs, err := a.store.LoadFeatures(ctx, sc, chunk)
		if err != nil {
			return fmt.Errorf("load baselines: %w", err)
		}
		for _, f := range fs {
			baselineOf(base, f.IdentityID).add(f)
		}
	}
	alerts, features := a.judge(sc, base, evs)
	travel, err := a.travel(ctx, sc, evs)
	if err != nil {
		return err
	}
	alerts = append(alerts, travel...)
	// Alerts first: once a batch shows in the baselines, its alerts are raised.
	for _, al := range alerts {
		if _, err := a.raise(ctx, sc, al); err != nil {
			return err
		}
	}
	if err := a.store.AddFeatures(ctx, sc, features); err != nil {
		return fmt.Errorf("write baselines: %w", err)
	}
	return nil
}

// raise records al unless suppressed, and counts it.
func (a *analytics) raise(ctx context.Context, sc schema.Scope, al schema.Alert) (bool, error) {
	out, raised, err := a.store.RaiseAlert(ctx, sc, al, a.cfg.Suppress)
	if err != nil {
		return false, fmt.Errorf("raise %s alert: %w", al.Kind, err)
	}
	if raised {
		a.m.alerts.WithLabelValues(al.Kind).Inc()
		a.log.Info("analytics alert", "tenant", sc.TenantID, "alert_id", out.ID, "kind", al.Kind, "identity", al.IdentityID, "value", al.Value, "reason", al.Reason)
	}
	return raised, nil
}

// baseline is one identity's features as stored.
type baseline struct {
	values map[string]map[string]schema.Feature // kind → value → feature
}

func baselineOf(m map[string]*baseline, id string) *baseline {
	b := m[id]
	if b == nil {
		b = &baseline{values: map[string]map[string]schema.Feature{}}
		m[id] = b
	}
	return b
}

func (b *baseline) add(f schema.Feature) {
	if b.values[f.Kind] == nil {
		b.values[f.Kind] = map[string]schema.Feature{}
	}
	b.values[f.Kind][f.Value] = f
}

func (b *baseline) count(kind, value string) int64 { return b.values[kind][value].Count }

// names lists the values of kind, sorted, at most 5 (for reasons).
func (b *baseline) names(kind string) string {
	var out []string
	for v := range b.values[kind] {
		out = append(out, v)
	}
	slices.Sort(out)
	if len(out) > 5 {
		out = append(out[:5], "…")
	}
	return strings.Join(out, ", ")
}

// judge compares a tenant's events (sorted by time) with the baselines read before
// them, returning the alerts to raise and the features to add. Only values seen
// before this batch count as known: a burst of new values in one batch raises one
// alert per value.
func (a *analytics) judge(sc schema.Scope, base map[string]*baseline, evs []accessEvent) ([]schema.Alert, []schema.Feature) {
	type fkey struct{ identity, kind, value string }
	add := map[fkey]*schema.Feature{}
	var order []fkey
	newValues := map[[2]string]int{} // identity, kind → values added in this batch
	var alerts []schema.Alert
	raised := map[fkey]bool{}
	alert := func(e accessEvent, kind, value, reason string) {
		k := fkey{e.identity, kind, value}
		if raised[k] {
			return
		}
		raised[k] = true
		alerts = append(alerts, schema.Alert{IdentityID: e.identity, Kind: kind, Value: value, Reason: reason})
	}
	note := func(e accessEvent, b *baseline, kind, value string) {
		k := fkey{e.identity, kind, value}
		if f := add[k]; f != nil {
			f.Count++
			f.Last = e.at
			return
		}
		if value != "" && b.count(kind, value) == 0 {
			// A value new to the baseline: kept only while the identity has room.
			nk := [2]string{e.identity, kind}
			if len(b.values[kind])+newValues[nk] >= a.cfg.MaxValues {
				return
			}
			newValues[nk]++
		}
		add[k] = &schema.Feature{IdentityID: e.identity, Kind: kind, Value: value, Count: 1, First: e.at, Last: e.at}
		order = append(order, k)
	}
	for _, e := range evs {
		b := baselineOf(base, e.identity)
		events := b.values[schema.FeatureEvents][""]
		learned := events.Count >= a.cfg.LearningEvents
		hour := e.at.UTC().Hour()
		if learned {
			if e.region != "" && b.count(schema.FeatureRegion, e.region) == 0 {
				alert(e, AlertNewRegion, e.region, fmt.Sprintf("first access from region %s (known: %s)", e.region, b.names(schema.FeatureRegion)))
			}
			if e.network != "" && b.count(schema.FeatureNetwork, e.network) == 0 {
				alert(e, AlertNewNetwork, e.network, fmt.Sprintf("first access from network %s (known: %s)", e.network, b.names(schema.FeatureNetwork)))
			}
			if e.decision() && sensitivePermission(e) && b.count(schema.FeaturePermission, e.permission) == 0 {
				alert(e, AlertSensitive, e.permission, fmt.Sprintf("first use of sensitive permission %s on %s", e.permission, e.resource))
			}
			if e.identityKind != "" && e.identityKind != schema.KindHuman && b.count(schema.FeatureHour, strconv.Itoa(hour)) == 0 &&
				b.count(schema.FeatureHour, strconv.Itoa((hour+23)%24)) == 0 && b.count(schema.FeatureHour, strconv.Itoa((hour+1)%24)) == 0 {
				alert(e, AlertOffHours, strconv.Itoa(hour), fmt.Sprintf("non-human identity (%s) active at %02d:00 UTC, outside its usual hours (%s)",
					e.identityKind, hour, hoursOf(b)))
			}
		}
		if e.decision() && !e.allowed {
			a.judgeDenies(e, b, learned, alert)
		}
		note(e, b, schema.FeatureEvents, "")
		note(e, b, schema.FeatureHour, strconv.Itoa(hour))
		if e.region != "" {
			note(e, b, schema.FeatureRegion, e.region)
		}
		if e.network != "" {
			note(e, b, schema.FeatureNetwork, e.network)
		}
		if e.client != "" {
			note(e, b, schema.FeatureClient, e.client)
		}
		if e.decision() {
			if e.allowed {
				note(e, b, schema.FeaturePermission, e.permission)
			} else {
				note(e, b, schema.FeatureDenies, "")
			}
			note(e, b, schema.FeatureResource, resourcePrefix(e.resource))
		}
	}
	features := make([]schema.Feature, 0, len(order))
	for _, k := range order {
		features = append(features, *add[k])
	}
	return alerts, features
}

// judgeDenies counts a denied decision in its identity's current window and raises a
// burst when the window holds at least DenyBurstMin denies and more than
// DenyBurstFactor times the identity's usual denies per window (its baseline's
// denies spread over the time the baseline spans, at least one window).
func (a *analytics) judgeDenies(e accessEvent, b *baseline, learned bool, alert func(accessEvent, string, string, string)) {
	k := burstKey{e.tenant.TenantID, e.identity}
	start := e.at.Truncate(a.cfg.DenyWindow)
	w := a.bursts[k]
	if w == nil || !w.start.Equal(start) {
		if w != nil && w.start.After(start) {
			return // an event late for a window already closed
		}
		w = &burstWindow{start: start}
		a.bursts[k] = w
	}
	w.denies++
	if w.alerted || !learned || w.denies < a.cfg.DenyBurstMin {
		return
	}
	events := b.values[schema.FeatureEvents][""]
	span := max(events.Last.Sub(events.First), a.cfg.DenyWindow)
	usual := float64(b.count(schema.FeatureDenies, "")) * float64(a.cfg.DenyWindow) / float64(span)
	if float64(w.denies) <= a.cfg.DenyBurstFactor*usual {
		return
	}
	w.alerted = true
	alert(e, AlertDenyBurst, start.UTC().Format(time.RFC3339), fmt.Sprintf("%d denies within %s from %s (usually %.1f per %s)",
		w.denies, a.cfg.DenyWindow, start.UTC().Format(time.RFC3339), usual, a.cfg.DenyWindow))
}

func hoursOf(b *baseline) string {
	var hs []int
	for v := range b.values[schema.FeatureHour] {
		if h, err := strconv.Atoi(v); err == nil {
			hs = append(hs, h)
		}
	}
	slices.Sort(hs)
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("%02d", h)
	}
	return strings.Join(parts, ",") + " UTC"
}

// travel checks each session of the batch against where it was last used (by any
// node): a move between two regions faster than TravelKmh is impossible travel.
// Regions without coordinates are never judged.
func (a *analytics) travel(ctx context.Context, sc schema.Scope, evs []accessEvent) ([]schema.Alert, error) {
	type use struct {
		region, identity string
		at               time.Time
	}
	sessions := map[string][]use{}
	var order []string
	for _, e := range evs {
		if e.session == "" || e.region == "" {
			continue
		}
		us := sessions[e.session]
		if us == nil {
			order = append(order, e.session)
		}
		if n := len(us); n > 0 && us[n-1].region == e.region {
			us[n-1].at = e.at // the latest use in the same region
			sessions[e.session] = us
			continue
		}
		if len(us) < 16 {
			sessions[e.session] = append(us, use{e.region, e.identity, e.at})
		}
	}
	var out []schema.Alert
	for _, s := range order {
		us := sessions[s]
		last := us[len(us)-1]
		prev, ok, err := a.store.SwapSessionUse(ctx, sc, schema.SessionUse{SessionID: s, Region: last.region, At: last.at})
		if err != nil {
			return nil, fmt.Errorf("session use: %w", err)
		}
		if ok {
			us = append(us, use{prev.Region, us[0].identity, prev.At})
			slices.SortStableFunc(us, func(x, y use) int { return x.at.Compare(y.at) })
		}
		for i := 1; i < len(us); i++ {
			from, to := us[i-1], us[i]
			if from.region == to.region {
				continue
			}
			km, ok := a.distance(from.region, to.region)
			if !ok {
				continue
			}
			took := to.at.Sub(from.at).Abs()
			need := time.Duration(km / a.cfg.TravelKmh * float64(time.Hour))
			if took < need {
				// The value names the pair, whichever way: a session bouncing between
				// two regions is one alert per suppression window.
				pair := []string{from.region, to.region}
				slices.Sort(pair)
				out = append(out, schema.Alert{IdentityID: to.identity, Kind: AlertImpossibleTravel, Value: pair[0] + "↔" + pair[1],
					Reason: fmt.Sprintf("session %s used in %s then %s %s later; %.0f km need at least %s at %.0f km/h", s, from.region, to.region,
						took.Round(time.Second), km, need.Round(time.Minute), a.cfg.TravelKmh)})
			}
		}
	}
	return out, nil
}

// distance is the great-circle distance between two regions in km.
func (a *analytics) distance(r1, r2 string) (float64, bool) {
	p, ok1 := a.cfg.Regions[r1]
	q, ok2 := a.cfg.Regions[r2]
	if !ok1 || !ok2 {
		return 0, false
	}
	const earthKm = 6371
	rad := math.Pi / 180
	dLat, dLon := (q.Lat-p.Lat)*rad, (q.Lon-p.Lon)*rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(p.Lat*rad)*math.Cos(q.Lat*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthKm * math.Asin(math.Min(1, math.Sqrt(h))), true
}

// ParseRegionCoordinates reads region coordinates for impossible travel from text
// like "us-east=38.9,-77.0;eu-west=53.3,-6.3" (serve's --analytics-regions): at most
// 200 regions, each a region name, latitude within ±90 and longitude within ±180.
func ParseRegionCoordinates(s string) (map[string]Coordinates, error) {
	out := map[string]Coordinates{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for item := range strings.SplitSeq(s, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, coords, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("region coordinates %q: want name=latitude,longitude", item)
		}
		if err := schema.CheckRegionName(name); err != nil {
			return nil, fmt.Errorf("region coordinates %q: %w", item, err)
		}
		lat, lon, ok := strings.Cut(coords, ",")
		if !ok {
			return nil, fmt.Errorf("region coordinates %q: want name=latitude,longitude", item)
		}
		var p Coordinates
		var err1, err2 error
		p.Lat, err1 = strconv.ParseFloat(strings.TrimSpace(lat), 64)
		p.Lon, err2 = strconv.ParseFloat(strings.TrimSpace(lon), 64)
		if err1 != nil || err2 != nil || math.IsNaN(p.Lat) || math.IsNaN(p.Lon) || p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
			return nil, fmt.Errorf("region coordinates %q: latitude within ±90 and longitude within ±180, in degrees", item)
		}
		if len(out) >= 200 {
			return nil, errors.New("region coordinates: at most 200 regions")
		}
		out[name] = p
	}
	return out, nil
}
