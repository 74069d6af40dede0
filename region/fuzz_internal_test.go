package region

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// FuzzRequestClassification: however a request's method and path look, routing's
// classification never panics, never calls the minting token endpoint idempotent (a
// hedged or retried mint issues two tokens), calls a request idempotent only for a
// known read-only or idempotent procedure or a /t/ read, revocation or introspection,
// never calls a SCIM write idempotent (a retried POST provisions twice), and calls it
// tenant-scoped only for a known procedure with a tenant_id.
func FuzzRequestClassification(f *testing.F) {
	for _, s := range [][2]string{
		{"POST", keyplanev1connect.AuthServiceValidateTokenProcedure},
		{"POST", keyplanev1connect.AdminServiceCreateIdentityProcedure},
		{"GET", "/t/acme/.well-known/jwks.json"},
		{"POST", "/t/acme/oauth2/token"},
		{"POST", "/t/acme/oauth2/introspect"},
		{"POST", "/t/acme/oauth2/token/../introspect"},
		{"GET", "/t/acme/oauth2/token"},
		{"POST", "/t/a%2Fb/oauth2/revoke"},
		{"PUT", "/keyplane.v1.AuthService/Login"},
		{"GET", "/t/acme/scim/v2/Users"},
		{"POST", "/t/acme/scim/v2/Users"},
		{"PATCH", "/t/acme/scim/v2/Groups/x"},
		{"POST", "/t/acme/scim/v2/Users/oauth2/revoke"},
		{"DELETE", "/t/acme/scim/v2/Users/00000000-0000-0000-0000-000000000000"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, Header: http.Header{}}
		idem, scoped := idempotent(r), needsTenant(r)
		if scoped && (!strings.HasPrefix(u.Path, "/keyplane.v1.") || !tenantScopedProcedures[u.Path]) {
			t.Fatalf("%s %q: tenant-scoped but not a known procedure", method, path)
		}
		if !idem {
			return
		}
		if isSCIMPath(u.Path) && method != http.MethodGet {
			t.Fatalf("%s %q: a SCIM write, yet called idempotent", method, path)
		}
		if strings.HasSuffix(u.Path, "/oauth2/token") && method != http.MethodGet {
			t.Fatalf("%s %q: the token endpoint mints, yet called idempotent", method, path)
		}
		if !idempotentProcedures[u.Path] && !(strings.HasPrefix(u.Path, "/t/") && (method == http.MethodGet ||
			strings.HasSuffix(u.Path, "/oauth2/introspect") || strings.HasSuffix(u.Path, "/oauth2/revoke"))) {
			t.Fatalf("%s %q: idempotent but neither a known procedure nor a /t/ read", method, path)
		}
	})
}

// FuzzIncomingRequestID: a caller's X-Request-Id is kept only when well formed, and
// whatever comes in, the id used (logged, echoed in a response header) is well formed:
// 1 to 128 characters, none of which can split a log line or a header.
func FuzzIncomingRequestID(f *testing.F) {
	for _, s := range []string{"", "req-42", "a b", "x\r\nSet-Cookie: y", strings.Repeat("a", 128), strings.Repeat("a", 129), "ü", "a:b.c_d-e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id := incomingRequestID(in)
		if !requestIDPattern.MatchString(id) {
			t.Fatalf("incomingRequestID(%q) = %q, not well formed", in, id)
		}
		if len(id) == 0 || len(id) > 128 || strings.ContainsAny(id, "\r\n\x00 \"=") {
			t.Fatalf("incomingRequestID(%q) = %q", in, id)
		}
		if requestIDPattern.MatchString(in) != (id == in) {
			t.Fatalf("incomingRequestID(%q) = %q: a well-formed id must be kept, any other replaced", in, id)
		}
	})
}

// FuzzPageToken: whatever a client sends as a page token, opening it never panics;
// it either yields the position a token sealed for this listing carries (and sealing
// that position again gives the token back) or is refused naming page_token; a token
// sealed for one listing never opens for another.
func FuzzPageToken(f *testing.F) {
	key := pageKey("fuzz-operator-secret")
	mine, other := []byte("listing one"), []byte("listing two")
	f.Add(sealPageToken(key, mine, `{"a":"2026-01-01T00:00:00Z","i":"0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b"}`))
	f.Add(sealPageToken(key, other, "identity/x"))
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, token string) {
		position, err := openPageToken(key, mine, token)
		if err != nil {
			if !strings.Contains(err.Error(), "page_token") {
				t.Fatalf("open(%q): %v, not naming page_token", token, err)
			}
			return
		}
		if sealPageToken(key, mine, position) != token {
			t.Fatalf("open(%q) = %q, which does not seal back to it", token, position)
		}
		if _, err := openPageToken(key, other, token); err == nil {
			t.Fatalf("token %q opens for two listings", token)
		}
	})
}
