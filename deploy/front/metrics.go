package front

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the front's Prometheus series.
type metrics struct {
	attempts   *prometheus.CounterVec // region, node, outcome
	unanswered *prometheus.CounterVec // reason
	retries    prometheus.Counter
	up         *prometheus.GaugeVec // region, node
	healthy    *prometheus.GaugeVec // region
}

func newMetrics(reg prometheus.Registerer, nodes []*node) (*metrics, error) {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyplane_front_requests_total",
			Help: "Requests the front sent to a node, by the chosen node's region and name and the outcome: the response's status class (2xx…5xx) or error (no response: connection refused, reset or timed out)."},
			[]string{"region", "node", "outcome"}),
		unanswered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyplane_front_unanswered_total",
			Help: "Requests the front answered itself because no node did: no_healthy_node (503), failed_after_send (a request not safe to repeat failed once sent: 502, outcome unknown), attempts_exhausted (502)."},
			[]string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyplane_front_retries_total",
			Help: "Requests sent to another node after a transport failure (never sent, or safe to repeat)."}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyplane_front_node_up",
			Help: "1 when the node passed its last /readyz check and has not failed a request since, else 0."}, []string{"region", "node"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyplane_front_healthy_nodes",
			Help: "Nodes of the region the front currently sends requests to."}, []string{"region"}),
	}
	m.retries.Add(0)
	for _, reason := range []string{"no_healthy_node", "failed_after_send", "attempts_exhausted"} {
		m.unanswered.WithLabelValues(reason)
	}
	m.setHealth(nodes)
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.attempts, m.unanswered, m.retries, m.up, m.healthy} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}

func (m *metrics) attempt(n *node, outcome string) {
	m.attempts.WithLabelValues(n.Region, n.Name, outcome).Inc()
}

func (m *metrics) setHealth(nodes []*node) {
	count := map[string]float64{}
	for _, n := range nodes {
		up := 0.0
		if n.healthy.Load() {
			up = 1
		}
		count[n.Region] += up
		m.up.WithLabelValues(n.Region, n.Name).Set(up)
	}
	for r, c := range count {
		m.healthy.WithLabelValues(r).Set(c)
	}
}
