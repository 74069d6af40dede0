package region_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
)

// TestDiscoveryAndJWKSAnsweredAnywhere (issue 19, item 6): discovery and JWKS are
// built from GLOBAL data, so the node a request reaches answers them for every
// tenant, without forwarding to the tenant's home region (which may be dead or cut
// off); every other tenant request is still routed. Unknown tenants are refused there.
func TestDiscoveryAndJWKSAnsweredAnywhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pair := newRoutedPair(t)
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, pair.us, connect.WithInterceptors(client.Tenant(), bearerInterceptor(secret)))
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	get := func(t *testing.T, url string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	// This pair of nodes has no KEK, so it holds no signing keys: its JWKS answer is
	// the node's own refusal. Where it comes from is what this test is about (the
	// cluster test in deploy verifies tokens against JWKS through the front).
	for _, path := range []string{"/t/acme/.well-known/openid-configuration", "/t/acme/.well-known/jwks.json"} {
		t.Run(path, func(t *testing.T) {
			resp, body := get(t, pair.eu+path)
			wantStatus := http.StatusOK
			if strings.HasSuffix(path, "jwks.json") {
				wantStatus = http.StatusBadRequest
				if !strings.Contains(body, "key-encryption key") {
					t.Errorf("JWKS without a KEK: %s, want the node's refusal naming the key-encryption key", body)
				}
			}
			if resp.StatusCode != wantStatus || resp.Header.Get(routing.RouteHeader) != routing.RouteLocal ||
				resp.Header.Get("Keyplane-Served-By") != "eu-west/eu-west-1" {
				t.Fatalf("GET %s at eu-west: %s route %q served by %q, want %d answered at eu-west", path, resp.Status,
					resp.Header.Get(routing.RouteHeader), resp.Header.Get("Keyplane-Served-By"), wantStatus)
			}
			if wantStatus != http.StatusOK {
				return
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatal(err)
			}
			if doc["issuer"] != pair.eu+"/t/acme" {
				t.Errorf("discovery at eu-west: issuer %v, want %s", doc["issuer"], pair.eu+"/t/acme")
			}
		})
	}
	t.Run("unknown tenant", func(t *testing.T) {
		resp, body := get(t, pair.eu+"/t/nobody/.well-known/openid-configuration")
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "unknown tenant") {
			t.Errorf("discovery of an unknown tenant: %s %s, want 404 unknown tenant", resp.Status, body)
		}
	})
	t.Run("a header naming another tenant is still refused", func(t *testing.T) {
		resp, body := get(t, pair.eu+"/t/acme/.well-known/jwks.json", routing.TenantHeader, "globex")
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(routing.RouteHeader) != "" {
			t.Errorf("JWKS with a mismatched tenant header: %s route %q %s, want 400 refused before routing", resp.Status, resp.Header.Get(routing.RouteHeader), body)
		}
	})
	t.Run("the token endpoint is still forwarded home", func(t *testing.T) {
		resp, err := http.Post(pair.eu+"/t/acme/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get(routing.RouteHeader) != routing.RouteForwarded || resp.Header.Get("Keyplane-Served-By") != "us-east/us-east-1" {
			t.Errorf("token endpoint at eu-west: route %q served by %q, want forwarded to us-east", resp.Header.Get(routing.RouteHeader), resp.Header.Get("Keyplane-Served-By"))
		}
	})
}
