package region

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// limitClass is a class of requests a tenant's limits count separately
// (docs/decisions/0017-tenant-limits.md).
type limitClass int

const (
	classNone      limitClass = iota // not limited per tenant (reads, cluster calls, revocations)
	classDecisions                   // ValidateToken, CheckService, introspection, userinfo
	classTokens                      // token issuance: token endpoint, ExchangeAPIKey, Refresh, sign-in pages
	classWrites                      // Admin API and SCIM mutations
	numClasses
)

func (c limitClass) String() string {
	return [...]string{"none", "decisions", "tokens", "writes"}[c]
}

// tenantLimiter enforces the per-tenant class limits of one node: a token bucket per
// tenant and class, at the tenant's own rate (schema.TenantLimits, read through the
// node's tenant cache) or the node's default for the class. Safe for concurrent use.
type tenantLimiter struct {
	defaults [numClasses]RateLimit
	buckets  [numClasses]*keyedLimiter
	tenants  *routing.Directory
	// refused counts refusals by class and by whether the tenant's limit was its own
	// ("custom") or the node's ("default"): never by tenant, whose number is unbounded.
	// The log line of each refusal (sampled) names the tenant.
	refused *prometheus.CounterVec
}

func newTenantLimiter(r RateLimits, tenants *routing.Directory, reg prometheus.Registerer, cfg Config) (*tenantLimiter, error) {
	r = r.withDefaults()
	t := &tenantLimiter{tenants: tenants, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keyplane", Name: "tenant_limited_total",
		Help:        "Requests refused by a tenant's class limit (resource_exhausted, HTTP 429), by class (decisions, tokens, writes) and by whether the tenant's limit was its own or the node's default (limits: custom, default).",
		ConstLabels: prometheus.Labels{"region": cfg.Region, "node": cfg.NodeID},
	}, []string{"class", "limits"})}
	t.defaults[classDecisions], t.defaults[classTokens], t.defaults[classWrites] = r.DecisionsPerTenant, r.TokenPerTenant, r.WritesPerTenant
	for c := classDecisions; c < numClasses; c++ {
		t.buckets[c] = newTenantKeyedLimiter(r.MaxKeys)
		for _, l := range []string{"custom", "default"} {
			t.refused.WithLabelValues(c.String(), l) // exported at 0 from the start, so rate() sees the first refusal
		}
	}
	if err := reg.Register(t.refused); err != nil {
		return nil, err
	}
	return t, nil
}

// limitOf is the tenant's limit for class c: its own, or the node's default.
func (t *tenantLimiter) limitOf(c limitClass, l schema.TenantLimits) (RateLimit, bool) {
	var own schema.TenantRate
	switch c {
	case classDecisions:
		own = l.Decisions
	case classTokens:
		own = l.Tokens
	case classWrites:
		own = l.Writes
	}
	switch {
	case own.PerSecond == 0:
		return t.defaults[c], false
	case own.PerSecond < 0:
		return RateLimit{PerSecond: -1}, true
	}
	burst := int(own.Burst)
	if burst == 0 {
		burst = max(1, int(math.Ceil(2*own.PerSecond)))
	}
	return RateLimit{PerSecond: own.PerSecond, Burst: burst}, true
}

// allow takes a token from the tenant's bucket of class c. The tenant row comes from
// the tenant cache (the handler reads it from there too, so a decision pays no extra
// query). A tenant that cannot be read is not limited here: the handler refuses it.
func (t *tenantLimiter) allow(ctx context.Context, c limitClass, tenantID string, now time.Time) error {
	if row, ok := t.cached(ctx, c, tenantID); ok {
		return t.allowTenant(c, row, now)
	}
	return nil
}

// spent reports, taking nothing, whether the tenant's bucket of class c is empty: a
// refusal that costs the tenant nothing (refuseEarly, before authentication).
func (t *tenantLimiter) spent(ctx context.Context, c limitClass, tenantID string, now time.Time) error {
	row, ok := t.cached(ctx, c, tenantID)
	if !ok {
		return nil
	}
	r, own := t.limitOf(c, row.Limits)
	if r.Off() {
		return nil
	}
	if empty, d := t.buckets[c].emptyWith(row.ID, now, r); empty {
		return t.refuse(c, row.ID, r, own, d)
	}
	return nil
}

// cached is the tenant's row from the tenant cache, when class c is limited and the
// tenant can be read.
func (t *tenantLimiter) cached(ctx context.Context, c limitClass, tenantID string) (schema.Tenant, bool) {
	if c == classNone || !schema.ValidTenantID(tenantID) {
		return schema.Tenant{}, false
	}
	row, err := t.tenants.Tenant(ctx, tenantID, 0)
	return row, err == nil
}

func (t *tenantLimiter) refuse(c limitClass, tenantID string, r RateLimit, own bool, retryAfter time.Duration) error {
	which := "default"
	if own {
		which = "custom"
	}
	t.refused.WithLabelValues(c.String(), which).Inc()
	return &rateLimited{retryAfter: retryAfter, what: fmt.Sprintf("tenant %q is over its %s limit on this node (%s/s, burst %d, %s)",
		tenantID, c, strconv.FormatFloat(r.PerSecond, 'g', -1, 64), r.Burst, which)}
}

// spend takes a token from the tenant's bucket of class c for work already done (a
// token minted), and never refuses: calls of the class are refused before any work
// once the bucket is empty (spent). Only callers who got something spend a tenant's
// budget, and the limit holds up to the calls in flight when it runs out.
func (t *tenantLimiter) spend(c limitClass, row schema.Tenant, now time.Time) {
	if r, _ := t.limitOf(c, row.Limits); c != classNone && !r.Off() {
		t.buckets[c].allowWith(row.ID, now, r)
	}
}

// spendTokens counts a token minted for tenant t in its token class.
func (n *Node) spendTokens(t schema.Tenant) { n.limits.spend(classTokens, t, n.now()) }

// allowTenant is allow for a tenant row already read.
func (t *tenantLimiter) allowTenant(c limitClass, row schema.Tenant, now time.Time) error {
	if c == classNone {
		return nil
	}
	r, own := t.limitOf(c, row.Limits)
	if r.Off() {
		return nil
	}
	ok, d := t.buckets[c].allowWith(row.ID, now, r)
	if ok {
		return nil
	}
	return t.refuse(c, row.ID, r, own, d)
}

// connectClasses are the Connect procedures counted per tenant, by class. Every other
// tenant-scoped procedure that is not NO_SIDE_EFFECTS is a write (writeProcedures),
// except the AuthService's: Login has limits of its own, ExchangeAPIKey and Refresh
// are token issuance (refused through the token endpoint's limiter, per source
// address first, and counted by spendTokens when they mint), and revocations and MFA
// enrollment are never refused for a tenant's volume (stopping access must not wait
// behind the tenant's own flood).
var connectClasses = func() map[string]limitClass {
	out := map[string]limitClass{procedure(keyplanev1connect.AuthServiceName, "ValidateToken"): classDecisions}
	for p := range proceduresWhere(func(m protoreflect.MethodDescriptor) bool {
		return m.Parent().FullName() == keyplanev1connect.CheckServiceName
	}) {
		out[p] = classDecisions
	}
	for p := range proceduresWhere(func(m protoreflect.MethodDescriptor) bool {
		opts, _ := m.Options().(*descriptorpb.MethodOptions)
		return m.Parent().FullName() != keyplanev1connect.AuthServiceName && m.Parent().FullName() != keyplanev1connect.CheckServiceName &&
			opts.GetIdempotencyLevel() != descriptorpb.MethodOptions_NO_SIDE_EFFECTS && m.Input().Fields().ByName("tenant_id") != nil
	}) {
		out[p] = classWrites
	}
	return out
}()

// classOf is the class a Connect procedure counts in.
func classOf(procedure string) limitClass { return connectClasses[procedure] }

// tenantLimit is the Connect interceptor of the per-tenant class limits: innermost, so
// that a call is counted after the authority check has authenticated its caller (for
// Check and CheckBulk, verified the caller's token): a caller without credentials
// cannot spend a tenant's budget. ValidateToken, public, is counted by its handler.
func (n *Node) tenantLimit() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if c := classOf(req.Spec().Procedure); c != classNone && req.Spec().Procedure != validateTokenProcedure {
				if tenant, ok := tenantField(req.Any()); ok {
					if err := n.limits.allow(ctx, c, tenant, n.now()); err != nil {
						return nil, err
					}
				}
			}
			return next(ctx, req)
		}
	}
}

// validateTokenProcedure is public (the token is the credential): it is charged to its
// tenant in its handler, once the token verified for that tenant, so that garbage
// naming a tenant cannot spend the tenant's budget.
var validateTokenProcedure = procedure(keyplanev1connect.AuthServiceName, "ValidateToken")

// refuseEarly wraps a Connect service handler (path, handler as the generated
// constructors return them): a decision call whose Keyplane-Tenant header names a
// tenant whose decision bucket is already empty is refused before its body is read and
// decoded, with the same resource_exhausted and Retry-After, without the interceptors,
// the RPC metric or an access-log line: in a flood, a refusal should cost as little as
// possible (keyplane_tenant_limited_total counts it). It takes nothing from the bucket:
// only authenticated calls spend it (tenantLimit, and ValidateToken's handler), so
// nobody can spend a tenant's budget by naming it.
func (n *Node) refuseEarly(path string, h http.Handler) (string, http.Handler) {
	ew := connect.NewErrorWriter()
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Get(routing.TenantHeader)
		if tenant == "" || classOf(r.URL.Path) != classDecisions || !ew.IsSupported(r) {
			h.ServeHTTP(w, r)
			return
		}
		var rl *rateLimited
		if err := n.limits.spent(r.Context(), classDecisions, tenant, n.now()); errors.As(err, &rl) {
			w.Header().Set(RequestIDHeader, incomingRequestID(r.Header.Get(RequestIDHeader)))
			_ = ew.Write(w, r, exhausted(rl.Error(), rl.retryAfter))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// attachTenantLimits makes the token endpoint's limiter (the sign-in pages',
// ExchangeAPIKey's and Refresh's too) refuse calls once the tenant's token class is
// spent (TokenPerTenant is that class's default), and introspection's (userinfo's too)
// once its decision class is, as well as by its own per-tenant limit. Neither takes
// from the class: spendTokens does when a token is minted, and introspection and
// userinfo charge the decision class once their caller is authenticated.
func (g *guards) attachTenantLimits(t *tenantLimiter) {
	g.token.perTen, g.token.class, g.token.tenants = nil, classTokens, t
	g.introspect.class, g.introspect.tenants = classDecisions, t
}

// SetTenantLimits replaces a tenant's request-rate limits; this node applies them at
// once, the others within their tenant cache's TTL.
func (a *AdminService) SetTenantLimits(ctx context.Context, req *connect.Request[keyplanev1.SetTenantLimitsRequest]) (*connect.Response[keyplanev1.SetTenantLimitsResponse], error) {
	l := req.Msg.GetLimits()
	rate := func(r *keyplanev1.RateLimit) schema.TenantRate {
		return schema.TenantRate{PerSecond: r.GetPerSecond(), Burst: r.GetBurst()}
	}
	t, err := a.node.store.SetTenantLimits(ctx, change(ctx), req.Msg.Id, schema.TenantLimits{
		Decisions: rate(l.GetDecisions()), Tokens: rate(l.GetTokens()), Writes: rate(l.GetWrites())})
	if err != nil {
		return nil, err
	}
	a.node.forgetPlacement(t.ID)
	return connect.NewResponse(&keyplanev1.SetTenantLimitsResponse{Tenant: a.node.tenantToProto(t)}), nil
}

// tenantLimitsToProto is the tenant's limits as the API shows them (0: the default).
func tenantLimitsToProto(l schema.TenantLimits) *keyplanev1.TenantLimits {
	rate := func(r schema.TenantRate) *keyplanev1.RateLimit {
		return &keyplanev1.RateLimit{PerSecond: r.PerSecond, Burst: r.Burst}
	}
	return &keyplanev1.TenantLimits{Decisions: rate(l.Decisions), Tokens: rate(l.Tokens), Writes: rate(l.Writes)}
}
