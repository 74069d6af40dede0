package region

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/credential"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// The standard HTTP endpoints, one issuer per tenant ({issuer base}/t/{tenant}):
// OIDC discovery, JWKS, the OAuth 2.0 token endpoint (RFC 6749: client_credentials and
// refresh_token), introspection (RFC 7662) and revocation (RFC 7009). Errors use the
// RFC 6749 JSON form.
func (n *Node) mountOAuth(mux *http.ServeMux) {
	mux.HandleFunc("GET /t/{tenant}/.well-known/openid-configuration", n.placedOAuthHandler(n.discovery))
	mux.HandleFunc("GET /t/{tenant}/.well-known/jwks.json", n.placedOAuthHandler(n.jwks))
	mux.HandleFunc("POST /t/{tenant}/oauth2/token", n.limitHTTP(n.guards.token, n.oauthHandler(n.tokenEndpoint)))
	mux.HandleFunc("POST /t/{tenant}/oauth2/introspect", n.limitHTTP(n.guards.introspect, n.placedOAuthHandler(n.introspect)))
	mux.HandleFunc("POST /t/{tenant}/oauth2/revoke", n.oauthHandler(n.revokeEndpoint))
	n.mountOIDC(mux)
}

// answeredHere serves discovery and JWKS on this node whatever the tenant's home
// region, and passes every other request to next (the router). Both answers depend only
// on GLOBAL data every node has: the tenant's row (from the directory cache, or the
// GLOBAL tenants table read locally on a miss) and the cluster's signing public keys.
// Forwarding them would make a standard OIDC client's discovery depend on the home
// region being up (or wait out a forward timeout during a partition) for nothing.
func (n *Node) answeredHere(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isDiscoveryOrJWKS(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set(routing.RouteHeader, routing.RouteLocal)
		n.local.ServeHTTP(w, r)
	})
}

// isDiscoveryOrJWKS reports whether r reads a tenant's OIDC discovery document or
// JWKS: GET (or HEAD) /t/{tenant}/.well-known/{openid-configuration,jwks.json}, the
// tenant named by the path only (a Keyplane-Tenant header naming another tenant goes
// to the router, which refuses the mismatch).
func isDiscoveryOrJWKS(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
	if !ok {
		return false
	}
	tenant, doc, ok := strings.Cut(rest, "/")
	if !ok || tenant == "" || (doc != ".well-known/openid-configuration" && doc != ".well-known/jwks.json") {
		return false
	}
	h := r.Header.Values(routing.TenantHeader)
	return len(h) == 0 || (len(h) == 1 && h[0] == tenant)
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status      int
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	basic       bool   // the client tried HTTP Basic: answer with WWW-Authenticate
	retryAfter  string // a rate limit's Retry-After, in seconds
}

// writeOAuthError answers oe as JSON with its status, WWW-Authenticate and
// Retry-After headers.
func writeOAuthError(w http.ResponseWriter, oe *oauthError) {
	if oe.basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="keyplane"`)
	}
	if oe.retryAfter != "" {
		w.Header().Set("Retry-After", oe.retryAfter)
	}
	writeJSON(w, oe.status, oe)
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func oauthErr(status int, code, desc string) *oauthError {
	return &oauthError{status: status, Code: code, Description: desc}
}

type oauthFunc func(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) (any, error)

// oauthHandler resolves the tenant from the path (its row, read now), runs f, and
// writes its result as JSON (no-store) or its error in RFC 6749 form. Store errors
// never leak.
func (n *Node) oauthHandler(f oauthFunc) http.HandlerFunc { return n.oauthHandlerOf(f, false) }

// placedOAuthHandler is oauthHandler for endpoints that need only the tenant's
// placement, cached (routing.Directory): discovery and JWKS, and introspection, whose
// decision read returns the tenant's status with the token's state.
func (n *Node) placedOAuthHandler(f oauthFunc) http.HandlerFunc { return n.oauthHandlerOf(f, true) }

func (n *Node) oauthHandlerOf(f oauthFunc, placed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := context.WithValue(r.Context(), requestIDKey{}, incomingRequestID(r.Header.Get(RequestIDHeader)))
		w.Header().Set(RequestIDHeader, requestID(ctx))
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		res, err := n.serveOAuth(ctx, w, r, f, placed)
		route := r.Pattern
		if err != nil {
			oe := n.toOAuthError(ctx, err)
			writeOAuthError(w, oe)
			n.metrics.observeRPCIn(ctx, route, oe.Code, time.Since(start))
			return
		}
		if b, ok := res.(rawJSON); ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		} else {
			writeJSON(w, http.StatusOK, res)
		}
		n.metrics.observeRPCIn(ctx, route, "ok", time.Since(start))
	}
}

type rawJSON []byte

func (n *Node) serveOAuth(ctx context.Context, w http.ResponseWriter, r *http.Request, f oauthFunc, placed bool) (any, error) {
	tenantID := r.PathValue("tenant")
	if !schema.ValidTenantID(tenantID) {
		return nil, oauthErr(http.StatusNotFound, "invalid_request", "unknown tenant")
	}
	var t schema.Tenant
	var err error
	if placed {
		t, err = n.tenants.Tenant(ctx, tenantID, 0)
	} else {
		t, err = n.store.GetTenant(ctx, tenantID)
	}
	if errors.Is(err, schema.ErrNotFound) {
		return nil, oauthErr(http.StatusNotFound, "invalid_request", "unknown tenant")
	}
	if err != nil {
		return nil, err
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, oauthErr(http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		}
		if err := r.ParseForm(); err != nil {
			return nil, oauthErr(http.StatusBadRequest, "invalid_request", "malformed or oversized form body")
		}
		for k, v := range r.PostForm {
			if len(v) > 1 {
				return nil, oauthErr(http.StatusBadRequest, "invalid_request", "parameter "+k+" repeated")
			}
		}
	}
	return f(ctx, w, r, t)
}

// toOAuthError maps any error to an RFC 6749 error, through connectError so that store
// errors are classified (and logged) in one place.
func (n *Node) toOAuthError(ctx context.Context, err error) *oauthError {
	var oe *oauthError
	if errors.As(err, &oe) {
		return oe
	}
	if rl := (*rateLimited)(nil); errors.As(err, &rl) {
		return &oauthError{status: http.StatusTooManyRequests, Code: "temporarily_unavailable", Description: rl.Error(), retryAfter: retryAfterSeconds(rl.retryAfter)}
	}
	ce := connectError(ctx, n.log, err)
	switch ce.Code() {
	case connect.CodeInvalidArgument:
		return oauthErr(http.StatusBadRequest, "invalid_request", ce.Message())
	case connect.CodeUnauthenticated, connect.CodeFailedPrecondition, connect.CodeNotFound, connect.CodePermissionDenied:
		// Client authentication failures never get here: authenticateClient answers
		// them as invalid_client itself. A credential refused here is the grant the
		// client presented (a reused refresh token).
		return oauthErr(http.StatusBadRequest, "invalid_grant", ce.Message())
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return oauthErr(http.StatusServiceUnavailable, "temporarily_unavailable", ce.Message())
	}
	return oauthErr(http.StatusInternalServerError, "server_error", ce.Message())
}

// discovery is the tenant's OpenID Provider / RFC 8414 metadata. It lists only what
// exists: the authorization-code flow (response type code, PKCE S256; no implicit or
// hybrid flow), ID tokens signed with the tenant's algorithm (the one its access
// tokens use, whose key JWKS publishes), userinfo and RP-initiated logout.
func (n *Node) discovery(_ context.Context, _ http.ResponseWriter, _ *http.Request, t schema.Tenant) (any, error) {
	iss := n.Issuer(t.ID)
	auth := []string{"client_secret_basic", "client_secret_post"}
	return map[string]any{
		"issuer":                           iss,
		"jwks_uri":                         iss + "/.well-known/jwks.json",
		"token_endpoint":                   iss + "/oauth2/token",
		"introspection_endpoint":           iss + "/oauth2/introspect",
		"revocation_endpoint":              iss + "/oauth2/revoke",
		"grant_types_supported":            []string{"authorization_code", "client_credentials", "refresh_token", grantTokenExchange},
		"authorization_endpoint":           iss + "/oauth2/authorize",
		"userinfo_endpoint":                iss + "/oauth2/userinfo",
		"end_session_endpoint":             iss + "/oauth2/logout",
		"code_challenge_methods_supported": []string{"S256"},
		"response_modes_supported":         []string{"query"},
		"scopes_supported":                 oidcScopes,
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
			"name", "email"},
		"acr_values_supported":                           []string{acrPassword, acrMFA},
		"prompt_values_supported":                        []string{"none", "login", "consent"},
		"authorization_response_iss_parameter_supported": true,
		"claims_parameter_supported":                     false,
		"request_parameter_supported":                    false,
		"request_uri_parameter_supported":                false,
		"token_endpoint_auth_methods_supported":          auth,
		"introspection_endpoint_auth_methods_supported":  auth,
		"revocation_endpoint_auth_methods_supported":     auth,
		"response_types_supported":                       []string{"code"},
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          []string{string(signingAlg(t))},
	}, nil
}

func (n *Node) jwks(ctx context.Context, w http.ResponseWriter, _ *http.Request, _ schema.Tenant) (any, error) {
	ring, err := n.keys.get(ctx)
	if err != nil {
		return nil, err
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Del("Pragma")
	return rawJSON(ring.JWKS(n.now())), nil
}

// client is an authenticated OAuth client.
type client struct {
	cred schema.KeyCredential
	id   string
}

// mayActOn reports whether the client may introspect or revoke a token issued to
// clientID: an admin client every token of its tenant, any other only its own.
func (c client) mayActOn(clientID string) bool {
	return c.cred.Admin || (clientID != "" && clientID == c.id)
}

// clientCredentials reads the client_id and client_secret a request presents, by
// client_secret_basic (RFC 6749 §2.3.1: each form-urlencoded, then HTTP Basic) or
// client_secret_post, never both. It only parses: a well-formed pair may still be
// wrong. Anything malformed or missing is invalid_client (invalid_request for two
// methods at once). basic reports whether the client tried HTTP Basic.
func clientCredentials(r *http.Request) (id, secret string, basic bool, err error) {
	id, secret, basic = r.BasicAuth()
	fail := &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Description: "client authentication failed", basic: basic}
	if basic {
		if r.PostForm.Has("client_id") || r.PostForm.Has("client_secret") {
			return "", "", true, oauthErr(http.StatusBadRequest, "invalid_request", "use one client authentication method, not both")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return "", "", true, &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Description: "malformed Basic credentials", basic: true}
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id == "" || secret == "" || len(id) > 64 {
		return "", "", basic, fail
	}
	if _, err := credential.ParseSecret(credential.PrefixClientSecret, secret); err != nil {
		return "", "", basic, fail
	}
	return id, secret, basic, nil
}

// authenticateClient reads client_secret_basic or client_secret_post credentials and
// checks them against the tenant's clients.
func (n *Node) authenticateClient(ctx context.Context, r *http.Request, t schema.Tenant) (client, error) {
	id, secret, basic, err := clientCredentials(r)
	if err != nil {
		return client{}, err
	}
	cred, err := n.findKeyCredential(ctx, t.Scope(), schema.CredClientSecret, id, secret)
	if errors.Is(err, errInvalidClient) {
		return client{}, &oauthError{status: http.StatusUnauthorized, Code: "invalid_client", Description: "client authentication failed", basic: basic}
	}
	if err != nil {
		return client{}, err
	}
	return client{cred: cred, id: id}, nil
}

// tokenResponse is RFC 6749 §5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func (n *Node) tokenEndpoint(ctx context.Context, _ http.ResponseWriter, r *http.Request, t schema.Tenant) (any, error) {
	if t.Status != schema.StatusActive {
		return nil, oauthErr(http.StatusBadRequest, "invalid_grant", "tenant is disabled")
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "client_credentials":
		c, err := n.authenticateClient(ctx, r, t)
		if err != nil {
			return nil, err
		}
		audience, scope, err := requestedTarget(n.Issuer(t.ID), c.cred.Credential, r.PostForm)
		if err != nil {
			return nil, err
		}
		raw, sess, err := n.issue(ctx, schema.Change{Actor: "client:" + c.id, ActorKind: "client", ClientID: c.id, RequestID: requestID(ctx)}, grant{
			Tenant: t, IdentityID: c.cred.IdentityID, ClientID: c.id, GrantType: "client_credentials", CredentialID: c.cred.ID,
			Audience: audience, Scope: scope,
		})
		if err != nil {
			return nil, err
		}
		return tokenResponse{AccessToken: raw, TokenType: "Bearer", ExpiresIn: secondsUntil(sess.ExpiresAt, n.now()), Scope: scope}, nil
	case grantTokenExchange:
		return n.tokenExchange(ctx, r, t)
	case "authorization_code":
		return n.authorizationCodeGrant(ctx, r, t)
	case "refresh_token":
		raw, refresh, sess, err := n.refresh(ctx, t, r.PostForm.Get("refresh_token"))
		if err != nil {
			return nil, err
		}
		return tokenResponse{AccessToken: raw, TokenType: "Bearer", ExpiresIn: secondsUntil(sess.ExpiresAt, n.now()), RefreshToken: refresh}, nil
	case "":
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		return nil, oauthErr(http.StatusBadRequest, "unsupported_grant_type", "supported: authorization_code, client_credentials, refresh_token, "+grantTokenExchange)
	}
}

// requestedTarget checks the audience and scope a client_credentials request asks for
// against the client's allow-lists and returns what the token gets: the audience (the
// tenant's issuer when none is asked for) and the granted scope (the requested scope
// tokens, repeats dropped). The audience comes from `resource` (RFC 8707: an absolute
// URI without fragment) or `audience`; both may be sent only when equal. Anything
// outside the lists is refused: invalid_target for the audience, invalid_scope for a
// scope (RFC 6749 §5.2); the description names the parameter and the value.
func requestedTarget(issuer string, c schema.Credential, form url.Values) (string, string, error) {
	resource, audience := form.Get("resource"), form.Get("audience")
	badTarget := func(format string, args ...any) error {
		return oauthErr(http.StatusBadRequest, "invalid_target", fmt.Sprintf(format, args...))
	}
	if resource != "" {
		if u, err := url.Parse(resource); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(resource, "#") || !schema.ValidAudience(resource) {
			return "", "", badTarget("resource: %s is not an absolute URI without a fragment (RFC 8707)", quoteParam(resource))
		}
		if audience != "" && audience != resource {
			return "", "", badTarget("audience and resource name different targets")
		}
		audience = resource
	}
	switch {
	case audience == "":
		audience = issuer
	case !schema.ValidAudience(audience):
		return "", "", badTarget("audience: %s is not a valid audience", quoteParam(audience))
	case audience != issuer && !slices.Contains(c.AllowedAudiences, audience):
		return "", "", badTarget("audience %s is not allowed for this %s", quoteParam(audience), holderOf(c))
	}
	scope := form.Get("scope")
	if len(scope) > 1024 {
		return "", "", oauthErr(http.StatusBadRequest, "invalid_scope", "scope: at most 1024 characters")
	}
	var granted []string
	for _, s := range strings.Split(scope, " ") {
		switch {
		case s == "" || slices.Contains(granted, s):
		case !schema.ValidScopeToken(s):
			return "", "", oauthErr(http.StatusBadRequest, "invalid_scope", "scope: "+quoteParam(s)+" is not a scope token (RFC 6749 §3.3)")
		case !slices.Contains(c.AllowedScopes, s):
			return "", "", oauthErr(http.StatusBadRequest, "invalid_scope", "scope "+quoteParam(s)+" is not allowed for this "+holderOf(c))
		default:
			granted = append(granted, s)
		}
	}
	return audience, strings.Join(granted, " "), nil
}

// holderOf names what holds an allow-list in errors: a client or an API key.
func holderOf(c schema.Credential) string {
	if c.Kind == schema.CredAPIKey {
		return "API key"
	}
	return "client"
}

// quoteParam quotes an untrusted request value for an error description, cut short.
func quoteParam(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

// secondsUntil is how many whole seconds (rounded) from now until t.
func secondsUntil(t, now time.Time) int64 { return int64(t.Sub(now).Round(time.Second) / time.Second) }

// introspect is RFC 7662. An admin client may introspect every token of the tenant;
// any other client only tokens issued to itself (admin.proto CreateClientRequest.admin):
// for others it gets {"active": false}, the answer RFC 7662 §2.2 prescribes for a
// token the caller is not allowed to introspect, so it learns nothing about them.
//
// The client's credentials and the token are read at once (two reads in flight, one
// round trip); nothing about the token is answered before the client is authenticated.
func (n *Node) introspect(ctx context.Context, _ http.ResponseWriter, r *http.Request, t schema.Tenant) (any, error) {
	raw := r.PostForm.Get("token")
	var v validation
	var verr error
	validated := make(chan struct{})
	if raw != "" {
		go func() {
			defer close(validated)
			v, verr = n.validate(ctx, t.ID, raw, "", false)
		}()
	} else {
		close(validated)
	}
	cl, err := n.authenticateClient(ctx, r, t)
	<-validated
	if err != nil {
		return nil, err
	}
	// Counted in the decision class once the client authenticated (limitHTTP only
	// refused it if the class was already spent).
	if err := n.limits.allowTenant(classDecisions, t, n.now()); err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "token is required")
	}
	if verr != nil {
		return nil, verr
	}
	n.metrics.validations.WithLabelValues(validationLabel(v)).Inc()
	if !v.Active || !cl.mayActOn(v.Claims.ClientID) {
		return map[string]any{"active": false}, nil
	}
	c := v.Claims
	out := map[string]any{
		"active": true, "token_type": "Bearer", "sub": c.Subject, "aud": c.Audience, "iss": c.Issuer,
		"exp": c.ExpiresAt.Unix(), "iat": c.IssuedAt.Unix(), "nbf": c.IssuedAt.Unix(), "jti": c.ID,
		"client_id": c.ClientID, "tenant": c.Tenant, "sid": c.SessionID, "region": c.Region,
	}
	if c.Scope != "" {
		out["scope"] = c.Scope
	}
	if len(c.AMR) > 0 {
		out["amr"] = c.AMR
	}
	return out, nil
}

func (n *Node) revokeEndpoint(ctx context.Context, _ http.ResponseWriter, r *http.Request, t schema.Tenant) (any, error) {
	c, err := n.authenticateClient(ctx, r, t)
	if err != nil {
		return nil, err
	}
	raw := r.PostForm.Get("token")
	if raw == "" {
		return nil, oauthErr(http.StatusBadRequest, "invalid_request", "token is required")
	}
	if err := n.revokeByToken(ctx, t, raw, c.mayActOn); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
