package region_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// fakeOP is a minimal upstream OpenID Provider on loopback HTTP whose ID tokens say
// what a test wants: its authorization endpoint answers every request at once with a
// code, its token endpoint with an ID token of claims (plus iss, nonce, iat and exp).
type fakeOP struct {
	srv    *httptest.Server
	key    *rsa.PrivateKey
	mu     sync.Mutex
	nonce  string
	claims map[string]any
}

func newFakeOP(t *testing.T, claims map[string]any) *fakeOP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	op := &fakeOP{key: key, claims: claims}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		u := op.srv.URL
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": u, "authorization_endpoint": u + "/authorize", "token_endpoint": u + "/token",
			"jwks_uri": u + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		op.mu.Lock()
		op.nonce = q.Get("nonce")
		op.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"code": {"fake-code"}, "state": {q.Get("state")}}.Encode(), http.StatusSeeOther)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, _ *http.Request) {
		op.mu.Lock()
		c := map[string]any{"iss": op.srv.URL, "nonce": op.nonce, "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
		for k, v := range op.claims {
			c[k] = v
		}
		op.mu.Unlock()
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		raw, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": raw})
	})
	op.srv = httptest.NewServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

// TestSecurityUpstreamIDTokenAuthorizedParty: an upstream ID token is taken only if it
// was issued to keyplane's client: with several audiences it must name keyplane's
// client as azp, and an azp it carries must be keyplane's client. Before, go-oidc's
// audience check (keyplane's client among the audiences) was all: an ID token the
// provider issued to another of its clients (azp) that merely lists keyplane among its
// audiences signed its subject in (OIDC Core §3.1.3.7, steps 4 and 5).
func TestSecurityUpstreamIDTokenAuthorizedParty(t *testing.T) {
	t.Parallel()
	o := newOPFixture(t, "http://127.0.0.1:9/cb", "http://127.0.0.1:9/bye")
	ctx := context.Background()
	up := keyplanev1connect.NewUpstreamServiceClient(http.DefaultClient, o.url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				return next(ctx, req)
			}
		})))
	const client = "keyplane-at-fake"
	for _, tc := range []struct {
		name   string
		claims map[string]any
		ok     bool
	}{
		{"azp another client", map[string]any{"sub": "u-1", "aud": []string{client, "other-app"}, "azp": "other-app"}, false},
		{"several audiences without azp", map[string]any{"sub": "u-2", "aud": []string{client, "other-app"}}, false},
		{"single audience, azp another client", map[string]any{"sub": "u-3", "aud": client, "azp": "other-app"}, false},
		{"single audience", map[string]any{"sub": "u-4", "aud": client}, true},
		{"several audiences, azp keyplane", map[string]any{"sub": "u-5", "aud": []string{client, "other-app"}, "azp": client}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := newFakeOP(t, tc.claims)
			name := "fake" + tc.claims["sub"].(string)[2:]
			if _, err := up.CreateUpstreamProvider(ctx, connect.NewRequest(&keyplanev1.CreateUpstreamProviderRequest{TenantId: "acme",
				Provider: &keyplanev1.UpstreamProvider{Name: name, DisplayName: "Fake " + name, Issuer: op.srv.URL, ClientId: client,
					ClientSecret: "s3cret", Jit: true}})); err != nil {
				t.Fatal(err)
			}
			_, challenge := pkce()
			c := browser(t)
			start := url.Values{"req": {o.authParams(o.firstParty, challenge).Encode()}}
			to := resolve(t, o.url, fetch(t, c, o.issuer+"/login/oidc/"+name+"/start?"+start.Encode()))
			if !strings.HasPrefix(to, op.srv.URL+"/authorize?") {
				t.Fatalf("start redirected to %s", to)
			}
			back := resolve(t, o.url, fetch(t, c, to))
			p := fetch(t, c, back)
			if tc.ok {
				o.codeFrom(t, p)
				return
			}
			if p.location != nil {
				t.Fatalf("an ID token issued to another client signed in: %d %v", p.status, p.location)
			}
			if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "did not verify") {
				t.Fatalf("want the login page saying the ID token did not verify, got %d: %.400s", p.status, p.body)
			}
			found := false
			for _, e := range o.listAudit(t, &keyplanev1.ListAuditEventsRequest{Action: "login.upstream_refused"}) {
				if e.After.GetFields()["rule"].GetStringValue() == "id_token" && strings.Contains(e.After.GetFields()["reason"].GetStringValue(), "azp") {
					found = true
				}
			}
			if !found {
				t.Fatal("no login.upstream_refused event with rule id_token naming azp")
			}
		})
	}
}
