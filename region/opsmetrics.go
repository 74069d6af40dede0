package region

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// Operational gauges read at scrape time (docs/operations.md, "Metrics"): the
// database pool and transactions, and, with routing, gossip membership and the peer
// certificate's expiry. deploy/prometheus alerts on them.

// registerStoreMetrics exports the pool's state and the store's transaction counts.
func registerStoreMetrics(reg prometheus.Registerer, labels prometheus.Labels, store *schema.Store) error {
	pool := store.Pool()
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "keyplane", Name: name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "keyplane", Name: name, Help: help, ConstLabels: labels}, f)
	}
	cs := []prometheus.Collector{
		gauge("db_pool_acquired_connections", "Database connections in use.", func() float64 { return float64(pool.Stat().AcquiredConns()) }),
		gauge("db_pool_idle_connections", "Database connections open and idle.", func() float64 { return float64(pool.Stat().IdleConns()) }),
		gauge("db_pool_max_connections", "The pool's size (serve --max-conns).", func() float64 { return float64(pool.Stat().MaxConns()) }),
		counter("db_pool_empty_acquires_total", "Connection acquisitions that had to wait because every connection was in use.",
			func() float64 { return float64(pool.Stat().EmptyAcquireCount()) }),
		counter("db_pool_acquire_wait_seconds_total", "Time spent waiting for a database connection.",
			func() float64 { return pool.Stat().AcquireDuration().Seconds() }),
		counter("db_tx_retries_total", "Write transaction attempts retried (serialization conflicts, lost connections).",
			func() float64 { return float64(store.TxStats().Retries) }),
		counter("db_tx_exhausted_total", "Write transactions that still conflicted after every attempt (answered unavailable).",
			func() float64 { return float64(store.TxStats().Exhausted) }),
		counter("db_tx_ambiguous_total", "Commits whose outcome is unknown (the connection broke during COMMIT; answered unavailable).",
			func() float64 { return float64(store.TxStats().Ambiguous) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// registerRoutingMetrics exports gossip membership by region and readiness, and the
// peer certificate's expiry (when there is one).
func registerRoutingMetrics(reg prometheus.Registerer, labels prometheus.Labels, peers interface{ Members() []routing.Member }, tls *routing.PeerTLS) error {
	if err := reg.Register(&membersCollector{peers: peers, desc: prometheus.NewDesc("keyplane_gossip_members",
		"Nodes this node's gossip lists as alive, by their region and readiness.", []string{"member_region", "ready"}, labels)}); err != nil {
		return err
	}
	if tls == nil {
		return nil
	}
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "keyplane", Name: "peer_cert_expiry_timestamp_seconds",
		Help: "When this node's peer (node-to-node mutual TLS) certificate expires, Unix time.", ConstLabels: labels},
		func() float64 { return float64(tls.NotAfter().Unix()) }))
}

type membersCollector struct {
	peers interface{ Members() []routing.Member }
	desc  *prometheus.Desc
}

func (c *membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *membersCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		region string
		ready  bool
	}
	n := map[key]int{}
	for _, m := range c.peers.Members() {
		n[key{m.Region, m.Ready}]++
	}
	for k, v := range n {
		ready := "false"
		if k.ready {
			ready = "true"
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), k.region, ready)
	}
}

// signingKeyCollector exports when this region's current signing key of each
// algorithm began signing, from the node's key snapshot (no database read at scrape
// time; no series before the first load). Rotation is `keyplane keys rotate`; the
// KeyplaneSigningKeyRotationOverdue alert fires on the key's age.
type signingKeyCollector struct {
	keys *keyring
	desc *prometheus.Desc
}

func newSigningKeyCollector(keys *keyring, labels prometheus.Labels) *signingKeyCollector {
	return &signingKeyCollector{keys: keys, desc: prometheus.NewDesc("keyplane_signing_key_active_since_timestamp_seconds",
		"When this region's current token-signing key of each algorithm began signing, Unix time (its age is the time since the last rotation).",
		[]string{"alg"}, labels)}
}

func (c *signingKeyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *signingKeyCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.keys.cur.Load()
	if cur == nil {
		return
	}
	for alg, from := range cur.signsFrom {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(from.Unix()), string(alg))
	}
}
