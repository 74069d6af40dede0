package region

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/keyplane/keyplane/region/token"
	"github.com/keyplane/keyplane/schema"
)

// Token exchange (RFC 8693) for workload identity federation (docs/federation.md).
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	maxSubjectToken      = 16 << 10
	// iatLeeway is how far in the future an external token's iat may be (clock skew).
	iatLeeway = time.Minute
	// jtiMargin is how much longer than the token's remaining lifetime (by this node's
	// clock) its jti is kept: for the other nodes, whose clocks may be behind this one's.
	jtiMargin = 5 * time.Minute
)

// exchangeForm is a token-exchange request's parameters, checked.
type exchangeForm struct {
	subjectToken string
}

// parseExchangeForm checks the RFC 8693 §2.1 parameters keyplane needs: a subject
// token of type jwt or id_token, no actor token, and access_token (or nothing) as the
// requested type. Audience, resource and scope are checked against the policy later.
func parseExchangeForm(form url.Values) (exchangeForm, error) {
	bad := func(desc string) error { return oauthErr(http.StatusBadRequest, "invalid_request", desc) }
	st := form.Get("subject_token")
	switch {
	case st == "":
		return exchangeForm{}, bad("subject_token is required")
	case len(st) > maxSubjectToken:
		return exchangeForm{}, bad(fmt.Sprintf("subject_token: at most %d bytes", maxSubjectToken))
	}
	switch tt := form.Get("subject_token_type"); tt {
	case tokenTypeJWT, tokenTypeIDToken:
	case "":
		return exchangeForm{}, bad("subject_token_type is required (" + tokenTypeJWT + " or " + tokenTypeIDToken + ")")
	default:
		return exchangeForm{}, bad("subject_token_type: " + quoteParam(tt) + " is not supported: use " + tokenTypeJWT + " or " + tokenTypeIDToken)
	}
	if form.Get("actor_token") != "" || form.Get("actor_token_type") != "" {
		return exchangeForm{}, bad("actor_token: delegation is not supported")
	}
	switch rt := form.Get("requested_token_type"); rt {
	case "", tokenTypeAccessToken:
	default:
		return exchangeForm{}, bad("requested_token_type: " + quoteParam(rt) + " is not supported: only " + tokenTypeAccessToken)
	}
	return exchangeForm{subjectToken: st}, nil
}

// peekedToken is what an external token says before it is verified: only used to find
// the trust policies to verify it with.
type peekedToken struct {
	Issuer    string
	Audiences []string
	Alg       string
}

// peekToken reads iss and aud from a compact JWS's payload and alg from its header,
// without verifying anything.
func peekToken(raw string) (peekedToken, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return peekedToken{}, errors.New("not a compact JWT (three dot-separated parts)")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return peekedToken{}, fmt.Errorf("header: %w", err)
	}
	var payload struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := decodeSegment(parts[1], &payload); err != nil {
		return peekedToken{}, fmt.Errorf("payload: %w", err)
	}
	p := peekedToken{Issuer: payload.Iss, Alg: header.Alg}
	if len(payload.Aud) > 0 {
		var one string
		if err := json.Unmarshal(payload.Aud, &one); err == nil {
			p.Audiences = []string{one}
		} else if err := json.Unmarshal(payload.Aud, &p.Audiences); err != nil {
			return peekedToken{}, errors.New("aud is neither a string nor an array of strings")
		}
	}
	if p.Issuer == "" {
		return peekedToken{}, errors.New("iss is missing")
	}
	return p, nil
}

func decodeSegment(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return errors.New("not base64url")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.New("not a JSON object")
	}
	return nil
}

// exchangeRefusal is a refused exchange: the rule that failed and what the client is
// told (and the audit event records).
type exchangeRefusal struct {
	code, rule, desc string
	policyID         string
	subject          string
}

func (r *exchangeRefusal) Error() string { return r.rule + ": " + r.desc }

func refuse(rule, format string, args ...any) *exchangeRefusal {
	return &exchangeRefusal{code: "invalid_grant", rule: rule, desc: fmt.Sprintf(format, args...)}
}

// tokenExchange is the token endpoint's token-exchange grant. No client
// authentication: the subject token is the credential. Every refusal by a rule is
// answered with invalid_grant (invalid_request for a malformed request,
// invalid_target / invalid_scope for an audience or scope outside the policy), naming
// the rule, and audited as federation.exchange_refused; a success is audited as
// federation.exchange in the transaction that opens the session.
func (n *Node) tokenExchange(ctx context.Context, r *http.Request, t schema.Tenant) (any, error) {
	f, err := parseExchangeForm(r.PostForm)
	var oe *oauthError
	if errors.As(err, &oe) {
		return nil, n.refuseExchange(ctx, t, "", &exchangeRefusal{code: oe.Code, rule: "request", desc: oe.Description})
	}
	peek, err := peekToken(f.subjectToken)
	if err != nil {
		return nil, n.refuseExchange(ctx, t, "", &exchangeRefusal{code: "invalid_request", rule: "malformed", desc: "subject_token: " + err.Error()})
	}
	res, err := n.judgeExchange(ctx, r.PostForm, t, f, peek)
	var rf *exchangeRefusal
	if errors.As(err, &rf) {
		return nil, n.refuseExchange(ctx, t, peek.Issuer, rf)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// exchangeResponse is RFC 8693 §2.2.1.
type exchangeResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

func (n *Node) judgeExchange(ctx context.Context, form url.Values, t schema.Tenant, f exchangeForm, peek peekedToken) (any, error) {
	sc := t.Scope()
	policies, err := n.store.TrustPoliciesFor(ctx, sc, peek.Issuer)
	if err != nil {
		return nil, err
	}
	if len(policies) == 0 {
		return nil, refuse("untrusted_issuer", "no trust policy of this tenant trusts issuer %s", quoteParam(peek.Issuer))
	}
	var candidates []schema.TrustPolicy
	var algs []string
	for _, p := range policies {
		if slices.ContainsFunc(peek.Audiences, func(a string) bool { return slices.Contains(p.Audiences, a) }) {
			candidates = append(candidates, p)
			for _, a := range p.Algorithms {
				if !slices.Contains(algs, a) {
					algs = append(algs, a)
				}
			}
		}
	}
	if len(candidates) == 0 {
		return nil, refuse("audience", "the token's aud is not an audience any trust policy of issuer %s accepts", quoteParam(peek.Issuer))
	}
	if !slices.Contains(algs, peek.Alg) {
		return nil, refuse("algorithm", "alg %s is not allowed by the trust policies of this issuer (allowed: %s)", quoteParam(peek.Alg), strings.Join(algs, ", "))
	}
	v, err := n.issuers.get(peek.Issuer).verifier(ctx, algs, n.now)
	if err != nil {
		n.log.WarnContext(ctx, "federation: issuer discovery failed", "issuer", peek.Issuer, "err", err)
		return nil, refuse("issuer_unreachable", "the issuer's discovery document could not be fetched")
	}
	idt, err := v.Verify(ctx, f.subjectToken)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return nil, refuse("expired", "the token expired at %s", exp.Expiry.UTC().Format(time.RFC3339))
		}
		if strings.Contains(err.Error(), "nbf") {
			return nil, refuse("not_yet_valid", "the token is not valid yet (nbf)")
		}
		n.log.InfoContext(ctx, "federation: token did not verify", "issuer", peek.Issuer, "err", err)
		return nil, refuse("signature", "the token's signature did not verify with the issuer's keys")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, refuse("malformed", "the token's claims are not a JSON object")
	}
	jti, _ := claims["jti"].(string)
	var failed []*exchangeRefusal
	for _, p := range candidates {
		rf := n.judgePolicy(p, peek.Alg, idt, jti, claims)
		if rf == nil {
			return n.completeExchange(ctx, form, t, p, idt, jti)
		}
		rf.policyID, rf.subject = p.ID, idt.Subject
		failed = append(failed, rf)
	}
	if len(failed) == 1 {
		return nil, failed[0]
	}
	descs := make([]string, len(failed))
	for i, rf := range failed {
		descs[i] = fmt.Sprintf("policy %s: %s", quoteParam(candidates[i].Name), rf.desc)
	}
	return nil, &exchangeRefusal{code: "invalid_grant", rule: "no_policy_matched", subject: idt.Subject,
		desc: "no trust policy accepts the token: " + strings.Join(descs, "; ")}
}

// judgePolicy checks a verified token against one policy's own rules: algorithm, age,
// jti and the condition. nil means it passes.
func (n *Node) judgePolicy(p schema.TrustPolicy, alg string, idt *oidc.IDToken, jti string, claims map[string]any) *exchangeRefusal {
	now := n.now()
	switch {
	case !slices.Contains(p.Algorithms, alg):
		return refuse("algorithm", "alg %s is not allowed by this trust policy (allowed: %s)", quoteParam(alg), strings.Join(p.Algorithms, ", "))
	case !slices.ContainsFunc(idt.Audience, func(a string) bool { return slices.Contains(p.Audiences, a) }):
		return refuse("audience", "the token's aud is not an audience this trust policy accepts")
	case idt.IssuedAt.IsZero():
		return refuse("iat", "the token has no iat: its age cannot be checked")
	case idt.IssuedAt.After(now.Add(iatLeeway)):
		return refuse("iat", "the token's iat is in the future")
	case now.Sub(idt.IssuedAt) > p.MaxAge:
		return refuse("too_old", "the token was issued %s ago, more than the trust policy's maximum age of %s",
			now.Sub(idt.IssuedAt).Round(time.Second), p.MaxAge)
	case jti == "" && !p.AllowMissingJTI:
		return refuse("jti_missing", "the token has no jti (its replay cannot be detected) and the trust policy requires one")
	}
	ok, err := n.claimsEnv.Holds(p.Condition, claims)
	if err != nil {
		return refuse("condition", "the trust policy's condition could not be evaluated on the token's claims (%s)", conditionError(err))
	}
	if !ok {
		return refuse("condition", "the trust policy's condition is false for the token's claims")
	}
	return nil
}

// conditionError shortens a CEL evaluation error for a client.
func conditionError(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// completeExchange checks the requested audience and scope against the policy,
// records the exchange (refusing a replayed jti) and mints the token.
func (n *Node) completeExchange(ctx context.Context, form url.Values, t schema.Tenant, p schema.TrustPolicy, idt *oidc.IDToken, jti string) (any, error) {
	audience, scope, err := requestedTarget(n.Issuer(t.ID), schema.Credential{AllowedAudiences: p.AllowedAudiences, AllowedScopes: p.AllowedScopes}, form)
	if err != nil {
		var oe *oauthError
		if errors.As(err, &oe) {
			return nil, &exchangeRefusal{code: oe.Code, rule: "target", desc: oe.Description, policyID: p.ID, subject: idt.Subject}
		}
		return nil, err
	}
	ring, err := n.keys.signer(ctx, signingAlg(t))
	if err != nil {
		return nil, err
	}
	ttl := t.AccessTokenTTL
	if ttl <= 0 {
		ttl = schema.DefaultAccessTokenTTL
	}
	now := n.now()
	c := schema.Change{Actor: "federation:" + p.ID, ActorKind: "federation", RequestID: requestID(ctx)}
	sess, err := n.store.CompleteExchange(ctx, c, t.Scope(), schema.Exchange{
		PolicyID: p.ID, PolicyName: p.Name, Issuer: idt.Issuer, Subject: idt.Subject, JTI: jti,
		KeepFor:  max(idt.Expiry.Sub(now), 0) + jtiMargin,
		Audience: audience, Scope: scope,
	}, schema.NewSession{IdentityID: p.IdentityID, GrantType: "token_exchange", AMR: []string{}, ExpiresAt: now.Add(ttl)})
	switch {
	case errors.Is(err, schema.ErrTokenReplay):
		return nil, &exchangeRefusal{code: "invalid_grant", rule: "replay", desc: "the token was already exchanged (jti replay)", policyID: p.ID, subject: idt.Subject}
	case errors.Is(err, schema.ErrPrecondition), errors.Is(err, schema.ErrNotFound):
		return nil, &exchangeRefusal{code: "invalid_grant", rule: "identity", desc: "the trust policy's identity is not active", policyID: p.ID, subject: idt.Subject}
	case err != nil:
		return nil, err
	}
	raw, err := n.mint(ring, grant{Tenant: t, IdentityID: p.IdentityID, GrantType: "token_exchange", Audience: audience, Scope: scope,
		Act: &token.Actor{Subject: idt.Subject, Issuer: idt.Issuer}}, sess.ID, now, ttl)
	if err != nil {
		return nil, err
	}
	n.spendTokens(t)
	n.metrics.federationExchanges.WithLabelValues("ok").Inc()
	return exchangeResponse{AccessToken: raw, IssuedTokenType: tokenTypeAccessToken, TokenType: "Bearer",
		ExpiresIn: secondsUntil(now.Add(ttl), n.now()), Scope: scope}, nil
}

// refuseExchange audits a refused exchange (never the token) and returns the RFC 6749
// error the client gets. If the audit event cannot be written the refusal still
// stands.
func (n *Node) refuseExchange(ctx context.Context, t schema.Tenant, issuer string, rf *exchangeRefusal) error {
	n.metrics.federationExchanges.WithLabelValues(rf.rule).Inc()
	c := schema.Change{Actor: "token-holder", ActorKind: "external", RequestID: requestID(ctx)}
	if err := n.store.RecordExchangeRefusal(ctx, c, t.Scope(), schema.ExchangeRefusal{
		Rule: rf.rule, Reason: rf.desc, Issuer: issuer, Subject: rf.subject, PolicyID: rf.policyID,
	}); err != nil {
		n.log.WarnContext(ctx, "federation: could not audit a refused exchange", "rule", rf.rule, "err", err)
	}
	return oauthErr(http.StatusBadRequest, rf.code, rf.rule+": "+rf.desc)
}
