package deploy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/front"
	"github.com/keyplane/keyplane/routing"
)

// regionHeader is an HTTP transport of a caller placed in a region: it names the
// region to the front and remembers the last response's routing headers.
type regionHeader struct {
	region string
	last   http.Header
}

func (rh *regionHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(front.RegionHeader, rh.region)
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		rh.last = resp.Header
	}
	return resp, err
}

// oidcFlow is what a standard OIDC/OAuth client does with a tenant's issuer through
// the front: discovery (go-oidc checks the issuer it names), client credentials at the
// token endpoint discovery names (x/oauth2), the access token verified against JWKS,
// and introspection. It returns the front's entry node of every step.
func oidcFlow(t *testing.T, ctx context.Context, hc *http.Client, rh *regionHeader, issuer, clientID, secret string) []string {
	t.Helper()
	ctx = oidc.ClientContext(ctx, hc)
	var entries []string
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery of %s through the front: %v", issuer, err)
	}
	entries = append(entries, rh.last.Get(front.NodeHeader))
	cc := clientcredentials.Config{ClientID: clientID, ClientSecret: secret, TokenURL: provider.Endpoint().TokenURL,
		AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials at %s through the front: %v", cc.TokenURL, err)
	}
	entries = append(entries, rh.last.Get(front.NodeHeader))
	if _, err := provider.VerifierContext(ctx, &oidc.Config{SkipClientIDCheck: true}).Verify(ctx, tok.AccessToken); err != nil {
		t.Fatalf("verify the access token against JWKS through the front: %v", err)
	}
	entries = append(entries, rh.last.Get(front.NodeHeader))
	var meta struct {
		Introspection string `json:"introspection_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil || !strings.HasPrefix(meta.Introspection, issuer+"/") {
		t.Fatalf("discovery's introspection endpoint %q (%v), want one under %s", meta.Introspection, err, issuer)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.Introspection, strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(clientID, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("introspect through the front: %v", err)
	}
	defer resp.Body.Close()
	var in struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil || resp.StatusCode != http.StatusOK || !in.Active {
		t.Fatalf("introspect through the front: %s active %v (%v), want 200 and active", resp.Status, in.Active, err)
	}
	return append(entries, resp.Header.Get(front.NodeHeader))
}

// getThroughFront reads path under the front and checks the answer came from the entry
// node itself (route local): discovery and JWKS never need the tenant's home region.
func getThroughFront(t *testing.T, hc *http.Client, cl *deploy.Cluster, path string) {
	t.Helper()
	resp, err := hc.Get(cl.FrontURL + path)
	if err != nil {
		t.Fatalf("GET %s through the front: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	entry := resp.Header.Get(front.NodeHeader)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(routing.RouteHeader) != routing.RouteLocal ||
		resp.Header.Get("Keyplane-Served-By") != entry || entry == "" {
		t.Fatalf("GET %s through the front: %s route %q served by %q entered at %q: %.200s; want 200 answered by the entry node",
			path, resp.Status, resp.Header.Get(routing.RouteHeader), resp.Header.Get("Keyplane-Served-By"), entry, b)
	}
}

// frontCases runs after "home nodes killed": us-east (acme's home) is down, eu-west
// and ap-south (initech's home) are up. A caller in eu-west uses the cluster's front.
func frontCases(t *testing.T, mr *multiRegion) {
	cl := mr.cl
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rh := &regionHeader{region: "eu-west"}
	hc := &http.Client{Transport: rh, Timeout: 30 * time.Second}
	issuer := func(tenant string) string { return cl.FrontURL + "/t/" + tenant }
	if err := cl.WaitFront(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// A standard client works through the front, entering at the caller's region.
	for _, e := range oidcFlow(t, ctx, hc, rh, issuer("initech"), mr.oauth["initech"][0], mr.oauth["initech"][1]) {
		if !strings.HasPrefix(e, "eu-west/") {
			t.Errorf("the front sent a call of an eu-west caller to %q, want an eu-west node", e)
		}
	}

	// Kill the preferred region's nodes one by one. Reads right after a kill are sent
	// to the dead node until the front notices, and retried on another node.
	west := cl.RegionNodes("eu-west")
	for i, n := range west {
		if err := n.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			getThroughFront(t, hc, cl, "/t/initech/.well-known/openid-configuration")
			getThroughFront(t, hc, cl, "/t/initech/.well-known/jwks.json")
		}
		if err := cl.WaitFront(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		wantRegion := "eu-west/"
		if i == len(west)-1 {
			wantRegion = "ap-south/" // eu-west is gone, us-east too: initech's home is left
		}
		for _, e := range oidcFlow(t, ctx, hc, rh, issuer("initech"), mr.oauth["initech"][0], mr.oauth["initech"][1]) {
			if !strings.HasPrefix(e, wantRegion) || e == "eu-west/"+n.ID {
				t.Errorf("after killing %s the front sent a call to %q, want a live %s node", n.ID, e, wantRegion)
			}
		}
	}

	// acme's home region is entirely dead: discovery and JWKS are still answered (by
	// the entry node, from GLOBAL data), and go-oidc accepts the issuer.
	getThroughFront(t, hc, cl, "/t/acme/.well-known/openid-configuration")
	getThroughFront(t, hc, cl, "/t/acme/.well-known/jwks.json")
	if _, err := oidc.NewProvider(oidc.ClientContext(ctx, hc), issuer("acme")); err != nil {
		t.Errorf("discovery for acme with its home region dead: %v", err)
	}
	// Minting needs the home region's data. It is answered, never left hanging: served
	// degraded by a survivor (here, where the one PostgreSQL is still up), or, when the
	// survivor's forward reached a dying home node first, refused as
	// temporarily_unavailable naming the home region (minting is never repeated).
	mintCtx, mintCancel := context.WithTimeout(ctx, 20*time.Second)
	defer mintCancel()
	req, err := http.NewRequestWithContext(mintCtx, http.MethodPost, issuer("acme")+"/oauth2/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(mr.oauth["acme"][0], mr.oauth["acme"][1])
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("mint for acme with its home region dead: %v (want an answer)", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("mint for acme with its home region dead: %s, body: %v", resp.Status, err)
	}
	route := resp.Header.Get(routing.RouteHeader)
	t.Logf("mint for acme with us-east dead: %s route %q %s", resp.Status, route, body.Error)
	switch resp.StatusCode {
	case http.StatusOK:
		if body.AccessToken == "" || route != routing.RouteDegraded || !strings.HasPrefix(resp.Header.Get("Keyplane-Served-By"), "ap-south/") {
			t.Errorf("mint for acme with us-east dead: 200 route %q served by %q token %v, want a token served degraded by ap-south",
				route, resp.Header.Get("Keyplane-Served-By"), body.AccessToken != "")
		}
	case http.StatusServiceUnavailable:
		if body.Error != "temporarily_unavailable" || !strings.Contains(body.Description, "us-east") {
			t.Errorf("mint for acme with us-east dead: 503 %s %q, want temporarily_unavailable naming us-east", body.Error, body.Description)
		}
	default:
		t.Errorf("mint for acme with us-east dead: %s %s %q, want a degraded token or 503 temporarily_unavailable", resp.Status, body.Error, body.Description)
	}
}
