package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/chaos/history"
	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// drillPermission is granted to every tenant's load identity on "*".
const drillPermission = "drill.doc.read"

// tenant is one seeded tenant the load works on.
type tenant struct {
	id, home string
	apiKey   string
	owner    string   // a human identity: owner of the service account
	serve    []string // a residency-strict tenant's regions; nil: any region may serve it

	role     string // the role granted to the load identity and to grants
	mu       sync.Mutex
	tokens   []token // recent tokens, live and revoked (reads pick from all of them)
	bindings []grant // recent grants, live and removed
}

// grant is an identity whose only access is one binding: checks of it allow exactly
// while the binding exists, so removing the binding is a revocation.
type grant struct {
	identity, binding string
	removed           bool
}

func (t *tenant) addGrant(g grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bindings = append(t.bindings, g)
	if len(t.bindings) > keepTokens {
		t.bindings = t.bindings[len(t.bindings)-keepTokens:]
	}
}

// pickGrant returns a random recent grant; with remove set, a live one, claimed for
// removal.
func (t *tenant) pickGrant(remove bool) (grant, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for range 8 {
		if len(t.bindings) == 0 {
			return grant{}, false
		}
		i := rand.IntN(len(t.bindings))
		if !remove || !t.bindings[i].removed {
			if remove {
				t.bindings[i].removed = true
			}
			return t.bindings[i], true
		}
	}
	return grant{}, false
}

type token struct {
	raw, session string
	revoked      bool
}

const keepTokens = 200

func (t *tenant) add(tok token) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens = append(t.tokens, tok)
	if len(t.tokens) > keepTokens {
		t.tokens = t.tokens[len(t.tokens)-keepTokens:]
	}
}

// pick returns a random recent token; live only when live is set.
func (t *tenant) pick(live bool) (token, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for range 8 {
		if len(t.tokens) == 0 {
			return token{}, false
		}
		i := rand.IntN(len(t.tokens))
		if !live || !t.tokens[i].revoked {
			if live {
				t.tokens[i].revoked = true // claimed for revocation
			}
			return t.tokens[i], true
		}
	}
	return token{}, false
}

// seedTenants creates one tenant per region, each with a service account whose API key the
// load exchanges, and a role bound to it on "*" so that checks of its tokens allow.
// strictRegion is the home of the drills' residency-strict tenant.
const strictRegion = "eu-west"

func seedTenants(ctx context.Context, tg *target) ([]*tenant, error) {
	var out []*tenant
	run := strings.ToLower(fmt.Sprintf("%x", time.Now().UnixNano()%(1<<24))) // a fresh tenant per run
	for _, region := range tg.regions {
		t := &tenant{id: "drill-" + region + "-" + run, home: region}
		admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, tg.adminURL[region],
			connect.WithInterceptors(client.Bearer(tg.secret), client.Tenant()))
		spec := seed.Spec{ID: t.id, Home: region, OwnerName: "drill owner", Purpose: "chaos drill load", ServiceName: "drill load"}
		if region == strictRegion {
			// One tenant is residency-strict: the drills check that no node outside its
			// home region ever serves it, even while that region is cut off.
			spec.ResidencyPolicy, t.serve = keyplanev1.ResidencyPolicy_RESIDENCY_POLICY_STRICT, []string{region}
		}
		st, err := seed.NewTenant(ctx, admin, spec)
		if err != nil {
			return nil, err
		}
		t.owner = st.OwnerID
		if t.apiKey, err = st.APIKey(ctx, admin); err != nil {
			return nil, err
		}
		role, err := admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: t.id, Name: "reader",
			Permissions: []string{drillPermission}}))
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", t.id, err)
		}
		if _, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: t.id,
			Effect: keyplanev1.Effect_EFFECT_ALLOW, PrincipalKind: "identity", PrincipalId: st.ServiceAccountID,
			RoleId: role.Msg.Role.Id, Scope: "*"})); err != nil {
			return nil, fmt.Errorf("seed %s: %w", t.id, err)
		}
		t.role = role.Msg.Role.Id
		out = append(out, t)
	}
	return out, nil
}

// recorder keeps the history of a drill. Safe for concurrent use.
type recorder struct {
	mu        sync.Mutex
	ops       []history.Op
	writes    []history.Write // acknowledged
	attempted []history.Write // every write sent, acknowledged or not
	errs      int
}

func (r *recorder) op(op history.Op) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	if !op.OK {
		r.errs++
	}
	r.mu.Unlock()
}

// counts returns the calls and errors recorded since the last take.
func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops), r.errs
}

func (r *recorder) write(w history.Write) {
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
}

func (r *recorder) attempt(w history.Write) {
	r.mu.Lock()
	r.attempted = append(r.attempted, w)
	r.mu.Unlock()
}

// take returns the history so far (calls, acknowledged writes, attempted writes) and
// starts a new one.
func (r *recorder) take() ([]history.Op, []history.Write, []history.Write) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops, ws, tried := r.ops, r.writes, r.attempted
	r.ops, r.writes, r.attempted, r.errs = nil, nil, nil, 0
	return ops, ws, tried
}

// worker is one application instance placed in a region, calling keyplane through the
// app-side client.
type worker struct {
	name    string
	region  string
	auth    keyplanev1connect.AuthServiceClient
	check   keyplanev1connect.CheckServiceClient
	admin   keyplanev1connect.AdminServiceClient
	c       *client.Client
	tenants []*tenant
	rec     *recorder
	seq     *atomic.Int64
}

func newWorker(tg *target, region string, n int, tenants []*tenant, rec *recorder, seq *atomic.Int64) (*worker, error) {
	var eps []client.Endpoint
	for _, r := range tg.regions {
		for _, u := range tg.clientURLs[region][r] {
			eps = append(eps, client.Endpoint{Region: r, URL: u})
		}
	}
	cfg := client.DefaultConfig()
	cfg.Endpoints, cfg.Prefer = eps, []string{region}
	cfg.ProbeInterval, cfg.AttemptTimeout, cfg.DownFor = 250*time.Millisecond, 1500*time.Millisecond, time.Second
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	hc, opts := c.HTTPClient(), append(c.Options(), connect.WithInterceptors(client.Bearer(tg.secret), client.Tenant()))
	return &worker{name: fmt.Sprintf("%s/app-%d", region, n), region: region, c: c, tenants: tenants, rec: rec, seq: seq,
		auth:  keyplanev1connect.NewAuthServiceClient(hc, client.BaseURL, opts...),
		check: keyplanev1connect.NewCheckServiceClient(hc, client.BaseURL, opts...),
		admin: keyplanev1connect.NewAdminServiceClient(hc, client.BaseURL, opts...)}, nil
}

// run sends a mix of calls about every pace until ctx ends, recording each: 40%
// validate, 15% check of a token, 10% check of a granted identity, 12% issue, 8%
// revoke, 5% grant (an identity and a binding), 3% binding removal, 7% admin writes.
func (w *worker) run(ctx context.Context, pace time.Duration) {
	for ctx.Err() == nil {
		t := w.tenants[rand.IntN(len(w.tenants))]
		switch x := rand.IntN(100); {
		case x < 40:
			w.validate(ctx, t)
		case x < 55:
			w.checkToken(ctx, t)
		case x < 65:
			w.checkGrant(ctx, t)
		case x < 77:
			w.issue(ctx, t)
		case x < 85:
			w.revoke(ctx, t)
		case x < 90:
			w.grant(ctx, t)
		case x < 93:
			w.unbind(ctx, t)
		default:
			w.createIdentity(ctx, t)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pace):
		}
	}
}

// callCtx bounds one call: a drill's calls never hang past 5 s.
func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// keyed reports whether the app-side client sent req with an idempotency key: the
// node applies it at most once, so the client retries it like a safe call.
func keyed(req connect.AnyRequest) bool { return req.Header().Get(client.IdempotencyKeyHeader) != "" }

func (w *worker) record(t *tenant, op history.Op, err error, route string) {
	op.End, op.Client, op.OK, op.Tenant = time.Now(), w.name, err == nil, t.id
	if err != nil {
		op.Err = connect.CodeOf(err).String()
	}
	op.Route = route
	w.rec.op(op)
}

func (w *worker) validate(ctx context.Context, t *tenant) {
	tok, ok := t.pick(false)
	if !ok {
		return
	}
	w.validateToken(ctx, t, tok)
}

func (w *worker) validateToken(ctx context.Context, t *tenant, tok token) {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Read, Name: "validate", Key: tok.session, Start: time.Now(), Safe: true}
	resp, err := w.auth.ValidateToken(cctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: t.id, Token: tok.raw}))
	route := ""
	if err == nil {
		op.Granted, op.Node, route = resp.Msg.Active, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

func (w *worker) checkToken(ctx context.Context, t *tenant) {
	tok, ok := t.pick(false)
	if !ok {
		return
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Read, Name: "check", Key: tok.session, Start: time.Now(), Safe: true}
	resp, err := w.check.Check(cctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.id,
		Principal: &keyplanev1.CheckRequest_Token{Token: tok.raw}, Permission: drillPermission, Resource: "docs/report"}))
	route := ""
	if err == nil {
		op.Granted, op.Node, route = resp.Msg.Allowed, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

func (w *worker) issue(ctx context.Context, t *tenant) {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Call, Name: "issue", Start: time.Now()}
	req := connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey})
	resp, err := w.auth.ExchangeAPIKey(cctx, req)
	op.Safe = keyed(req)
	route := ""
	if err == nil {
		t.add(token{raw: resp.Msg.Token.AccessToken, session: resp.Msg.Token.SessionId})
		op.Key, op.Node, route = resp.Msg.Token.SessionId, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

func (w *worker) revoke(ctx context.Context, t *tenant) {
	tok, ok := t.pick(true)
	if !ok {
		return
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Revoke, Name: "revoke", Key: tok.session, Start: time.Now(), Safe: true}
	resp, err := w.auth.RevokeToken(cctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: t.id, Token: tok.raw}))
	route := ""
	if err == nil {
		op.Node, route = resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

// grant creates an identity (an acknowledged write the checker looks for) and binds
// the reader role to it on "*".
func (w *worker) grant(ctx context.Context, t *tenant) {
	id := w.createIdentity(ctx, t)
	if id == "" {
		return
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Call, Name: "grant", Start: time.Now()}
	req := connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: t.id,
		Effect: keyplanev1.Effect_EFFECT_ALLOW, PrincipalKind: "identity", PrincipalId: id, RoleId: t.role, Scope: "*"})
	resp, err := w.admin.CreateBinding(cctx, req)
	op.Safe = keyed(req)
	route := ""
	if err == nil {
		op.Key, op.Node, route = resp.Msg.Binding.Id, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
		t.addGrant(grant{identity: id, binding: resp.Msg.Binding.Id})
	}
	w.record(t, op, err, route)
}

// unbind removes a grant's binding: a revocation of the identity's access.
func (w *worker) unbind(ctx context.Context, t *tenant) {
	g, ok := t.pickGrant(true)
	if !ok {
		return
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Revoke, Name: "unbind", Key: g.binding, Start: time.Now()}
	req := connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: t.id, BindingId: g.binding})
	resp, err := w.admin.DeleteBinding(cctx, req)
	op.Safe = keyed(req)
	route := ""
	if err == nil {
		op.Node, route = resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

// checkGrant checks a granted identity: allowed exactly while its binding exists.
func (w *worker) checkGrant(ctx context.Context, t *tenant) {
	g, ok := t.pickGrant(false)
	if !ok {
		return
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Read, Name: "check-grant", Key: g.binding, Start: time.Now(), Safe: true}
	resp, err := w.check.Check(cctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.id,
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: g.identity}, Permission: drillPermission, Resource: "docs/report"}))
	route := ""
	if err == nil {
		op.Granted, op.Node, route = resp.Msg.Allowed, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
	}
	w.record(t, op, err, route)
}

// createIdentity creates a human identity and returns its id ("" on failure).
func (w *worker) createIdentity(ctx context.Context, t *tenant) string {
	cctx, cancel := callCtx(ctx)
	defer cancel()
	op := history.Op{Kind: history.Call, Name: "write", Start: time.Now()}
	name := fmt.Sprintf("drill write %d", w.seq.Add(1))
	w.rec.attempt(history.Write{Tenant: t.id, Name: name, At: op.Start})
	req := connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: t.id,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name})
	resp, err := w.admin.CreateIdentity(cctx, req)
	op.Safe = keyed(req)
	route := ""
	if err == nil {
		op.Key, op.Node, route = resp.Msg.Identity.Id, resp.Header().Get("Keyplane-Served-By"), resp.Header().Get("Keyplane-Route")
		w.rec.write(history.Write{Tenant: t.id, ID: resp.Msg.Identity.Id, Name: name, At: time.Now(), Node: op.Node})
	}
	w.record(t, op, err, route)
	return op.Key
}

// race issues a token in one region, revokes it there, and at once validates it from
// every other region, again and again until ctx ends: every validation starts after
// the revoke was acknowledged, so each one tests linearizable revocation across
// regions.
func race(ctx context.Context, revoker *worker, readers []*worker, tenants []*tenant) {
	for ctx.Err() == nil {
		t := tenants[rand.IntN(len(tenants))]
		cctx, cancel := callCtx(ctx)
		op := history.Op{Kind: history.Call, Name: "issue", Start: time.Now()}
		resp, err := revoker.auth.ExchangeAPIKey(cctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey}))
		cancel()
		revoker.record(t, op, err, "")
		if err != nil {
			_ = sleep(ctx, 50*time.Millisecond)
			continue
		}
		tok := token{raw: resp.Msg.Token.AccessToken, session: resp.Msg.Token.SessionId}
		cctx, cancel = callCtx(ctx)
		op = history.Op{Kind: history.Revoke, Name: "revoke", Key: tok.session, Start: time.Now(), Safe: true}
		_, err = revoker.auth.RevokeToken(cctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: t.id, Token: tok.raw}))
		cancel()
		revoker.record(t, op, err, "")
		var wg sync.WaitGroup
		for _, r := range readers {
			wg.Add(1)
			go func() { defer wg.Done(); r.validateToken(ctx, t, tok) }()
		}
		wg.Wait()
		_ = sleep(ctx, 20*time.Millisecond)
	}
}
