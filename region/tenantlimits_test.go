package region_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
)

// TestTenantLimits covers the per-tenant class limits (issue 20) through a real
// server: a tenant over its decision limit gets resource_exhausted with Retry-After
// (HTTP 429 on introspection), another tenant on the same node is unaffected, limits
// set with SetTenantLimits take effect at once (and are audited), a write limit
// refuses admin mutations, and bad values are refused naming the field.
func TestTenantLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Refills so slow (one token per 1000 s) that outcomes are counts, whatever the
	// machine's speed.
	slow := func(burst int) region.RateLimit { return region.RateLimit{PerSecond: 0.001, Burst: burst} }
	f := newFixtureWith(t, func(c *region.Config) { c.Login.Rates.DecisionsPerTenant = slow(5) })
	tok := f.exchange(t)
	tokens := map[string]string{"acme": tok} // a token of each tenant: only a tenant's own tokens spend its budget
	newTenant := func(id string) {
		t.Helper()
		r, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: id, Name: id, HomeRegion: "us-east"}))
		if err != nil {
			t.Fatal(err)
		}
		tokens[id] = f.accessToken(t, id, r.Msg.AdminClientId, r.Msg.AdminClientSecret, nil)
	}
	for _, id := range []string{"globex", "initech"} {
		newTenant(id)
	}
	validate := func(tenant string) error {
		_, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: tenant, Token: tokens[tenant]}))
		return err
	}

	t.Run("over the default limit", func(t *testing.T) {
		for i := range 5 {
			if err := validate("acme"); err != nil {
				t.Fatalf("validation %d of a burst of 5: %v", i+1, err)
			}
		}
		err := validate("acme")
		wantCode(t, err, connect.CodeResourceExhausted, `tenant "acme" is over its decisions limit on this node (0.001/s, burst 5, default)`)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") != "1000" {
			t.Fatalf("Retry-After %q, want 1000 (seconds until the next token)", ce.Meta().Get("Retry-After"))
		}
	})

	t.Run("tokens that are not the tenant's do not spend its budget", func(t *testing.T) {
		// acme's token presented as globex's, and garbage: answered inactive, never
		// counted, so nobody can exhaust a tenant's budget by naming it.
		for range 10 {
			for _, raw := range []string{tok, "garbage"} {
				r, err := f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "globex", Token: raw}))
				if err != nil {
					t.Fatalf("a foreign token for globex: %v, want an inactive answer", err)
				}
				if r.Msg.Active {
					t.Fatal("a foreign token is active for globex")
				}
			}
		}
	})

	t.Run("another tenant is unaffected", func(t *testing.T) {
		for i := range 5 {
			if err := validate("globex"); err != nil {
				t.Fatalf("globex validation %d while acme is limited: %v", i+1, err)
			}
		}
	})

	t.Run("HTTP answers 429 with Retry-After", func(t *testing.T) {
		form := url.Values{"token": {tok}}
		req, _ := http.NewRequest(http.MethodPost, f.url+"/t/acme/oauth2/introspect", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(f.clientID, f.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1000" {
			t.Fatalf("introspection over the limit: %d, Retry-After %q; want 429 with 1000", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if !strings.Contains(string(body), "decisions limit") {
			t.Fatalf("body %s does not name the limit", body)
		}
	})

	set := func(id string, l *keyplanev1.TenantLimits) (*keyplanev1.Tenant, error) {
		r, err := f.admin.SetTenantLimits(ctx, connect.NewRequest(&keyplanev1.SetTenantLimitsRequest{Id: id, Limits: l}))
		if err != nil {
			return nil, err
		}
		return r.Msg.Tenant, nil
	}

	t.Run("a configured limit takes effect", func(t *testing.T) {
		got, err := set("initech", &keyplanev1.TenantLimits{Decisions: &keyplanev1.RateLimit{PerSecond: 0.001, Burst: 2}})
		if err != nil {
			t.Fatal(err)
		}
		if d := got.GetLimits().GetDecisions(); d.GetPerSecond() != 0.001 || d.GetBurst() != 2 {
			t.Fatalf("SetTenantLimits answered decisions %v, want 0.001/s burst 2", d)
		}
		for i := range 2 {
			if err := validate("initech"); err != nil {
				t.Fatalf("validation %d of initech's burst of 2: %v", i+1, err)
			}
		}
		wantCode(t, validate("initech"), connect.CodeResourceExhausted, "(0.001/s, burst 2, custom)")
		// acme, spent, is lifted at once by "no limit" (-1), on the node that took the change.
		if _, err := set("acme", &keyplanev1.TenantLimits{Decisions: &keyplanev1.RateLimit{PerSecond: -1}}); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if err := validate("acme"); err != nil {
				t.Fatalf("validation %d with acme's limit off: %v", i+1, err)
			}
		}
		ev := f.listAudit(t, &keyplanev1.ListAuditEventsRequest{}) // acme's
		var actions []string
		for _, e := range ev {
			actions = append(actions, e.Action)
			if e.Action == "tenant.limits" {
				if l, _ := e.After.AsMap()["limits"].(map[string]any); l["decisions"] == "off" && e.Before.AsMap()["limits"] == nil {
					return
				}
				t.Fatalf("tenant.limits event before %v after %v, want limits.decisions off after the defaults", e.Before.AsMap(), e.After.AsMap())
			}
		}
		t.Fatalf("no tenant.limits audit event among %v", actions)
	})

	t.Run("calls naming their tenant in Keyplane-Tenant are counted once, before decoding", func(t *testing.T) {
		newTenant("umbrella")
		if _, err := set("umbrella", &keyplanev1.TenantLimits{Decisions: &keyplanev1.RateLimit{PerSecond: 0.001, Burst: 3}}); err != nil {
			t.Fatal(err)
		}
		routed := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(connect.UnaryInterceptorFunc(
			func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
					req.Header().Set(routing.TenantHeader, "umbrella") // as routing/client does
					return next(ctx, req)
				}
			})))
		check := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(connect.UnaryInterceptorFunc(
			func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
					req.Header().Set(routing.TenantHeader, "umbrella")
					return next(ctx, req)
				}
			})))
		// Counted twice (early and in the interceptor), the second call would fail.
		for i := range 3 {
			if _, err := routed.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "umbrella", Token: tokens["umbrella"]})); err != nil {
				t.Fatalf("validation %d of a burst of 3: %v", i+1, err)
			}
		}
		for _, err := range []error{
			func() error {
				_, err := routed.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "umbrella", Token: tokens["umbrella"]}))
				return err
			}(),
			func() error {
				_, err := check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "umbrella", Permission: "docs.read", Resource: "docs/1"}))
				return err
			}(),
		} {
			wantCode(t, err, connect.CodeResourceExhausted, `tenant "umbrella" is over its decisions limit on this node (0.001/s, burst 3, custom)`)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") != "1000" {
				t.Fatalf("Retry-After %q, want 1000", ce.Meta().Get("Retry-After"))
			}
		}
	})

	t.Run("a write limit refuses admin mutations", func(t *testing.T) {
		if _, err := set("initech", &keyplanev1.TenantLimits{Writes: &keyplanev1.RateLimit{PerSecond: 0.001, Burst: 1}}); err != nil {
			t.Fatal(err)
		}
		create := func(name string) error {
			_, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "initech", Name: name}))
			return err
		}
		if err := create("first"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, create("second"), connect.CodeResourceExhausted, "over its writes limit")
		// Reads are not writes.
		if _, err := f.admin.ListGroups(ctx, connect.NewRequest(&keyplanev1.ListGroupsRequest{TenantId: "initech"})); err != nil {
			t.Fatalf("a read under a spent write limit: %v", err)
		}
	})

	t.Run("refusals are counted by class, not by tenant", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, f.url+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		want := map[string]float64{`class="decisions",limits="default"`: 2, `class="decisions",limits="custom"`: 3, `class="writes",limits="custom"`: 1}
		for line := range strings.Lines(string(b)) {
			if !strings.HasPrefix(line, "keyplane_tenant_limited_total{") {
				continue
			}
			if strings.Contains(line, "tenant") && strings.Contains(line, "acme") {
				t.Fatalf("a tenant id in a metric label: %s", line)
			}
			for labels, n := range want {
				if strings.Contains(line, labels) {
					v, _ := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), 64)
					if v != n {
						t.Errorf("%s = %v, want %v", labels, v, n)
					}
					delete(want, labels)
				}
			}
		}
		if len(want) > 0 {
			t.Fatalf("series missing: %v", want)
		}
	})

	t.Run("bad values are refused naming the field", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			l     *keyplanev1.TenantLimits
			field string
		}{
			{"negative rate", &keyplanev1.TenantLimits{Decisions: &keyplanev1.RateLimit{PerSecond: -2}}, "limits.decisions.per_second"},
			{"NaN", &keyplanev1.TenantLimits{Tokens: &keyplanev1.RateLimit{PerSecond: math.NaN()}}, "limits.tokens.per_second"},
			{"too fast", &keyplanev1.TenantLimits{Writes: &keyplanev1.RateLimit{PerSecond: 2e6}}, "limits.writes.per_second"},
			{"negative burst", &keyplanev1.TenantLimits{Writes: &keyplanev1.RateLimit{PerSecond: 5, Burst: -1}}, "limits.writes.burst"},
			{"burst of the default", &keyplanev1.TenantLimits{Tokens: &keyplanev1.RateLimit{Burst: 10}}, "limits.tokens.burst"},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := set("globex", c.l)
				wantCode(t, err, connect.CodeInvalidArgument, c.field)
			})
		}
	})
}

// TestTenantLimitsOnSCIM: a SCIM mutation counts against the tenant's write limit and
// is refused with 429 and Retry-After; SCIM reads are not writes.
func TestTenantLimitsOnSCIM(t *testing.T) {
	t.Parallel()
	f, sc, _ := scimFixture(t)
	if _, err := f.op.SetTenantLimits(context.Background(), connect.NewRequest(&keyplanev1.SetTenantLimitsRequest{Id: "acme",
		Limits: &keyplanev1.TenantLimits{Writes: &keyplanev1.RateLimit{PerSecond: 0.001, Burst: 1}}})); err != nil {
		t.Fatal(err)
	}
	user := func(name string) string {
		b, _ := json.Marshal(map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": name})
		return string(b)
	}
	if r := sc.do(t, http.MethodPost, "/Users", user("ann@acme.example")); r.status != http.StatusCreated {
		t.Fatalf("first SCIM create: %d %s", r.status, r.raw)
	}
	r := sc.do(t, http.MethodPost, "/Users", user("bob@acme.example"))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1000" || !strings.Contains(r.raw, "writes limit") {
		t.Fatalf("second SCIM create: %d, Retry-After %q, %s; want 429, Retry-After 1000, naming the writes limit", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if r := sc.do(t, http.MethodGet, "/Users", ""); r.status != http.StatusOK {
		t.Fatalf("a SCIM read under a spent write limit: %d %s", r.status, r.raw)
	}
}

// TestSecurityStrangersCannotSpendTenantBudget: callers without valid credentials
// naming a tenant (a wrong client secret at the token endpoint or introspection, a
// garbage bearer token at userinfo, a bogus refresh token or API key) are refused as
// such and never spend the tenant's token or decision budget: before, each spent the
// class before its caller was authenticated, so anyone could lock a tenant's own
// clients out of minting tokens or introspecting them. The tenant's clients then get
// their whole burst, and the limit still holds after it.
func TestSecurityStrangersCannotSpendTenantBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	r, err := f.admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "hooli", Name: "Hooli", HomeRegion: "us-east"}))
	if err != nil {
		t.Fatal(err)
	}
	id, secret := r.Msg.AdminClientId, r.Msg.AdminClientSecret
	slow := &keyplanev1.RateLimit{PerSecond: 0.001, Burst: 2} // no refill while the test runs
	if _, err := f.admin.SetTenantLimits(ctx, connect.NewRequest(&keyplanev1.SetTenantLimitsRequest{Id: "hooli",
		Limits: &keyplanev1.TenantLimits{Tokens: slow, Decisions: slow}})); err != nil {
		t.Fatal(err)
	}
	token, introspect := f.url+"/t/hooli/oauth2/token", f.url+"/t/hooli/oauth2/introspect"
	stranger := f.authFrom("127.0.0.9")
	for i := range 10 {
		if got := postForm(t, token, id, "wrong secret", url.Values{"grant_type": {"client_credentials"}}); got.status != http.StatusUnauthorized {
			t.Fatalf("stranger's token request %d: %d %v, want 401", i+1, got.status, got.body)
		}
		if got := postForm(t, introspect, id, "wrong secret", url.Values{"token": {"x"}}); got.status != http.StatusUnauthorized {
			t.Fatalf("stranger's introspection %d: %d %v, want 401", i+1, got.status, got.body)
		}
		req, _ := http.NewRequest(http.MethodGet, f.url+"/t/hooli/oauth2/userinfo", nil)
		req.Header.Set("Authorization", "Bearer garbage")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("stranger's userinfo %d: %d, want 401", i+1, resp.StatusCode)
		}
		_, err = stranger.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "hooli", RefreshToken: "kpr_not_a_real_one"}))
		wantCode(t, err, connect.CodeUnauthenticated, "refresh_token")
		_, err = stranger.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "hooli", ApiKey: f.apiKey}))
		wantCode(t, err, connect.CodeUnauthenticated, "")
	}

	var tok string
	for i := range 2 {
		tok = f.accessToken(t, "hooli", id, secret, nil)
		if got := postForm(t, introspect, id, secret, url.Values{"token": {tok}}); got.status != http.StatusOK || got.body["active"] != true {
			t.Fatalf("introspection %d of hooli's burst of 2: %d %v", i+1, got.status, got.body)
		}
	}
	for _, c := range []struct {
		url, class string
		form       url.Values
	}{
		{token, "tokens", url.Values{"grant_type": {"client_credentials"}}},
		{introspect, "decisions", url.Values{"token": {tok}}},
	} {
		got := postForm(t, c.url, id, secret, c.form)
		if desc, _ := got.body["error_description"].(string); got.status != http.StatusTooManyRequests || !strings.Contains(desc, `tenant "hooli" is over its `+c.class+` limit`) {
			t.Fatalf("%s past hooli's burst: %d %v, want 429 naming its %s limit", c.url, got.status, got.body, c.class)
		}
	}
}
