package bench_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// BenchmarkLayers measures the layers of a decision one at a time, one call at a time
// (ns/op is the cost of one call, allocs/op its allocations), so that a regression
// shows in the layer that regressed. `make bench-go` prints them as one table.
//
//   - token/verify-uncached: token.Ring.Verify of an EdDSA access token (format,
//     header, Ed25519 signature, claims): what a node pays for a token it has not
//     seen.
//   - policy/check: authz.Snapshot.Check on a policy of the load bench's shape (1,000
//     identities in 3 of 100 groups, each group bound to its role on resources).
//   - router/local: routing.Router serving a tenant homed here: tenant from the
//     header, cached home lookup, the local handler (a no-op) called.
//   - handler/…: a node served in-process (an in-memory listener, no TCP; the client's
//     allocations count too): router, interceptors, Connect, the handler.
//     validate-cached-no-db and validate-uncached-no-db are ValidateToken calls answered
//     on the CPU before any database read (a token of another tenant, whose signature
//     the node has cached; a token of another issuer, which it never caches), so the
//     two differ by the signature check; validate, check and check-token are whole
//     decisions, database reads included.
//   - db/…: the node's decision read through its store (schema.Store.ReadDecisionStates),
//     on the same database: for a token (tenant, identity, session), for an identity,
//     and 16 keys in one statement, as concurrent requests share it.
func BenchmarkLayers(b *testing.B) {
	b.Run("token/verify-uncached", benchVerifyUncached)
	b.Run("policy/check", benchPolicyCheck)
	env := setupInProcess(b)
	b.Run("router/local", func(b *testing.B) { benchRouterLocal(b, env.store) })
	ctx := context.Background()
	auth := keyplanev1connect.NewAuthServiceClient(env.hc, env.url, connect.WithInterceptors(client.Tenant()))
	validate := func(b *testing.B, tenant, tok string, wantActive bool, wantReason string) {
		b.ReportAllocs()
		req := &keyplanev1.ValidateTokenRequest{TenantId: tenant, Token: tok}
		for b.Loop() {
			resp, err := auth.ValidateToken(ctx, connect.NewRequest(req))
			if err != nil {
				b.Fatal(err)
			}
			if resp.Msg.Active != wantActive || resp.Msg.Reason != wantReason {
				b.Fatalf("validate: active %v reason %q, want %v %q", resp.Msg.Active, resp.Msg.Reason, wantActive, wantReason)
			}
		}
	}
	b.Run("handler/validate-cached-no-db", func(b *testing.B) { validate(b, "bench-other", env.token, false, "wrong_tenant") })
	b.Run("handler/validate-uncached-no-db", func(b *testing.B) { validate(b, "bench", env.foreign, false, string(token.ReasonWrongIssuer)) })
	b.Run("handler/validate", func(b *testing.B) { validate(b, "bench", env.token, true, "") })
	checks := keyplanev1connect.NewCheckServiceClient(env.hc, env.url, connect.WithInterceptors(env.operator, client.Tenant()))
	check := func(b *testing.B, principal func(i int) *keyplanev1.CheckRequest) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			resp, err := checks.Check(ctx, connect.NewRequest(principal(i)))
			if err != nil {
				b.Fatal(err)
			}
			if resp.Msg.Decision == keyplanev1.Decision_DECISION_UNSPECIFIED {
				b.Fatalf("check: no decision in %v", resp.Msg)
			}
		}
	}
	b.Run("handler/check", func(b *testing.B) {
		check(b, func(i int) *keyplanev1.CheckRequest {
			return &keyplanev1.CheckRequest{TenantId: "bench", Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: env.identities[i%len(env.identities)]},
				Permission: "svc1.doc.read", Resource: "projects/p1/doc"}
		})
	})
	b.Run("handler/check-token", func(b *testing.B) {
		check(b, func(int) *keyplanev1.CheckRequest {
			return &keyplanev1.CheckRequest{TenantId: "bench", Principal: &keyplanev1.CheckRequest_Token{Token: env.token},
				Permission: "svc1.doc.read", Resource: "projects/p1/doc"}
		})
	})
	// The node's decision read: one statement for what a decision reads that can
	// change (tenant, identity, session), alone and as a batch of concurrent requests.
	states := func(b *testing.B, keys []schema.StateKey) {
		b.ReportAllocs()
		for b.Loop() {
			st, err := env.store.ReadDecisionStates(ctx, "us-east", keys)
			if err != nil {
				b.Fatal(err)
			}
			if !st[0].TenantFound || !st[0].IdentityFound || (keys[0].SessionID != "" && (!st[0].SessionFound || st[0].SessionRevoked)) {
				b.Fatalf("decision state of %+v: %+v", keys[0], st[0])
			}
		}
	}
	tokenKey := schema.StateKey{TenantID: "bench", IdentityID: env.subject, SessionID: env.session}
	b.Run("db/decision-state-token", func(b *testing.B) { states(b, []schema.StateKey{tokenKey}) })
	b.Run("db/decision-state-identity", func(b *testing.B) {
		states(b, []schema.StateKey{{TenantID: "bench", IdentityID: env.identities[0]}})
	})
	b.Run("db/decision-states-16", func(b *testing.B) {
		keys := []schema.StateKey{tokenKey}
		for i := range 15 {
			keys = append(keys, schema.StateKey{TenantID: "bench", IdentityID: env.identities[i+1]})
		}
		states(b, keys)
	})
}

// layerEnv is a node served in-process with the check data, a second tenant, and a
// token of tenant bench minted by another node of the same database whose issuer
// base differs (foreign).
type layerEnv struct {
	*checkEnv
	foreign string
}

// setupInProcess serves a node on an in-memory listener (no TCP) and seeds it as
// BenchmarkCheck's data, plus what the no-database ValidateToken layers need.
func setupInProcess(b *testing.B) *layerEnv {
	b.Helper()
	ctx := context.Background()
	store := schematest.NewStore(b, "us-east")
	text, _ := kek.Generate()
	k, _ := kek.Parse(text)
	dial := func(ln *pipeListener) *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return ln.dial(ctx) }}}
	}
	ln := newPipeListener()
	serveNode(b, store, k, "bench-1", "https://iam.bench", ln)
	env := &layerEnv{checkEnv: seedCheck(b, seedBench(b, "http://in-process", dial(ln), store, k))}
	admin := keyplanev1connect.NewAdminServiceClient(env.hc, env.url, connect.WithInterceptors(env.operator))
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "bench-other", Name: "Other",
		HomeRegion: "us-east"})); err != nil {
		b.Fatal(err)
	}
	// A second node on the same database signs with the same region's keys under
	// another issuer base: node 1 verifies its tokens' signatures, then refuses the
	// issuer, and never caches them.
	other := newPipeListener()
	serveNode(b, store, k, "bench-2", "https://elsewhere.bench", other)
	tok, err := keyplanev1connect.NewAuthServiceClient(dial(other), "http://in-process").ExchangeAPIKey(ctx,
		connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "bench", ApiKey: env.apiKey}))
	if err != nil {
		b.Fatal(err)
	}
	env.foreign = tok.Msg.Token.AccessToken
	return env
}

func benchVerifyUncached(b *testing.B) {
	now := time.Now()
	signer, pub, err := token.GenerateKey("us-east", now)
	if err != nil {
		b.Fatal(err)
	}
	ring := token.NewRing([]token.PublicKey{pub}, &signer)
	raw, err := ring.Mint(token.Claims{Issuer: "https://iam.bench/t/bench", Subject: "0b7c9a52-6d1e-4c8e-9d8e-2f0d6c1b7a11",
		Audience: []string{"https://api.bench"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour), ID: "jti-1", ClientID: "client-1",
		Tenant: "bench", SessionID: "1f9d4a2e-8c3b-4e5f-a6b7-c8d9e0f1a2b3", Region: "us-east", Scope: "openid"})
	if err != nil {
		b.Fatal(err)
	}
	opts := token.VerifyOptions{Issuer: "https://iam.bench/t/bench", Audience: "https://api.bench", Now: now}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ring.Verify(raw, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// benchPolicyCheck evaluates checks against a policy of the load bench's shape.
func benchPolicyCheck(b *testing.B) {
	const identities, roles, resources = 1000, 100, 1000
	p := authz.Policy{Revision: 1, Members: map[string][]string{}}
	for r := range roles {
		p.Roles = append(p.Roles, authz.Role{ID: fmt.Sprintf("role-%d", r), Permissions: []string{"bench.doc.read"}})
	}
	for i := range identities {
		for k := range 3 {
			g := fmt.Sprintf("group-%d", (i+k*37)%roles)
			p.Members[g] = append(p.Members[g], fmt.Sprintf("user-%d", i))
		}
	}
	for res := range resources {
		for k := range 2 {
			r := (res*7 + k*53) % roles
			p.Bindings = append(p.Bindings, authz.Binding{ID: fmt.Sprintf("b-%d-%d", res, k), PrincipalKind: authz.KindGroup,
				PrincipalID: fmt.Sprintf("group-%d", r), RoleID: fmt.Sprintf("role-%d", r), Scope: fmt.Sprintf("res/%d/", res), Effect: authz.Allow})
		}
	}
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		b.Fatal(err)
	}
	snap, err := env.Compile(p)
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]authz.Request, 1024)
	now := time.Now()
	for i := range reqs {
		reqs[i] = authz.Request{PrincipalID: fmt.Sprintf("user-%d", (i*7919)%identities), PrincipalKind: authz.KindIdentity, IdentityKind: "human",
			Permission: "bench.doc.read", Resource: fmt.Sprintf("res/%d/doc", (i*104729)%resources), Time: now}
	}
	allowed := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if snap.Check(reqs[i%len(reqs)]).Allowed {
			allowed++
		}
		i++
	}
	if allowed == 0 {
		b.Fatal("no check allowed: the policy does not match the requests")
	}
}

// readyNone is a membership with no ready peers: the router never forwards.
type readyNone struct{}

func (readyNone) Ready(string) []routing.Member { return nil }

func benchRouterLocal(b *testing.B, store *schema.Store) {
	local := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	rt, err := routing.NewRouter(routing.Config{Region: "us-east", NodeID: "bench-router", Directory: routing.NewDirectory(store, time.Minute),
		Peers: readyNone{}}, local)
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/keyplane.v1.AuthService/ValidateToken", http.NoBody)
	req.Header.Set(routing.TenantHeader, "bench")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req)
		if w.Code != http.StatusNoContent || w.Header().Get(routing.RouteHeader) != routing.RouteLocal {
			b.Fatalf("router: status %d route %q, want 204 %q", w.Code, w.Header().Get(routing.RouteHeader), routing.RouteLocal)
		}
	}
}

// pipeListener is an in-memory net.Listener: each dial is a net.Pipe whose server end
// Accept returns. Safe for concurrent use.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// pipeAddr is the in-memory listener's address; requests arrive from 127.0.0.1.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:0" }
