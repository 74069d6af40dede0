package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// A StateKey names what one decision reads at its tenant's home partition: the
// identity, and the session of the token it presents ("" for a decision about an
// identity named by id). Keys of one ReadDecisionStates call may belong to different
// tenants, all homed in the call's region.
type StateKey struct {
	TenantID   string
	IdentityID string
	SessionID  string
}

// DecisionState is everything a decision reads that can change, as of one statement:
// the tenant's status and policy revision, the identity's state and attributes, and the
// session's revocation state. Never cached, never a follower read: this read is what
// makes revocation, disabling and policy changes take effect with zero staleness.
type DecisionState struct {
	// TenantFound is false when the tenant does not exist; nothing else is set then.
	TenantFound    bool
	TenantStatus   string
	PolicyRevision int64

	// IdentityFound is false when the identity does not exist in the tenant's
	// partition of this region (or the key's identity id is not a UUID).
	IdentityFound    bool
	IdentityStatus   string
	IdentityKind     string
	IdentityExpiry   time.Time // zero: never
	TokensValidAfter time.Time // zero: no watermark
	// AttributesJSON is the identity's attributes as stored (a JSON object); decode
	// them with Attributes only when a decision needs them.
	AttributesJSON []byte

	// SessionFound is false when the key names no session, or no session of that
	// identity with that id exists.
	SessionFound     bool
	SessionCreatedAt time.Time
	SessionAuthTime  time.Time
	SessionExpiresAt time.Time
	SessionRevoked   bool
}

// MaxStateKeys bounds the keys of one ReadDecisionStates call.
const MaxStateKeys = 1024

// ReadDecisionStates reads the state of every key in one statement at region's
// partition: the tenants (GLOBAL rows), identities and sessions by primary key. The
// result has one entry per key, in order. A malformed id only makes its own key not
// found: keys are read together but judged apart, so one request's input never fails
// another's. An error means nothing could be read; callers fail closed.
func (s *Store) ReadDecisionStates(ctx context.Context, region string, keys []StateKey) ([]DecisionState, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if len(keys) > MaxStateKeys {
		return nil, fmt.Errorf("read decision states: %d keys, at most %d", len(keys), MaxStateKeys)
	}
	tenants := make([]string, len(keys))
	identities := make([]*string, len(keys))
	sessions := make([]*string, len(keys))
	for i, k := range keys {
		tenants[i] = k.TenantID
		if isUUID(k.IdentityID) {
			identities[i] = &keys[i].IdentityID
		}
		if k.SessionID != "" && isUUID(k.SessionID) {
			sessions[i] = &keys[i].SessionID
		}
	}
	rows, err := s.pool.Query(ctx, `
SELECT k.ord, t.status, t.policy_revision,
  i.id IS NOT NULL, coalesce(i.status, ''), coalesce(i.kind, ''), coalesce(i.expires_at, 'epoch'), coalesce(i.tokens_valid_after, 'epoch'), i.attributes,
  s.id IS NOT NULL, coalesce(s.created_at, 'epoch'), coalesce(s.auth_time, 'epoch'), coalesce(s.expires_at, 'epoch'), s.revoked_at IS NOT NULL
FROM unnest($2::TEXT[], $3::UUID[], $4::UUID[]) WITH ORDINALITY AS k (tenant_id, identity_id, session_id, ord)
JOIN tenants t ON t.id = k.tenant_id
LEFT JOIN identities i ON i.crdb_region = $1 AND i.tenant_id = k.tenant_id AND i.id = k.identity_id
LEFT JOIN sessions s ON s.crdb_region = $1 AND s.tenant_id = k.tenant_id AND s.id = k.session_id AND s.identity_id = k.identity_id`,
		region, tenants, identities, sessions)
	if err != nil {
		return nil, classify(fmt.Errorf("read decision states: %w", err))
	}
	defer rows.Close()
	out := make([]DecisionState, len(keys))
	for rows.Next() {
		var ord int64
		var st DecisionState
		if err := rows.Scan(&ord, &st.TenantStatus, &st.PolicyRevision,
			&st.IdentityFound, &st.IdentityStatus, &st.IdentityKind, &st.IdentityExpiry, &st.TokensValidAfter, &st.AttributesJSON,
			&st.SessionFound, &st.SessionCreatedAt, &st.SessionAuthTime, &st.SessionExpiresAt, &st.SessionRevoked); err != nil {
			return nil, classify(fmt.Errorf("read decision states: %w", err))
		}
		if ord < 1 || ord > int64(len(keys)) {
			return nil, fmt.Errorf("read decision states: row for key %d of %d", ord, len(keys))
		}
		st.TenantFound = true
		st.IdentityExpiry, st.TokensValidAfter = zeroEpoch(st.IdentityExpiry), zeroEpoch(st.TokensValidAfter)
		if !st.SessionFound {
			st.SessionCreatedAt, st.SessionAuthTime, st.SessionExpiresAt = time.Time{}, time.Time{}, time.Time{}
		}
		out[ord-1] = st
	}
	if err := rows.Err(); err != nil {
		return nil, classify(fmt.Errorf("read decision states: %w", err))
	}
	return out, nil
}

// Attributes decodes the identity's attributes (an empty map when it has none).
func (st DecisionState) Attributes() (map[string]any, error) {
	m := map[string]any{}
	if len(st.AttributesJSON) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(st.AttributesJSON, &m); err != nil {
		return nil, fmt.Errorf("decode identity attributes: %w", err)
	}
	return m, nil
}

// isUUID reports whether id is a UUID in its canonical 36-character form.
func isUUID(id string) bool {
	if len(id) != 36 {
		return false
	}
	_, err := uuid.Parse(id)
	return err == nil
}
