package region

import (
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/keyplane/keyplane/schema"
)

// ACR values keyplane's ID tokens carry and authorization requests may ask for
// (acr_values): acrMFA is a login with a second factor (password and TOTP, or a
// recovery code), acrPassword a password alone. Asking for acrMFA is step-up: a
// session without a second factor logs in again, with one.
const (
	acrPassword = "pwd"
	acrMFA      = "mfa"
)

// The scopes the OpenID Provider knows besides a client's allowed scopes.
var oidcScopes = []string{"openid", "profile", "email"}

// authRequest is a parsed authorization request (OIDC Core §3.1.2.1, RFC 7636).
type authRequest struct {
	ClientID      string
	RedirectURI   string
	Scopes        []string // sorted, without repeats
	State         string
	Nonce         string
	CodeChallenge string
	Prompt        []string // none, login, consent
	MaxAge        int64    // -1: not sent
	ACRValues     []string
}

func (a authRequest) prompt(p string) bool { return slices.Contains(a.Prompt, p) }

// wantsMFA reports whether the request asks for a second factor.
func (a authRequest) wantsMFA() bool { return slices.Contains(a.ACRValues, acrMFA) }

// scope is the granted scope string.
func (a authRequest) scope() string { return strings.Join(a.Scopes, " ") }

// authError is an authorization error (RFC 6749 §4.1.2.1): sent to the redirect URI
// when redirectable, else shown on an error page (an unknown client or a redirect URI
// that is not registered must never be redirected to).
type authError struct {
	Code         string
	Description  string
	redirectable bool
}

func (e *authError) Error() string { return e.Code + ": " + e.Description }

func badAuthRequest(desc string) *authError {
	return &authError{Code: "invalid_request", Description: desc, redirectable: true}
}

// Limits of authorization request parameters.
const (
	maxStateLen = 1024
	maxNonceLen = 512
)

// parseAuthRequest parses the parameters of an authorization request. It never fails
// on client_id and redirect_uri beyond their form: those are checked against the
// client's registration by the caller before any error is redirected. A returned error
// with redirectable false concerns client_id or redirect_uri; any other is to be
// redirected once they are known good. The request is returned as far as it parsed.
func parseAuthRequest(q url.Values) (authRequest, *authError) {
	req := authRequest{MaxAge: -1}
	for _, k := range []string{"client_id", "redirect_uri"} {
		if len(q[k]) > 1 {
			return req, &authError{Code: "invalid_request", Description: k + " repeated"}
		}
	}
	req.ClientID, req.RedirectURI = q.Get("client_id"), q.Get("redirect_uri")
	switch {
	case req.ClientID == "":
		return req, &authError{Code: "invalid_request", Description: "client_id is required"}
	case len(req.ClientID) > 64 || !schema.ValidScopeToken(req.ClientID):
		return req, &authError{Code: "invalid_request", Description: "client_id: not a client id"}
	case req.RedirectURI == "":
		return req, &authError{Code: "invalid_request", Description: "redirect_uri is required (keyplane matches it exactly against the client's registered redirect URIs)"}
	case !schema.ValidRedirectURI(req.RedirectURI):
		return req, &authError{Code: "invalid_request", Description: "redirect_uri: not a valid redirect URI"}
	}
	// From here on errors go back to the client (once it and its redirect URI check out).
	for k, v := range q {
		if len(v) > 1 {
			return req, badAuthRequest("parameter " + quoteParam(k) + " repeated")
		}
	}
	req.State = q.Get("state")
	if len(req.State) > maxStateLen {
		req.State = ""
		return req, badAuthRequest("state: at most " + strconv.Itoa(maxStateLen) + " characters")
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		return req, badAuthRequest("response_type is required: code")
	default:
		return req, &authError{Code: "unsupported_response_type", Description: "response_type: only code (the authorization-code flow) is supported", redirectable: true}
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		return req, badAuthRequest("response_mode: only query is supported")
	}
	for _, p := range []string{"request", "request_uri", "registration"} {
		if q.Has(p) {
			return req, &authError{Code: p + "_not_supported", Description: p + " is not supported", redirectable: true}
		}
	}
	scope := q.Get("scope")
	if len(scope) > 1024 {
		return req, &authError{Code: "invalid_scope", Description: "scope: at most 1024 characters", redirectable: true}
	}
	for s := range strings.SplitSeq(scope, " ") {
		switch {
		case s == "" || slices.Contains(req.Scopes, s):
		case !schema.ValidScopeToken(s):
			return req, &authError{Code: "invalid_scope", Description: "scope: " + quoteParam(s) + " is not a scope token (RFC 6749 §3.3)", redirectable: true}
		default:
			req.Scopes = append(req.Scopes, s)
		}
	}
	slices.Sort(req.Scopes)
	if !slices.Contains(req.Scopes, "openid") {
		return req, &authError{Code: "invalid_scope", Description: "scope: openid is required (this is an OpenID Connect authorization endpoint)", redirectable: true}
	}
	req.CodeChallenge = q.Get("code_challenge")
	switch m := q.Get("code_challenge_method"); {
	case req.CodeChallenge == "":
		return req, badAuthRequest("code_challenge is required: PKCE (RFC 7636) with code_challenge_method S256")
	case m == "":
		return req, badAuthRequest("code_challenge_method is required: S256 (plain is not accepted)")
	case m != "S256":
		return req, badAuthRequest("code_challenge_method: only S256 is supported, not " + quoteParam(m))
	case len(req.CodeChallenge) != 43 || !unreserved(req.CodeChallenge):
		return req, badAuthRequest("code_challenge: an S256 challenge is 43 characters of base64url (RFC 7636 §4.2)")
	}
	req.Nonce = q.Get("nonce")
	if len(req.Nonce) > maxNonceLen {
		return req, badAuthRequest("nonce: at most " + strconv.Itoa(maxNonceLen) + " characters")
	}
	for p := range strings.SplitSeq(q.Get("prompt"), " ") {
		switch p {
		case "":
		case "none", "login", "consent":
			if !slices.Contains(req.Prompt, p) {
				req.Prompt = append(req.Prompt, p)
			}
		case "select_account":
			return req, &authError{Code: "account_selection_required", Description: "prompt: select_account is not supported", redirectable: true}
		default:
			return req, badAuthRequest("prompt: " + quoteParam(p) + " is not none, login or consent")
		}
	}
	if req.prompt("none") && len(req.Prompt) > 1 {
		return req, badAuthRequest("prompt: none cannot be combined with other values")
	}
	if ma := q.Get("max_age"); ma != "" {
		v, err := strconv.ParseInt(ma, 10, 64)
		if err != nil || v < 0 || v > 1<<31 {
			return req, badAuthRequest("max_age: a number of seconds, 0 or more")
		}
		req.MaxAge = v
	}
	acr := q.Get("acr_values")
	if len(acr) > 256 {
		return req, badAuthRequest("acr_values: at most 256 characters")
	}
	for a := range strings.SplitSeq(acr, " ") {
		if a != "" && !slices.Contains(req.ACRValues, a) {
			req.ACRValues = append(req.ACRValues, a)
		}
	}
	return req, nil
}

// unreserved reports whether s is made of RFC 3986 unreserved characters (the PKCE
// alphabet, RFC 7636 §4.1).
func unreserved(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}
