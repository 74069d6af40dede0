package schema

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Workload identity federation (docs/federation.md): a trust policy lets a workload
// exchange a token from an external OIDC issuer (a CI system, a Kubernetes cluster)
// for a keyplane access token of one non-human identity. An identity a policy maps to
// is federated: it holds no API key or client secret (CreateKeyCredential refuses
// one, and a policy is refused for an identity that still has one). The conditions
// are CEL, checked by the region: the store knows no CEL.

// TrustPolicy trusts tokens of one external issuer for one identity.
type TrustPolicy struct {
	ID          string
	Name        string
	Description string
	// Issuer is the external issuer's URL exactly as its tokens' iss claim says:
	// https, or http only on a loopback host (ValidIssuer).
	Issuer string
	// Audiences are the aud values accepted (one must be in the token's aud).
	Audiences []string
	// Algorithms the token may be signed with; never none or HS*.
	Algorithms []string
	// Condition is CEL over the token's claims (claims.<name>); it must hold.
	Condition string
	// MaxAge is how old (by iat) a token may be.
	MaxAge time.Duration
	// IdentityID is the non-human identity the minted token is for.
	IdentityID string
	// AllowedAudiences and AllowedScopes bound what the exchange may ask for, as a
	// client's allow-lists do.
	AllowedAudiences []string
	AllowedScopes    []string
	// AllowMissingJTI accepts tokens without a jti (which cannot be checked for
	// replay). Off unless set.
	AllowMissingJTI bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Trust policy limits and defaults.
const (
	DefaultFederationMaxAge = time.Hour
	MaxFederationMaxAge     = 24 * time.Hour
	maxFederationAudiences  = 20
	maxFederationCondition  = 4096
)

// DefaultFederationAlgorithms are the algorithms a trust policy accepts when it names
// none.
var DefaultFederationAlgorithms = []string{"RS256", "ES256"}

// federationAlgorithms are the asymmetric JWS algorithms a policy may allow.
var federationAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// ErrTokenReplay means an external token (issuer, jti) was already exchanged.
var ErrTokenReplay = errors.New("token already exchanged (jti replay)")

// ValidIssuer checks an external issuer URL: absolute, https (or http on a loopback
// host: 127.0.0.0/8, ::1 or localhost, for tests and demos), no user info, query or
// fragment, at most 512 bytes.
func ValidIssuer(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if len(s) > MaxAudienceLen || !printableToken(s) {
		return fmt.Errorf("at most %d printable ASCII characters without spaces", MaxAudienceLen)
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("must be an absolute URL like https://token.actions.githubusercontent.com")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Contains(s, "#") || strings.Contains(s, "?") {
		return errors.New("must have no user info, query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if LoopbackHost(u.Hostname()) {
			return nil
		}
		return errors.New("must be https (http only on a loopback host)")
	}
	return errors.New("must be https (http only on a loopback host)")
}

// LoopbackHost reports whether host is localhost or a loopback IP address.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkTrustPolicy validates p's fields and fills the defaults (algorithms, max age);
// it sorts the lists.
func checkTrustPolicy(p *TrustPolicy) error {
	if err := checkText("name", p.Name, true, 200); err != nil {
		return err
	}
	if err := checkText("description", p.Description, false, 500); err != nil {
		return err
	}
	if err := ValidIssuer(p.Issuer); err != nil {
		return fieldErr("issuer", "%s", err)
	}
	if len(p.Audiences) == 0 {
		return fieldErr("audiences", "required: at least one audience the external tokens carry")
	}
	if len(p.Audiences) > maxFederationAudiences {
		return fieldErr("audiences", "at most %d, got %d", maxFederationAudiences, len(p.Audiences))
	}
	auds, err := checkAllowList("audiences", p.Audiences, ValidAudience, "an audience (printable ASCII without spaces, quotes or a fragment)")
	if err != nil {
		return err
	}
	p.Audiences = auds
	if len(p.Algorithms) == 0 {
		p.Algorithms = slices.Clone(DefaultFederationAlgorithms)
	}
	algs, err := checkAllowList("algorithms", p.Algorithms, func(a string) bool { return slices.Contains(federationAlgorithms, a) },
		"an allowed algorithm ("+strings.Join(federationAlgorithms, ", ")+"; never none or HS*)")
	if err != nil {
		return err
	}
	p.Algorithms = algs
	if strings.TrimSpace(p.Condition) == "" {
		return fieldErr("condition", "required (a CEL expression over claims; write true to accept every token of the issuer and audience)")
	}
	if len(p.Condition) > maxFederationCondition {
		return fieldErr("condition", "at most %d bytes, got %d", maxFederationCondition, len(p.Condition))
	}
	if p.MaxAge == 0 {
		p.MaxAge = DefaultFederationMaxAge
	}
	if p.MaxAge < time.Second || p.MaxAge > MaxFederationMaxAge {
		return fieldErr("max_token_age", "between 1s and %s, got %s", MaxFederationMaxAge, p.MaxAge)
	}
	if _, err := parseID("identity_id", p.IdentityID); err != nil {
		return err
	}
	a, s, err := CheckAllowLists(p.AllowedAudiences, p.AllowedScopes)
	if err != nil {
		return err
	}
	p.AllowedAudiences, p.AllowedScopes = a, s
	return nil
}

// checkFederable refuses to map a policy to an identity that is human, not active, or
// holds a static secret (an unrevoked, unexpired API key or client secret: each named).
func checkFederable(ctx context.Context, tx pgx.Tx, sc Scope, identityID string) error {
	id, err := getIdentity(ctx, tx, sc, identityID, "")
	if errors.Is(err, ErrNotFound) {
		return fieldErr("identity_id", "no identity %s in tenant %q", identityID, sc.TenantID)
	}
	if err != nil {
		return err
	}
	if id.IsHuman() {
		return fieldErr("identity_id", "identity %s is human: federation maps workloads to non-human identities", identityID)
	}
	if id.Status != StatusActive {
		return inactiveIdentity("identity_id", id)
	}
	rows, err := tx.Query(ctx, `SELECT id::TEXT, kind FROM credentials
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3 AND kind IN ('api_key', 'client_secret')
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at, id`, sc.Region, sc.TenantID, identityID)
	if err != nil {
		return fmt.Errorf("read static credentials: %w", err)
	}
	secrets, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var id, kind string
		err := r.Scan(&id, &kind)
		return kind + " " + id, err
	})
	if err != nil {
		return fmt.Errorf("read static credentials: %w", err)
	}
	if len(secrets) > 0 {
		return fmt.Errorf("%w: identity_id: identity %s holds static secrets (%s): revoke them before federating it",
			ErrPrecondition, identityID, strings.Join(secrets, ", "))
	}
	return nil
}

// refuseFederated refuses a static secret for an identity a trust policy maps to.
func refuseFederated(ctx context.Context, q querier, sc Scope, identityID string) error {
	var names []string
	rows, err := q.Query(ctx, `SELECT name FROM federation_policies WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3 ORDER BY name`,
		sc.Region, sc.TenantID, identityID)
	if err != nil {
		return fmt.Errorf("read trust policies: %w", err)
	}
	if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read trust policies: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: identity_id: identity %s is federated (trust policies %s): it gets tokens by token exchange and holds no static secret",
			ErrPrecondition, identityID, strings.Join(names, ", "))
	}
	return nil
}

// IsFederated reports whether a trust policy maps to identity id.
func (s *Store) IsFederated(ctx context.Context, sc Scope, id string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM federation_policies WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3)`,
		sc.Region, sc.TenantID, id).Scan(&ok)
	return ok, classify(err)
}

// CreateTrustPolicy stores a trust policy, with its audit event. The condition must
// already be checked by the caller.
func (s *Store) CreateTrustPolicy(ctx context.Context, c Change, sc Scope, p TrustPolicy) (TrustPolicy, error) {
	if err := checkTrustPolicy(&p); err != nil {
		return TrustPolicy{}, err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFederable(ctx, tx, sc, p.IdentityID); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO federation_policies (tenant_id, crdb_region, name, description, issuer, audiences, algorithms,
  condition, max_age_seconds, identity_id, allowed_audiences, allowed_scopes, allow_missing_jti)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id::TEXT, created_at, updated_at`,
			sc.TenantID, sc.Region, p.Name, p.Description, p.Issuer, p.Audiences, p.Algorithms, p.Condition, int64(p.MaxAge/time.Second),
			p.IdentityID, p.AllowedAudiences, p.AllowedScopes, p.AllowMissingJTI).Scan(&p.ID, &p.CreatedAt, &p.UpdatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return fieldErrConflict("name", "a trust policy named %q exists", p.Name)
			}
			return fmt.Errorf("insert trust policy: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "federation.policy.create", targetKind: "trust_policy", targetID: p.ID, after: policySummary(p)})
	})
	if err != nil {
		return TrustPolicy{}, err
	}
	return p, nil
}

// TrustPolicyUpdate lists the fields to change; nil fields stay as they are.
type TrustPolicyUpdate struct {
	Name, Description, Issuer, Condition, IdentityID       *string
	Audiences, Algorithms, AllowedAudiences, AllowedScopes *[]string
	MaxAge                                                 *time.Duration
	AllowMissingJTI                                        *bool
}

// UpdateTrustPolicy changes a trust policy, with its audit event (before and after).
func (s *Store) UpdateTrustPolicy(ctx context.Context, c Change, sc Scope, id string, u TrustPolicyUpdate) (TrustPolicy, error) {
	if _, err := parseID("id", id); err != nil {
		return TrustPolicy{}, err
	}
	var out TrustPolicy
	err := s.tx(ctx, func(tx pgx.Tx) error {
		before, err := getTrustPolicy(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return err
		}
		out = before
		set := func(dst *string, v *string) {
			if v != nil {
				*dst = *v
			}
		}
		set(&out.Name, u.Name)
		set(&out.Description, u.Description)
		set(&out.Issuer, u.Issuer)
		set(&out.Condition, u.Condition)
		set(&out.IdentityID, u.IdentityID)
		for _, l := range []struct{ dst, v *[]string }{{&out.Audiences, u.Audiences}, {&out.Algorithms, u.Algorithms},
			{&out.AllowedAudiences, u.AllowedAudiences}, {&out.AllowedScopes, u.AllowedScopes}} {
			if l.v != nil {
				*l.dst = slices.Clone(*l.v)
			}
		}
		if u.MaxAge != nil {
			out.MaxAge = *u.MaxAge
		}
		if u.AllowMissingJTI != nil {
			out.AllowMissingJTI = *u.AllowMissingJTI
		}
		if err := checkTrustPolicy(&out); err != nil {
			return err
		}
		if out.IdentityID != before.IdentityID {
			if err := checkFederable(ctx, tx, sc, out.IdentityID); err != nil {
				return err
			}
		}
		err = tx.QueryRow(ctx, `UPDATE federation_policies SET name = $4, description = $5, issuer = $6, audiences = $7, algorithms = $8,
  condition = $9, max_age_seconds = $10, identity_id = $11, allowed_audiences = $12, allowed_scopes = $13, allow_missing_jti = $14, updated_at = now()
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING updated_at`, sc.Region, sc.TenantID, id,
			out.Name, out.Description, out.Issuer, out.Audiences, out.Algorithms, out.Condition, int64(out.MaxAge/time.Second),
			out.IdentityID, out.AllowedAudiences, out.AllowedScopes, out.AllowMissingJTI).Scan(&out.UpdatedAt)
		if err != nil {
			if errors.Is(classify(err), ErrConflict) {
				return fieldErrConflict("name", "a trust policy named %q exists", out.Name)
			}
			return fmt.Errorf("update trust policy: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "federation.policy.update", targetKind: "trust_policy", targetID: id,
			before: policySummary(before), after: policySummary(out)})
	})
	if err != nil {
		return TrustPolicy{}, err
	}
	return out, nil
}

// DeleteTrustPolicy removes a trust policy, with its audit event. Tokens already
// minted through it stay valid until they expire (revoke the identity's sessions to
// end them).
func (s *Store) DeleteTrustPolicy(ctx context.Context, c Change, sc Scope, id string) error {
	if _, err := parseID("id", id); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		before, err := getTrustPolicy(ctx, tx, sc, id, " FOR UPDATE")
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM federation_policies WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`,
			sc.Region, sc.TenantID, id); err != nil {
			return fmt.Errorf("delete trust policy: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "federation.policy.delete", targetKind: "trust_policy", targetID: id, before: policySummary(before)})
	})
}

// GetTrustPolicy reads one trust policy.
func (s *Store) GetTrustPolicy(ctx context.Context, sc Scope, id string) (TrustPolicy, error) {
	if _, err := parseID("id", id); err != nil {
		return TrustPolicy{}, err
	}
	return getTrustPolicy(ctx, s.pool, sc, id, "")
}

// ListTrustPolicies pages through the tenant's trust policies, oldest first.
func (s *Store) ListTrustPolicies(ctx context.Context, sc Scope, p Page) ([]TrustPolicy, string, error) {
	limit, err := p.limit()
	if err != nil {
		return nil, "", err
	}
	after, err := p.timeKeyed()
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+trustPolicyColumns+` FROM federation_policies
WHERE crdb_region = $1 AND tenant_id = $2 AND (created_at, id) > ($3, $4::UUID) ORDER BY created_at, id LIMIT $5`,
		sc.Region, sc.TenantID, after.At, after.ID, limit+1)
	if err != nil {
		return nil, "", classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TrustPolicy, error) { return scanTrustPolicy(r) })
	if err != nil {
		return nil, "", classify(err)
	}
	out, next := pageOf(out, limit, func(p TrustPolicy) timeKey { return timeKey{p.CreatedAt, p.ID} })
	return out, next, nil
}

// TrustPoliciesFor reads the tenant's trust policies of issuer, by name (at most 100).
func (s *Store) TrustPoliciesFor(ctx context.Context, sc Scope, issuer string) ([]TrustPolicy, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+trustPolicyColumns+` FROM federation_policies
WHERE crdb_region = $1 AND tenant_id = $2 AND issuer = $3 ORDER BY name LIMIT 100`, sc.Region, sc.TenantID, issuer)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TrustPolicy, error) { return scanTrustPolicy(r) })
	return out, classify(err)
}

const trustPolicyColumns = `id::TEXT, name, description, issuer, audiences, algorithms, condition, max_age_seconds, identity_id::TEXT,
  allowed_audiences, allowed_scopes, allow_missing_jti, created_at, updated_at`

func scanTrustPolicy(r pgx.Row) (TrustPolicy, error) {
	var p TrustPolicy
	var age int64
	err := r.Scan(&p.ID, &p.Name, &p.Description, &p.Issuer, &p.Audiences, &p.Algorithms, &p.Condition, &age, &p.IdentityID,
		&p.AllowedAudiences, &p.AllowedScopes, &p.AllowMissingJTI, &p.CreatedAt, &p.UpdatedAt)
	p.MaxAge = time.Duration(age) * time.Second
	return p, err
}

func getTrustPolicy(ctx context.Context, q querier, sc Scope, id, lock string) (TrustPolicy, error) {
	p, err := scanTrustPolicy(q.QueryRow(ctx, `SELECT `+trustPolicyColumns+` FROM federation_policies WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`+lock,
		sc.Region, sc.TenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return TrustPolicy{}, fmt.Errorf("%w: trust policy %s", ErrNotFound, id)
	}
	if err != nil {
		return TrustPolicy{}, fmt.Errorf("read trust policy: %w", err)
	}
	return p, nil
}

func policySummary(p TrustPolicy) map[string]any {
	return map[string]any{"name": p.Name, "issuer": p.Issuer, "audiences": p.Audiences, "algorithms": p.Algorithms,
		"condition": p.Condition, "max_age_seconds": int64(p.MaxAge / time.Second), "identity_id": p.IdentityID,
		"allowed_audiences": p.AllowedAudiences, "allowed_scopes": p.AllowedScopes, "allow_missing_jti": p.AllowMissingJTI}
}

// Exchange is a verified external token being exchanged under a trust policy.
type Exchange struct {
	PolicyID, PolicyName string
	Issuer, Subject      string
	JTI                  string // "" when the policy allows tokens without one
	// KeepFor is how long the jti is kept, from the database's now(): the external
	// token's remaining lifetime as the node judged it, and a margin. The database
	// prunes jtis by its own clock, so the window is measured on it: a node whose
	// clock is behind must not see a jti forgotten while it still accepts the token.
	KeepFor         time.Duration
	Audience, Scope string // of the minted token
}

// CompleteExchange records a token exchange in one transaction: the external token's
// (issuer, jti) is inserted if absent (ErrTokenReplay if present: one statement), the
// identity is checked active and non-human, the session is opened and the
// "federation.exchange" audit event written. Expired jti entries of the tenant are
// pruned in the same transaction.
func (s *Store) CompleteExchange(ctx context.Context, c Change, sc Scope, x Exchange, ns NewSession) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM federation_jtis WHERE crdb_region = $1 AND tenant_id = $2 AND expires_at < now()`,
			sc.Region, sc.TenantID); err != nil {
			return fmt.Errorf("prune exchanged tokens: %w", err)
		}
		if x.JTI != "" {
			tag, err := tx.Exec(ctx, `INSERT INTO federation_jtis (tenant_id, crdb_region, issuer, jti, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::INT8 * INTERVAL '1 millisecond') ON CONFLICT DO NOTHING`, sc.TenantID, sc.Region, x.Issuer, x.JTI,
				x.KeepFor.Milliseconds())
			if err != nil {
				return fmt.Errorf("record exchanged token: %w", err)
			}
			if tag.RowsAffected() == 0 {
				return ErrTokenReplay
			}
		}
		id, err := getIdentity(ctx, tx, sc, ns.IdentityID, "")
		if err != nil {
			return err
		}
		if id.IsHuman() || id.Status != StatusActive || (!id.ExpiresAt.IsZero() && !time.Now().Before(id.ExpiresAt)) {
			return inactiveIdentity("identity", id)
		}
		if out, err = insertSession(ctx, tx, sc, ns); err != nil {
			return err
		}
		after := sessionSummary(out)
		after["trust_policy_id"], after["trust_policy"] = x.PolicyID, x.PolicyName
		after["external_issuer"], after["external_subject"] = x.Issuer, x.Subject
		if x.JTI != "" {
			after["external_jti"] = x.JTI
		}
		if x.Audience != "" {
			after["audience"] = x.Audience
		}
		if x.Scope != "" {
			after["scope"] = x.Scope
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "federation.exchange", targetKind: "session", targetID: out.ID, after: after})
	})
	return out, err
}

// ExchangeRefusal is a token exchange refused, for its audit event. It never holds
// the token.
type ExchangeRefusal struct {
	Rule     string // the failing rule: untrusted_issuer, audience, expired, …
	Reason   string // the description the caller got
	Issuer   string // the token's iss as claimed (unverified), if any
	Subject  string // its sub, when the token verified
	PolicyID string // the policy judged, when one was
}

// RecordExchangeRefusal writes the "federation.exchange_refused" audit event.
func (s *Store) RecordExchangeRefusal(ctx context.Context, c Change, sc Scope, r ExchangeRefusal) error {
	after := map[string]any{"rule": r.Rule, "reason": truncate(r.Reason, 1000)}
	for k, v := range map[string]string{"external_issuer": r.Issuer, "external_subject": r.Subject, "trust_policy_id": r.PolicyID} {
		if v != "" {
			after[k] = truncate(v, 512) // the issuer is unverified: bounded
		}
	}
	target := r.PolicyID
	if target == "" {
		target = truncate(r.Issuer, 200)
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		return s.writeAudit(ctx, tx, sc, c, audit{action: "federation.exchange_refused", targetKind: "trust_policy", targetID: target, after: after})
	})
}
