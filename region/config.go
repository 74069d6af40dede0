package region

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
)

// Secret is a string that never prints: fmt and slog show "[redacted]".
type Secret string

func (Secret) String() string                 { return "[redacted]" }
func (Secret) GoString() string               { return "[redacted]" }
func (Secret) LogValue() slog.Value           { return slog.StringValue("[redacted]") }
func (s Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Config configures a region node.
type Config struct {
	// Region is the region this node serves; it must be one of the database's regions.
	Region string
	// NodeID names the node in logs, metrics, audit events and response headers.
	NodeID string
	// OperatorSecret authenticates admin calls (Authorization: Bearer <secret>).
	// Empty disables the admin API: every admin call is refused.
	OperatorSecret Secret
	// NoBreakGlass refuses the operator secret on tenant-scoped calls (issue 13): with
	// it, tenant work needs a tenant identity's access token and the operator secret is
	// for cluster work only (tenants, regions, rehoming, signing keys). By default the
	// operator secret is break-glass there: allowed, counted in
	// keyplane_break_glass_calls_total and marked in the call's audit event.
	NoBreakGlass bool
	// KEK is the key-encryption key that seals signing keys at rest. Without it the node
	// cannot issue or validate tokens (those calls fail with FailedPrecondition).
	KEK *kek.KEK
	// IssuerBase is the URL prefix of every tenant's issuer ({IssuerBase}/t/{tenant}),
	// required. It must be the same on every node of a deployment: tokens carry it in
	// iss.
	IssuerBase string
	// APIAudience is an audience keyplane's own APIs (admin, check, elevation,
	// self-service) accept in a bearer token besides the tenant's issuer; empty means
	// the issuer only. Tokens minted for any other audience are refused there.
	APIAudience string
	// LastUsedFlush is how often credential last-use times are written; 0 means 30s.
	LastUsedFlush time.Duration
	// KeyRefresh is how often the signing key snapshot is reloaded; 0 means 30s.
	KeyRefresh time.Duration
	// PolicyStaleness bounds how old a cached policy a minimize_latency check may use;
	// 0 means 5s.
	PolicyStaleness time.Duration
	// OperatorListener moves the operator endpoints (/members, /metrics,
	// /debug/pprof) off the API port: ServeOperator then serves them, with /healthz and
	// /readyz, on a listener of their own that only operators and Prometheus reach.
	// Without it they stay on the API port behind the operator secret (/metrics too,
	// unless MetricsPublic).
	OperatorListener bool
	// MetricsPublic serves /metrics on the API port without the operator secret, when
	// there is no operator listener (a Prometheus that cannot send a bearer token).
	MetricsPublic bool
	// GeoIPDB is the path of an IP → country database in MaxMind DB (MMDB) format
	// (GeoLite2/GeoIP2 Country or City, or any with country.iso_code records) that
	// gives conditions request.country; it is re-read when the file changes. Empty
	// means none: a condition reading request.country then fails closed.
	GeoIPDB string
	// Limits bound the API server's timeouts, header size and connections; zero
	// fields take DefaultLimits' values.
	Limits Limits
	// Login configures login throttling, password hashing bounds, rate limits and
	// step-up; its zero value means the defaults.
	Login LoginConfig
	// Now is the clock that token lifetimes, lockouts, expiries and grant times are
	// judged by; nil means time.Now. Tests set it to move time without sleeping.
	Now func() time.Time
	// DecisionPruneEvery is how often the node deletes decisions past their tenant's
	// retention (tenants homed in its region; each round is bounded, see
	// decisionPruner); 0 means 5 minutes, negative turns the pruner off.
	DecisionPruneEvery time.Duration
	// GovernanceFiguresEvery is how often the node computes the governance figures of
	// the tenants homed in its region (gauges and the daily snapshot, see
	// governanceFigures); 0 means 15 minutes, negative turns it off.
	GovernanceFiguresEvery time.Duration
	// GovernanceSweepEvery is how often the node tries to sweep the tenants homed in
	// its region (identities and credentials past their expiry, NHIs whose owner is
	// gone, rotation deadlines; docs/governance.md): one node per region sweeps at a
	// time, the one holding the region's lease row, which lives three intervals. 0
	// means DefaultSweepEvery (1 minute), negative turns the sweeper off.
	GovernanceSweepEvery time.Duration
	// ReviewEvery is how often the node sends access review reminders and closes
	// campaigns past their deadline (tenants homed in its region; campaign_loop.go);
	// 0 means a minute, negative turns the loop off.
	ReviewEvery time.Duration
	// AccessLog logs every successful call at info (one line per call: procedure,
	// code, latency, peer). Without it successful calls are logged at debug; failed
	// calls are logged at info either way.
	AccessLog bool
	// DecisionReads tunes how the reads of concurrent decisions are shared; its zero
	// value means the defaults.
	DecisionReads DecisionReadConfig
	// Analytics configures access baselines, anomaly alerts, their webhooks and policy
	// drift detection (docs/analytics.md); its zero value means the defaults.
	Analytics AnalyticsConfig
	// TracerProvider, when set, traces every call (package tracing): a server span per
	// request on the API and peer listeners, an RPC span per Connect call, a client
	// span per forward, which carries its W3C traceparent to the home node; the
	// latency histograms get trace ids as exemplars. nil, the default, installs no
	// tracing at all. The store's pool traces SQL separately (schema.PoolConfig.Tracer).
	TracerProvider oteltrace.TracerProvider
}

// DecisionReadConfig tunes the coalesced decision reads (docs/decisions/
// 0014-coalesced-decision-reads.md): validations, introspections and fresh checks that
// arrive while reads are in flight share the next read, one statement for all of them.
type DecisionReadConfig struct {
	// InFlight is how many decision reads a node runs at once per region; requests
	// arriving while that many are in flight wait for the next one. 0 means 4.
	InFlight int
	// MaxKeys bounds the keys (a request reads one or two) of one read; 0 means 128.
	MaxKeys int
}

func (c DecisionReadConfig) withDefaults() DecisionReadConfig {
	if c.InFlight <= 0 {
		c.InFlight = 4
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = 128
	}
	return c
}

// decisionReadTimeout bounds one shared decision read, whatever its waiters' own
// deadlines (each stops waiting at its own).
const decisionReadTimeout = 10 * time.Second

// DefaultConfig returns a configuration with a random node id and no operator secret.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return Config{NodeID: host + "-" + strings.ToLower(rand.Text()[:6]), Limits: DefaultLimits()}
}

var nodeIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// MinOperatorSecretLen is the shortest operator secret a node accepts.
const MinOperatorSecretLen = 16

// Validate reports the first invalid field.
func (c Config) Validate() error {
	var errs []error
	if err := schema.CheckRegionName(c.Region); err != nil {
		errs = append(errs, fmt.Errorf("region: %w", err))
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		errs = append(errs, fmt.Errorf("node id: %q must be 1 to 63 characters of a-z, 0-9, '.', '_' and '-'", c.NodeID))
	}
	if c.OperatorSecret != "" && len(c.OperatorSecret) < MinOperatorSecretLen {
		errs = append(errs, fmt.Errorf("operator secret: at least %d characters", MinOperatorSecretLen))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("limits: %w", err))
	}
	if c.DecisionReads.InFlight < 0 || c.DecisionReads.MaxKeys < 0 || c.DecisionReads.MaxKeys > schema.MaxStateKeys {
		errs = append(errs, fmt.Errorf("decision reads: in flight %d and max keys %d must be ≥ 0 (0: the default), max keys at most %d",
			c.DecisionReads.InFlight, c.DecisionReads.MaxKeys, schema.MaxStateKeys))
	}
	if u, err := url.Parse(c.IssuerBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("issuer base: %q must be an http(s) URL without query or fragment", c.IssuerBase))
	}
	if c.APIAudience != "" && !schema.ValidAudience(c.APIAudience) {
		errs = append(errs, fmt.Errorf("api audience: %q must be printable ASCII without spaces, quotes, backslashes or '#'", c.APIAudience))
	}
	if err := c.Login.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Analytics.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
