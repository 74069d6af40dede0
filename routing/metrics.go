package routing

import "github.com/prometheus/client_golang/prometheus"

type routerMetrics struct {
	routes         *prometheus.CounterVec
	route          map[string]prometheus.Counter // the routes' counters, resolved once (every request counts one)
	forwardSeconds *prometheus.HistogramVec
	failures       *prometheus.CounterVec
	hedges         *prometheus.CounterVec
}

func newRouterMetrics(reg prometheus.Registerer, labels prometheus.Labels) (*routerMetrics, error) {
	m := &routerMetrics{
		routes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyplane_route_requests_total",
			Help: "Requests by route: local, forwarded, degraded (home region unreachable), failed (forward failed after sending a non-idempotent request), refused (names two tenants, or none when it needs one)."},
			[]string{"route"}),
		forwardSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyplane_forward_seconds",
			Help: "Time from sending a forwarded request to the home node's response headers, by home region.", ConstLabels: labels,
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .075, .1, .15, .2, .3, .5, 1, 2.5}},
			[]string{"home_region"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyplane_forward_failures_total",
			Help: "Forward attempts that failed at transport level, by home region.", ConstLabels: labels}, []string{"home_region"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyplane_forward_hedges_total",
			Help: "Idempotent forwards also sent to a second home node because the first was slow.", ConstLabels: labels}, []string{"home_region"}),
	}
	for _, c := range []prometheus.Collector{m.routes, m.forwardSeconds, m.failures, m.hedges} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.route = map[string]prometheus.Counter{}
	for _, r := range []string{RouteLocal, RouteForwarded, RouteDegraded, routeFailed, routeRefused, routeResidency, routeUnplaced} {
		m.route[r] = m.routes.WithLabelValues(r)
	}
	return m, nil
}
