package region

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/procfs"
	"golang.org/x/time/rate"

	"github.com/keyplane/keyplane/schema"
)

// RateLimit is a token bucket: PerSecond requests a second on average, bursts of up to
// Burst. The zero value means "the default for this limit"; a negative PerSecond means
// no limit. As a flag value it reads "RATE" or "RATE:BURST" (RATE per second, BURST
// twice RATE when omitted) or "off".
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// Off reports whether the limit is disabled.
func (r RateLimit) Off() bool { return r.PerSecond < 0 }

func (r RateLimit) String() string {
	if r.Off() {
		return "off"
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + ":" + strconv.Itoa(r.Burst)
}

// Set parses "RATE", "RATE:BURST" or "off" (flag.Value).
func (r *RateLimit) Set(s string) error {
	if s == "off" {
		*r = RateLimit{PerSecond: -1}
		return nil
	}
	rs, bs, hasBurst := strings.Cut(s, ":")
	v, err := strconv.ParseFloat(rs, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("rate %q: want RATE or RATE:BURST with RATE > 0 per second, or off", s)
	}
	b := int(math.Ceil(2 * v))
	if hasBurst {
		if b, err = strconv.Atoi(bs); err != nil || b < 1 {
			return fmt.Errorf("rate %q: burst must be a whole number of at least 1", s)
		}
	}
	*r = RateLimit{PerSecond: v, Burst: b}
	return nil
}

// orDefault is r, or def when r is the zero value.
func (r RateLimit) orDefault(def RateLimit) RateLimit {
	if r == (RateLimit{}) {
		return def
	}
	if !r.Off() && r.Burst < 1 {
		r.Burst = max(1, int(math.Ceil(r.PerSecond)))
	}
	return r
}

// RateLimits are the per-node request-rate limits, each per source IP and per tenant. A
// limit is counted where the request is served: for a forwarded request, on the home
// node, by the client address the forwarding hop vouched for (docs/decisions/0017).
//
// DecisionsPerTenant, TokenPerTenant and WritesPerTenant are the node's defaults of the
// per-tenant class limits (tenantlimits.go): a tenant's own limits
// (AdminService.SetTenantLimits) replace them class by class.
type RateLimits struct {
	LoginPerIP, LoginPerTenant RateLimit // AuthService.Login
	// TokenPerIP: the OAuth token endpoint, ExchangeAPIKey, Refresh and the sign-in
	// pages, per source address. TokenPerTenant: the token issuance class's default.
	TokenPerIP, TokenPerTenant           RateLimit
	IntrospectPerIP, IntrospectPerTenant RateLimit // POST /t/{tenant}/oauth2/introspect (and userinfo)
	// DecisionsPerTenant is the decision class's default: ValidateToken, the
	// CheckService calls, introspection and userinfo.
	DecisionsPerTenant RateLimit
	// WritesPerTenant is the write class's default: Admin API and SCIM mutations.
	WritesPerTenant RateLimit
	// MaxKeys bounds the limiters kept per limit (source IPs or tenants); idle ones are
	// evicted first. 0 means 100 000.
	MaxKeys int
}

// DefaultRateLimits returns the defaults: Login 5/s (burst 20) per IP and 100/s (burst
// 200) per tenant; the token endpoint 50/s (burst 100) per IP and 500/s (burst 1000)
// per tenant; introspection 5000/s (burst 10000) per IP and 20000/s (burst 40000) per
// tenant. Introspection is a resource server's hot path, often from one address: its
// defaults sit above what one node serves (about 3500/s on the reference machine, see
// bench/results), so that they stop floods, not busy resource servers.
//
// The class defaults: decisions 2000/s (burst 4000) and writes 200/s (burst 1000) per
// tenant per node. One tenant may then take about two thirds of a reference node's
// decisions (about 3000 checks/s, bench/results) but not all of them, and about half
// of the serializable write transactions it commits a second, with room for a bulk
// import's first thousand; a tenant that needs more gets limits of its own.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		LoginPerIP: RateLimit{5, 20}, LoginPerTenant: RateLimit{100, 200},
		TokenPerIP: RateLimit{50, 100}, TokenPerTenant: RateLimit{500, 1000},
		IntrospectPerIP: RateLimit{5000, 10_000}, IntrospectPerTenant: RateLimit{20_000, 40_000},
		DecisionsPerTenant: RateLimit{2000, 4000}, WritesPerTenant: RateLimit{200, 1000},
		MaxKeys: 100_000,
	}
}

// withDefaults fills zero fields from DefaultRateLimits.
func (l RateLimits) withDefaults() RateLimits {
	d := DefaultRateLimits()
	l.LoginPerIP, l.LoginPerTenant = l.LoginPerIP.orDefault(d.LoginPerIP), l.LoginPerTenant.orDefault(d.LoginPerTenant)
	l.TokenPerIP, l.TokenPerTenant = l.TokenPerIP.orDefault(d.TokenPerIP), l.TokenPerTenant.orDefault(d.TokenPerTenant)
	l.IntrospectPerIP, l.IntrospectPerTenant = l.IntrospectPerIP.orDefault(d.IntrospectPerIP), l.IntrospectPerTenant.orDefault(d.IntrospectPerTenant)
	l.DecisionsPerTenant, l.WritesPerTenant = l.DecisionsPerTenant.orDefault(d.DecisionsPerTenant), l.WritesPerTenant.orDefault(d.WritesPerTenant)
	if l.MaxKeys <= 0 {
		l.MaxKeys = d.MaxKeys
	}
	return l
}

// keyedLimiter is one token bucket per key (a source IP or a tenant), at most max
// of them: idle buckets (full again) are dropped first, then arbitrary ones, so memory
// stays bounded whatever the number of keys an attacker uses. Safe for concurrent use.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	off   bool
	max   int
	// idle is how long a bucket takes to refill from empty: after that, dropping it
	// loses nothing.
	idle time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
	idle time.Duration // allowWith's buckets: their own refill time (0: the limiter's)
}

// newTenantKeyedLimiter is a keyedLimiter whose rate each call gives (allowWith): the
// per-tenant class limits, where every tenant may have its own.
func newTenantKeyedLimiter(maxKeys int) *keyedLimiter {
	return &keyedLimiter{max: maxKeys, buckets: map[string]*bucket{}}
}

// allowWith is allow at rate r (never Off), which may differ per key (the per-tenant
// class limits): a bucket whose rate changed since its last call takes the new one
// from now, keeping its tokens.
func (k *keyedLimiter) allowWith(key string, now time.Time, r RateLimit) (bool, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	lim, burst := rate.Limit(r.PerSecond), r.Burst
	if b == nil {
		if len(k.buckets) >= k.max {
			k.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(lim, burst)}
		k.buckets[key] = b
	} else if b.lim.Limit() != lim || b.lim.Burst() != burst {
		b.lim.SetLimitAt(now, lim)
		b.lim.SetBurstAt(now, burst)
	}
	b.idle = time.Duration(float64(burst) / r.PerSecond * float64(time.Second))
	b.last = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// emptyWith reports, without taking anything, whether key's bucket (at rate r) has no
// token left at now, and how long until it has one. A key without a bucket is full.
func (k *keyedLimiter) emptyWith(key string, now time.Time, r RateLimit) (bool, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key]
	if b == nil || b.lim.Limit() != rate.Limit(r.PerSecond) || b.lim.Burst() != r.Burst {
		return false, 0 // no bucket yet, or its limit changed: allowWith decides
	}
	if tokens := b.lim.TokensAt(now); tokens < 1 {
		return true, time.Duration((1 - tokens) / r.PerSecond * float64(time.Second))
	}
	return false, 0
}

func newKeyedLimiter(r RateLimit, maxKeys int) *keyedLimiter {
	if r.Off() {
		return &keyedLimiter{off: true}
	}
	return &keyedLimiter{limit: rate.Limit(r.PerSecond), burst: r.Burst, max: maxKeys,
		idle: time.Duration(float64(r.Burst) / r.PerSecond * float64(time.Second)), buckets: map[string]*bucket{}}
}

// allow takes a token for key at now; when none is left it returns how long until one
// is, and takes nothing.
func (k *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if k.off {
		return true, 0
	}
	return k.allowWith(key, now, RateLimit{PerSecond: float64(k.limit), Burst: k.burst})
}

// evict drops the idle buckets, or, when none is idle, a tenth of them (arbitrary
// ones: map order). Called with mu held.
func (k *keyedLimiter) evict(now time.Time) {
	for key, b := range k.buckets {
		if now.Sub(b.last) >= cmp.Or(b.idle, k.idle) {
			delete(k.buckets, key)
		}
	}
	for key := range k.buckets {
		if len(k.buckets) < k.max-k.max/10 {
			break
		}
		delete(k.buckets, key)
	}
}

// size is the number of buckets kept (for tests and metrics).
func (k *keyedLimiter) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}

// pairLimiter limits one endpoint per source IP and per tenant: by its own per-tenant
// limit (perTen), by the tenant's class limit (class, through tenants; set by
// attachTenantLimits), or both. The class limit is only looked at here, before the
// caller is authenticated: a call is refused once the tenant's bucket is empty, but
// only calls that authenticate spend it (introspection, userinfo), or only those
// that mint a token (the token class), so that nobody spends a tenant's budget by
// naming it.
type pairLimiter struct {
	name          string // the endpoint, for the metric and the error
	perIP, perTen *keyedLimiter
	class         limitClass
	tenants       *tenantLimiter
}

func newPairLimiter(name string, perIP, perTenant RateLimit, maxKeys int) *pairLimiter {
	return &pairLimiter{name: name, perIP: newKeyedLimiter(perIP, maxKeys), perTen: newKeyedLimiter(perTenant, maxKeys)}
}

// rateLimited is a request refused by a rate limit; connectError and the OAuth
// handler turn it into resource_exhausted / HTTP 429 with Retry-After.
type rateLimited struct {
	what       string
	retryAfter time.Duration
}

func (e *rateLimited) Error() string {
	return fmt.Sprintf("%s: try again in %s", e.what, retryAfterSeconds(e.retryAfter)+"s")
}

// retryAfterSeconds is d as a Retry-After value: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// exhausted is a resource_exhausted Connect error carrying Retry-After, built per call.
func exhausted(msg string, retryAfter time.Duration) *connect.Error {
	ce := connect.NewError(connect.CodeResourceExhausted, errors.New(msg))
	ce.Meta().Set("Retry-After", retryAfterSeconds(retryAfter))
	return ce
}

// allow takes a token from the source IP's bucket, then from the endpoint's own
// per-tenant one, and refuses the call if the tenant's class bucket is empty (taking
// nothing from it). The IP is checked first so that a flood from one address does
// not spend its tenant's budget.
//
// An unknown source ("": a forward whose client address could not be trusted, which
// only a cluster without peer certificates produces) is limited per tenant only: one
// shared "" bucket would let a flood of such forwards starve every other one.
func (p *pairLimiter) allow(ctx context.Context, m *metrics, ip, tenant string, now time.Time) error {
	if ip != "" {
		if ok, d := p.perIP.allow(ip, now); !ok {
			m.rateLimited.WithLabelValues(p.name, "ip").Inc()
			return &rateLimited{what: "too many " + p.name + " requests from this address", retryAfter: d}
		}
	}
	if !schema.ValidTenantID(tenant) {
		// No such tenant can exist, and the call will be refused as such: keep no
		// bucket for it (attacker-chosen keys must not fill the map or evict real
		// tenants' buckets).
		return nil
	}
	if p.perTen != nil {
		if ok, d := p.perTen.allow(tenant, now); !ok {
			m.rateLimited.WithLabelValues(p.name, "tenant").Inc()
			return &rateLimited{what: "too many " + p.name + " requests for this tenant", retryAfter: d}
		}
	}
	if p.tenants != nil {
		return p.tenants.spent(ctx, p.class, tenant, now)
	}
	return nil
}

// sourceIP is the address rate limits and login throttling count a request against:
// what checks see as request.ip (peerIP of the Connect peer address or RemoteAddr,
// which the router sets to the client address a verified hop carries). An IPv6
// address counts as its /64, which one host usually holds whole.
func sourceIP(addr string) string {
	ip := peerIP(addr)
	if ip == "" { // a zoned link-local client (fe80::1%eth0) is still a client: count it, without its zone
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if a, err := netip.ParseAddr(host); err == nil && a.Zone() != "" {
				ip = a.WithZone("").String()
			}
		}
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// limitHTTP guards an OAuth endpoint with p: past a limit it answers 429 with
// Retry-After and an RFC 6749-style JSON error, without running h.
func (n *Node) limitHTTP(p *pairLimiter, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := p.allow(r.Context(), n.metrics, sourceIP(r.RemoteAddr), r.PathValue("tenant"), n.now())
		if errors.As(err, new(*rateLimited)) {
			w.Header().Set("Cache-Control", "no-store")
			writeOAuthError(w, n.toOAuthError(r.Context(), err))
			return
		}
		h(w, r)
	}
}

// Password hashing bounds. Each argon2id hash or verification holds about 19 MiB for
// a few tens of milliseconds; hashGate bounds how many run at once on a node.
const (
	// hashMemory is what one hash is budgeted at: argon2id's 19 MiB and the rest.
	hashMemory = 24 << 20
	// MaxAutoHashConcurrency caps the concurrency sized from memory.
	MaxAutoHashConcurrency = 16
	// DefaultHashWait is how long a login waits for a hashing slot before it is refused.
	DefaultHashWait = 500 * time.Millisecond
)

// AutoHashConcurrency is the number of concurrent password hashes a node allows when
// not configured: an eighth of its memory limit (the smallest of the cgroup limit,
// GOMEMLIMIT and physical memory) divided by 24 MiB, from 1 to
// MaxAutoHashConcurrency.
func AutoHashConcurrency() int {
	limit := memoryLimit()
	if limit == 0 {
		return 2
	}
	return int(min(MaxAutoHashConcurrency, max(1, limit/8/hashMemory)))
}

// memoryLimit is the smallest of the cgroup memory limit (v2, then v1), GOMEMLIMIT and
// physical memory, in bytes; 0 when none can be read.
func memoryLimit() uint64 {
	var limit uint64
	lower := func(v uint64) {
		if v > 0 && (limit == 0 || v < limit) {
			limit = v
		}
	}
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(f); err == nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v < 1<<60 {
				lower(v)
			}
		}
	}
	if v := debug.SetMemoryLimit(-1); v > 0 && v < math.MaxInt64 {
		lower(uint64(v))
	}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotalBytes != nil {
			lower(*mi.MemTotalBytes)
		}
	}
	return limit
}

// hashGate is a semaphore bounding concurrent password hashing on a node. Safe for
// concurrent use.
type hashGate struct {
	slots chan struct{}
	wait  time.Duration
	m     *metrics
}

func newHashGate(n int, wait time.Duration, m *metrics) *hashGate {
	m.hashSlots.Set(float64(n))
	return &hashGate{slots: make(chan struct{}, n), wait: wait, m: m}
}

// acquire takes a slot, waiting at most the gate's wait; it returns the release
// function, or resource_exhausted with Retry-After when no slot freed up in time.
func (g *hashGate) acquire(ctx context.Context) (func(), error) {
	release := func() {
		<-g.slots
		g.m.hashInUse.Dec()
	}
	select {
	case g.slots <- struct{}{}:
		g.m.hashInUse.Inc()
		return release, nil
	default:
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		g.m.hashInUse.Inc()
		return release, nil
	case <-t.C:
		g.m.hashBusy.Inc()
		return nil, exhausted("login: the node is busy checking passwords; retry shortly", time.Second)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
