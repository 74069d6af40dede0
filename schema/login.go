package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Failed-login throttling: from the LockAfter-th consecutive failure on, each failure
// locks the password for 2^(n-LockAfter+1) seconds, at most MaxLock.
const (
	LockAfter = 3
	MaxLock   = 15 * time.Minute
)

// lockFor is how long the n-th consecutive failure locks the password.
func lockFor(n int64) time.Duration {
	if n < LockAfter {
		return 0
	}
	shift := n - LockAfter + 1
	if shift > 20 {
		return MaxLock
	}
	return min(time.Duration(1<<shift)*time.Second, MaxLock)
}

// SetPassword stores a human identity's password hash (argon2id, PHC string),
// replacing any previous password and clearing its failure count.
func (s *Store) SetPassword(ctx context.Context, c Change, sc Scope, identityID, encoded string) (Credential, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return Credential{}, err
	}
	var out Credential
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := requireHuman(ctx, tx, sc, identityID, "passwords are for humans; non-human identities use API keys or clients"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND kind = 'password' AND revoked_at IS NULL`,
			sc.TenantID, sc.Region, identityID); err != nil {
			return fmt.Errorf("revoke old password: %w", err)
		}
		var err error
		out, err = scanCredential(tx.QueryRow(ctx, `
INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, secret_hash) VALUES ($1, $2, $3, 'password', $4)
RETURNING `+credentialColumns, sc.TenantID, sc.Region, identityID, []byte(encoded)))
		if err != nil {
			return fmt.Errorf("insert password: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.set_password", targetKind: "credential", targetID: out.ID, after: credentialSummary(out)})
	})
	return out, err
}

// LoginState is what a login needs to decide: the identity and its live credentials.
type LoginState struct {
	Identity       Identity
	PasswordID     string // "" when the identity has no password
	PasswordHash   string
	FailedAttempts int64
	LockedUntil    time.Time
	TOTP           *TOTPState // confirmed enrollment, nil when none
	RecoveryCodes  []RecoveryCode
}

// TOTPState is a confirmed TOTP enrollment.
type TOTPState struct {
	ID       string
	Sealed   []byte // the secret, sealed under the KEK
	LastStep int64  // the last time step accepted; older or equal steps are replays
}

// RecoveryCode is an unused recovery code.
type RecoveryCode struct {
	ID   string
	Hash []byte
}

// ReadLoginState reads the identity with email (case-insensitive) and its password,
// confirmed TOTP and unused recovery codes: two indexed reads in the home partition.
func (s *Store) ReadLoginState(ctx context.Context, sc Scope, email string) (LoginState, error) {
	var st LoginState
	var err error
	st.Identity, err = scanIdentity(sc.TenantID, s.pool.QueryRow(ctx, `SELECT `+identityColumns+`
FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND lower(email) = lower($3) AND email IS NOT NULL`, sc.Region, sc.TenantID, email))
	if errors.Is(err, pgx.ErrNoRows) {
		return LoginState{}, fmt.Errorf("%w: identity with that email", ErrNotFound)
	}
	if err != nil {
		return LoginState{}, classify(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, kind, coalesce(secret_hash, ''::BYTEA), coalesce(secret_encrypted, ''::BYTEA),
  failed_attempts, coalesce(locked_until, 'epoch'), last_step
FROM credentials WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3
  AND kind IN ('password', 'totp', 'recovery_code') AND revoked_at IS NULL AND (kind <> 'totp' OR confirmed_at IS NOT NULL)`,
		sc.Region, sc.TenantID, st.Identity.ID)
	if err != nil {
		return LoginState{}, classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, kind string
		var hash, sealed []byte
		var failed, step int64
		var locked time.Time
		if err := rows.Scan(&id, &kind, &hash, &sealed, &failed, &locked, &step); err != nil {
			return LoginState{}, classify(err)
		}
		switch kind {
		case CredPassword:
			st.PasswordID, st.PasswordHash, st.FailedAttempts, st.LockedUntil = id, string(hash), failed, zeroEpoch(locked)
		case CredTOTP:
			st.TOTP = &TOTPState{ID: id, Sealed: sealed, LastStep: step}
		case CredRecoveryCode:
			st.RecoveryCodes = append(st.RecoveryCodes, RecoveryCode{ID: id, Hash: hash})
		}
	}
	return st, classify(rows.Err())
}

// RecordLoginFailure counts a failed login against the identity's password and locks
// it when the count calls for it; the failure is audited in the same transaction.
func (s *Store) RecordLoginFailure(ctx context.Context, c Change, sc Scope, identityID, passwordID, reason string) (int64, time.Time, error) {
	var attempts int64
	var locked time.Time
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE credentials SET failed_attempts = failed_attempts + 1
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING failed_attempts`, sc.TenantID, sc.Region, passwordID).Scan(&attempts); err != nil {
			return fmt.Errorf("count failure: %w", err)
		}
		locked = time.Time{}
		if d := lockFor(attempts); d > 0 {
			if err := tx.QueryRow(ctx, `UPDATE credentials SET locked_until = now() + $4 * INTERVAL '1 millisecond'
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 RETURNING locked_until`, sc.TenantID, sc.Region, passwordID, d.Milliseconds()).Scan(&locked); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		after := map[string]any{"reason": reason, "failed_attempts": attempts}
		if !locked.IsZero() {
			after["locked_until"] = locked.UTC().Format(time.RFC3339)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "login.failure", targetKind: "identity", targetID: identityID, after: after})
	})
	return attempts, locked, err
}

// LoginSuccess says which credentials a successful login used.
type LoginSuccess struct {
	IdentityID     string
	PasswordID     string
	TOTPID         string // with TOTPStep: the TOTP enrollment and the step it matched
	TOTPStep       int64
	RecoveryCodeID string // a recovery code used instead of TOTP
}

// CompleteLogin records a successful login: it clears the failure count, consumes the
// one-time code (refusing a replay), and opens the session with its first refresh
// token, all in one transaction with the "login.success" audit event.
func (s *Store) CompleteLogin(ctx context.Context, c Change, sc Scope, l LoginSuccess, ns NewSession, refresh NewRefreshToken) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE credentials SET failed_attempts = 0, locked_until = NULL, last_used_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, l.PasswordID); err != nil {
			return fmt.Errorf("reset failures: %w", err)
		}
		if l.TOTPID != "" {
			tag, err := tx.Exec(ctx, `UPDATE credentials SET last_step = $4, last_used_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND last_step < $4`, sc.TenantID, sc.Region, l.TOTPID, l.TOTPStep)
			if err != nil {
				return fmt.Errorf("record totp step: %w", err)
			}
			if tag.RowsAffected() == 0 {
				return ErrReplay
			}
		}
		if l.RecoveryCodeID != "" {
			tag, err := tx.Exec(ctx, `UPDATE credentials SET revoked_at = now(), last_used_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND revoked_at IS NULL`, sc.TenantID, sc.Region, l.RecoveryCodeID)
			if err != nil {
				return fmt.Errorf("use recovery code: %w", err)
			}
			if tag.RowsAffected() == 0 {
				return ErrReplay
			}
		}
		var err error
		if out, err = insertSession(ctx, tx, sc, ns); err != nil {
			return err
		}
		if err := insertRefresh(ctx, tx, sc, out.ID, refresh); err != nil {
			return err
		}
		after := sessionSummary(out)
		if l.RecoveryCodeID != "" {
			after["recovery_code_used"] = l.RecoveryCodeID
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "login.success", targetKind: "session", targetID: out.ID, after: after})
	})
	return out, err
}

// EnrollTOTP stores a new, unconfirmed TOTP secret (sealed) for a human, replacing any
// unconfirmed one. An identity with a confirmed enrollment must not enroll again.
func (s *Store) EnrollTOTP(ctx context.Context, c Change, sc Scope, identityID string, sealed []byte) (Credential, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return Credential{}, err
	}
	var out Credential
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := requireHuman(ctx, tx, sc, identityID, "TOTP is for humans"); err != nil {
			return err
		}
		var confirmed int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM credentials WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3
  AND kind = 'totp' AND revoked_at IS NULL AND confirmed_at IS NOT NULL`, sc.TenantID, sc.Region, identityID).Scan(&confirmed); err != nil {
			return fmt.Errorf("read totp: %w", err)
		}
		if confirmed > 0 {
			return fmt.Errorf("%w: identity_id: TOTP is already enrolled", ErrConflict)
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET revoked_at = now() WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3
  AND kind = 'totp' AND revoked_at IS NULL`, sc.TenantID, sc.Region, identityID); err != nil {
			return fmt.Errorf("drop pending totp: %w", err)
		}
		var err error
		out, err = scanCredential(tx.QueryRow(ctx, `INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, secret_encrypted)
VALUES ($1, $2, $3, 'totp', $4) RETURNING `+credentialColumns, sc.TenantID, sc.Region, identityID, sealed))
		if err != nil {
			return fmt.Errorf("insert totp: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.enroll_totp", targetKind: "credential", targetID: out.ID, after: credentialSummary(out)})
	})
	return out, err
}

// PendingTOTP returns the identity's unconfirmed TOTP enrollment.
func (s *Store) PendingTOTP(ctx context.Context, sc Scope, identityID string) (TOTPState, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return TOTPState{}, err
	}
	var st TOTPState
	err := s.pool.QueryRow(ctx, `SELECT id::TEXT, secret_encrypted, last_step FROM credentials
WHERE crdb_region = $1 AND tenant_id = $2 AND identity_id = $3 AND kind = 'totp' AND revoked_at IS NULL AND confirmed_at IS NULL
ORDER BY created_at DESC LIMIT 1`, sc.Region, sc.TenantID, identityID).Scan(&st.ID, &st.Sealed, &st.LastStep)
	if errors.Is(err, pgx.ErrNoRows) {
		return TOTPState{}, fmt.Errorf("%w: identity_id: no pending TOTP enrollment (call EnrollTOTP first)", ErrPrecondition)
	}
	return st, classify(err)
}

// ConfirmTOTP turns a pending enrollment on, records the step its first code matched,
// and replaces the identity's recovery codes with new ones (hashes).
func (s *Store) ConfirmTOTP(ctx context.Context, c Change, sc Scope, identityID, totpID string, step int64, recovery [][]byte) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE credentials SET confirmed_at = now(), last_step = $5
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND id = $4 AND confirmed_at IS NULL AND revoked_at IS NULL`,
			sc.TenantID, sc.Region, identityID, totpID, step)
		if err != nil {
			return fmt.Errorf("confirm totp: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: identity_id: the enrollment changed; enroll again", ErrPrecondition)
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET revoked_at = now() WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3
  AND kind = 'recovery_code' AND revoked_at IS NULL`, sc.TenantID, sc.Region, identityID); err != nil {
			return fmt.Errorf("drop old recovery codes: %w", err)
		}
		for _, h := range recovery {
			if _, err := tx.Exec(ctx, `INSERT INTO credentials (tenant_id, crdb_region, identity_id, kind, secret_hash)
VALUES ($1, $2, $3, 'recovery_code', $4)`, sc.TenantID, sc.Region, identityID, h); err != nil {
				return fmt.Errorf("insert recovery code: %w", err)
			}
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.confirm_totp", targetKind: "credential", targetID: totpID,
			after: map[string]any{"identity_id": identityID, "recovery_codes": len(recovery)}})
	})
}

// requireHuman fails with a field error on identity_id unless the identity is human.
func requireHuman(ctx context.Context, q querier, sc Scope, identityID, why string) error {
	id, err := getIdentity(ctx, q, sc, identityID, "")
	if err != nil {
		return err
	}
	if !id.IsHuman() {
		return fieldErr("identity_id", "%s", why)
	}
	return nil
}
