package region

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/tracing"
)

// metrics are the node's Prometheus collectors, registered on the registry the caller
// passes to New (never the global one, so several nodes can share a process).
type metrics struct {
	traced               bool // Config.TracerProvider: latencies carry exemplars
	rpcDuration          *prometheus.HistogramVec
	authFailures         prometheus.Counter
	breakGlass           *prometheus.CounterVec
	stepUpRequired       *prometheus.CounterVec
	ready                prometheus.Gauge
	credentialFailures   *prometheus.CounterVec
	validations          *prometheus.CounterVec
	refreshReuse         prometheus.Counter
	federationExchanges  *prometheus.CounterVec
	checks               *prometheus.CounterVec
	policyReloads        prometheus.Counter
	decisionReads        *prometheus.CounterVec
	decisionReadKeys     prometheus.Histogram
	decisionsWritten     prometheus.Counter
	decisionBackpressure prometheus.Counter
	decisionsPruned      prometheus.Counter
	loginAttempts        *prometheus.CounterVec
	rateLimited          *prometheus.CounterVec
	hashSlots            prometheus.Gauge
	hashInUse            prometheus.Gauge
	hashBusy             prometheus.Counter
	deprovision          *prometheus.HistogramVec
	idempotent           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, cfg Config) (*metrics, error) {
	labels := prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID}
	m := &metrics{
		traced: cfg.TracerProvider != nil,
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keyplane", Name: "rpc_duration_seconds",
			Help:        "Latency of Connect/gRPC calls handled by this node, by procedure and code.",
			ConstLabels: labels,
			Buckets:     []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"procedure", "code"}),
		breakGlass: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "break_glass_calls_total",
			Help: "Tenant-scoped calls made with the operator secret (break-glass), allowed or refused, by procedure and outcome.", ConstLabels: labels,
		}, []string{"procedure", "outcome"}),
		stepUpRequired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "step_up_required_total",
			Help: "Sensitive calls by humans refused for want of a recent second factor, by procedure.", ConstLabels: labels,
		}, []string{"procedure"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "operator_auth_failures_total",
			Help: "Admin calls refused for a wrong operator secret.", ConstLabels: labels,
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "keyplane", Name: "ready",
			Help: "1 when the node's last readiness probe reached the database.", ConstLabels: labels,
		}),
		credentialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "credential_failures_total",
			Help: "Presented API keys and client secrets that did not authenticate, by kind.", ConstLabels: labels,
		}, []string{"kind"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "token_validations_total",
			Help: "Token validations and introspections by result: active or the inactive reason.", ConstLabels: labels,
		}, []string{"result"}),
		refreshReuse: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "refresh_token_reuse_total",
			Help: "Refresh tokens presented after rotation (their sessions were revoked).", ConstLabels: labels,
		}),
		federationExchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "federation_exchanges_total",
			Help: "Token exchanges of external tokens (workload identity federation) by result: ok or the refusing rule.", ConstLabels: labels,
		}, []string{"result"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "checks_total",
			Help: "Permission decisions by result (allowed, denied).", ConstLabels: labels,
		}, []string{"result"}),
		idempotent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "idempotent_calls_total",
			Help: "Calls made with an Idempotency-Key, by result: recorded (ran and recorded), replayed (answered from the record), mismatch (the key was used for another request).", ConstLabels: labels,
		}, []string{"result"}),
		decisionReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "decision_reads_total",
			Help: "Decision reads (one statement serving the validations, introspections and fresh checks that share it), by result (ok or error).", ConstLabels: labels,
		}, []string{"result"}),
		decisionReadKeys: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "keyplane", Name: "decision_read_keys",
			Help:        "Keys (identities and sessions of the requests sharing it) per decision read.",
			ConstLabels: labels, Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		policyReloads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "policy_reloads_total",
			Help: "Tenant policy snapshots loaded because the cached one was stale or missing.", ConstLabels: labels,
		}),
		decisionsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "decisions_logged_total",
			Help: "Decisions written to the decision log.", ConstLabels: labels,
		}),
		decisionBackpressure: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "decision_log_backpressure_total",
			Help: "Checks that waited because the decision log buffer was full.", ConstLabels: labels,
		}),
		decisionsPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "decisions_pruned_total",
			Help: "Decisions past their tenant's retention that this node's pruner deleted.", ConstLabels: labels,
		}),
		loginAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "login_attempts_total",
			Help: "Password logins by outcome: success, mfa_required, bad_password, bad_second_factor, unknown (no such login), delayed (this source must wait), locked (the login is locked).", ConstLabels: labels,
		}, []string{"result"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "rate_limited_total",
			Help: "Requests refused by a rate limit, by endpoint (login, token, introspection) and key (ip, tenant).", ConstLabels: labels,
		}, []string{"endpoint", "key"}),
		hashSlots: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "keyplane", Name: "password_hash_slots",
			Help: "Password hashes (argon2id, about 19 MiB each) this node runs at once at most.", ConstLabels: labels,
		}),
		hashInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "keyplane", Name: "password_hash_in_use",
			Help: "Password hashes running now.", ConstLabels: labels,
		}),
		hashBusy: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "keyplane", Name: "password_hash_busy_total",
			Help: "Logins refused (resource_exhausted) because no password hashing slot freed up in time.", ConstLabels: labels,
		}),
		deprovision: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "keyplane", Name: "deprovision_seconds",
			Help:        "Offboardings: from the leaver's event (the caller's event_time, else the request's arrival) to the commit after which every credential of the leaver is inactive, by source (api).",
			ConstLabels: labels,
			Buckets:     []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600},
		}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.rpcDuration, m.authFailures, m.breakGlass, m.stepUpRequired, m.ready, m.credentialFailures, m.validations, m.refreshReuse,
		m.checks, m.policyReloads, m.idempotent, m.decisionReads, m.decisionReadKeys, m.decisionsWritten, m.decisionBackpressure, m.decisionsPruned, m.loginAttempts, m.rateLimited, m.hashSlots, m.hashInUse, m.hashBusy,
		m.deprovision, m.federationExchanges} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeRPC(procedure, code string, d time.Duration) {
	m.rpcDuration.WithLabelValues(procedure, code).Observe(d.Seconds())
}

// observeRPCIn is observeRPC for a call whose context is at hand: with tracing on, a
// sampled call's trace id becomes the observation's exemplar.
func (m *metrics) observeRPCIn(ctx context.Context, procedure, code string, d time.Duration) {
	if !m.traced {
		m.observeRPC(procedure, code, d)
		return
	}
	tracing.Observe(ctx, m.rpcDuration.WithLabelValues(procedure, code), d.Seconds())
}

// observeDecisionRead counts one decision read of keys keys.
func (m *metrics) observeDecisionRead(keys int, err error) {
	if err != nil {
		m.decisionReads.WithLabelValues("error").Inc()
		return
	}
	m.decisionReads.WithLabelValues("ok").Inc()
	m.decisionReadKeys.Observe(float64(keys))
}
