package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Throttle sets how failed logins are throttled. Every attempt takes a slot before its
// password is checked (TakeLoginSlot), so concurrent attempts cannot race past a limit.
// Two counts are kept per login name (the lower-cased email, known or not): one per
// (name, source address), which delays that source progressively and so cannot lock
// the name out for anyone else; and one across all sources, which locks the name hard
// only after many failures. A count starts again after Window without attempts, and a
// successful login restarts both counts for later attempts.
type Throttle struct {
	// SourceFree is how many attempts one source may make on a name without delay.
	SourceFree int64
	// SourceDelay is the delay after the SourceFree-th attempt from a source; it doubles
	// with each further attempt, up to SourceMaxDelay.
	SourceDelay    time.Duration
	SourceMaxDelay time.Duration
	// LockAfter attempts on a name from all sources together lock it for LockFor.
	LockAfter int64
	LockFor   time.Duration
	// Window is how long a count lasts without attempts.
	Window time.Duration
}

// DefaultThrottle returns the default throttle: 5 free attempts per source, then 1 s,
// 2 s, 4 s … up to 15 min between attempts; a hard lock of 15 min after 50 attempts
// from all sources; counts forgotten after 24 h without attempts.
func DefaultThrottle() Throttle {
	return Throttle{SourceFree: 5, SourceDelay: time.Second, SourceMaxDelay: 15 * time.Minute,
		LockAfter: 50, LockFor: 15 * time.Minute, Window: 24 * time.Hour}
}

// Validate reports the first out-of-range field.
func (t Throttle) Validate() error {
	switch {
	case t.SourceFree < 1 || t.SourceFree > 1000:
		return errors.New("login throttle: free attempts per source must be 1 to 1000")
	case t.SourceDelay < time.Millisecond || t.SourceMaxDelay < t.SourceDelay || t.SourceMaxDelay > 24*time.Hour:
		return errors.New("login throttle: source delay must be at least 1ms and at most the maximum delay, at most 24h")
	case t.LockAfter < t.SourceFree || t.LockAfter > 1_000_000:
		return errors.New("login throttle: lock-after must be at least the free attempts per source, at most 1000000")
	case t.LockFor < time.Second || t.LockFor > 24*time.Hour:
		return errors.New("login throttle: lock duration must be 1s to 24h")
	case t.Window < t.SourceMaxDelay || t.Window < t.LockFor || t.Window > 30*24*time.Hour:
		return errors.New("login throttle: window must be at least the maximum delay and the lock duration, at most 30 days")
	}
	return nil
}

// LoginSubject is the throttle key of a login name: the hex SHA-256 of the lower-cased
// email. Unknown names have subjects too, so they are throttled like known ones.
func LoginSubject(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email)))
	return hex.EncodeToString(sum[:])
}

// Slot is the outcome of TakeLoginSlot.
type Slot int

const (
	// SlotTaken: the attempt was counted and may be checked.
	SlotTaken Slot = iota
	// SlotDelayed: this source must wait before trying this name again.
	SlotDelayed
	// SlotLocked: the name is locked for every source.
	SlotLocked
)

// count is a failure count that restarts after the window ($6 is the oldest update
// that still counts).
const countSQL = `(CASE WHEN t.updated_at < $6 THEN 0 ELSE t.failures END + 1)`

// takeSlotSQL takes an attempt slot in one statement: nothing while the name is locked
// (lk: an attempt then is refused and counted nowhere, so a lock an attacker caused
// does not also spend the owner's free attempts); else the source's row (refused while
// its delay runs), then, only if that was granted, the name's row (refused if it got
// locked meanwhile). Both rows stay locked until the statement commits, so concurrent
// attempts on a name are counted one after another. $5 is now; $7..$11 the throttle.
var takeSlotSQL = `WITH lk AS (
  SELECT 1 FROM login_throttle WHERE crdb_region = $2 AND tenant_id = $1 AND subject = $3 AND locked_until > $5
), src AS (
  INSERT INTO login_throttle_sources AS t (tenant_id, crdb_region, subject, source, failures, next_at, updated_at)
  SELECT $1, $2, $3, $4, 1, ` + sourceNextSQL("1") + `, $5 WHERE NOT EXISTS (SELECT 1 FROM lk)
  ON CONFLICT (crdb_region, tenant_id, subject, source) DO UPDATE SET
    failures = ` + countSQL + `, next_at = ` + sourceNextSQL(countSQL) + `, updated_at = $5
  WHERE t.next_at <= $5 AND NOT EXISTS (SELECT 1 FROM lk)
  RETURNING 1
), name AS (
  INSERT INTO login_throttle AS t (tenant_id, crdb_region, subject, failures, locked_until, updated_at)
  SELECT $1, $2, $3, ` + lockCountSQL("1") + `, ` + lockUntilSQL("1") + `, $5 FROM src
  ON CONFLICT (crdb_region, tenant_id, subject) DO UPDATE SET
    failures = ` + lockCountSQL(countSQL) + `, locked_until = ` + lockUntilSQL(countSQL) + `, updated_at = $5
  WHERE t.locked_until <= $5
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM src), EXISTS (SELECT 1 FROM name), EXISTS (SELECT 1 FROM lk)`

// sourceNextSQL is when a source may try again after its n-th attempt: at once below
// $7 attempts, then after $8 ms doubling per attempt, at most $9 ms. The exponent
// stops at 36: 2^36 times the longest valid delay (24 h in ms) still fits INT8, and
// 2^36 times the shortest (1 ms) already exceeds the longest maximum.
//
// "No delay" is the epoch, not now: concurrent attempts carry their own clocks, and a
// row stamped with a later attempt's now must not look like a delay to an earlier one
// whose statement happens to run after it.
func sourceNextSQL(n string) string {
	return `CASE WHEN ` + n + ` >= $7 THEN $5::TIMESTAMPTZ + least($9::INT8, $8::INT8 * power(2, least(` + n + ` - $7, 36))::INT8) * INTERVAL '1 millisecond' ELSE 'epoch'::TIMESTAMPTZ END`
}

// lockCountSQL is the name's count after its n-th attempt: it restarts when the n-th
// attempt ($10) locks the name.
func lockCountSQL(n string) string { return `CASE WHEN ` + n + ` >= $10 THEN 0 ELSE ` + n + ` END` }

// lockUntilSQL locks the name for $11 ms at its $10-th attempt; "not locked" is the
// epoch (see sourceNextSQL).
func lockUntilSQL(n string) string {
	return `CASE WHEN ` + n + ` >= $10 THEN $5::TIMESTAMPTZ + $11::INT8 * INTERVAL '1 millisecond' ELSE 'epoch'::TIMESTAMPTZ END`
}

// TakeLoginSlot counts an attempt to log in as subject (LoginSubject) from source
// before its password is checked, in one statement: it refuses (SlotDelayed, SlotLocked)
// without counting when the source must wait or the name is locked, and otherwise
// counts the attempt against both (SlotTaken). now is the node's clock.
func (s *Store) TakeLoginSlot(ctx context.Context, sc Scope, th Throttle, subject, source string, now time.Time) (Slot, error) {
	var src, name, locked bool
	// One statement, in a transaction only so that a serialization failure (40001,
	// concurrent attempts on the same rows) is retried.
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, takeSlotSQL, sc.TenantID, sc.Region, subject, source, now, now.Add(-th.Window),
			th.SourceFree, th.SourceDelay.Milliseconds(), th.SourceMaxDelay.Milliseconds(), th.LockAfter, th.LockFor.Milliseconds()).Scan(&src, &name, &locked); err != nil {
			return fmt.Errorf("take login slot: %w", err)
		}
		return nil
	})
	switch {
	case err != nil:
		return SlotLocked, err
	case locked:
		return SlotLocked, nil
	case !src:
		return SlotDelayed, nil
	case !name:
		return SlotLocked, nil
	}
	return SlotTaken, nil
}

// PruneLoginThrottle deletes the tenant's throttle rows that have neither been used
// since before nor hold a delay or lock past it.
func (s *Store) PruneLoginThrottle(ctx context.Context, sc Scope, before time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM login_throttle_sources WHERE tenant_id = $1 AND crdb_region = $2 AND updated_at < $3 AND next_at < $3`,
		sc.TenantID, sc.Region, before); err != nil {
		return fmt.Errorf("prune login throttle: %w", classify(err))
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM login_throttle WHERE tenant_id = $1 AND crdb_region = $2 AND updated_at < $3 AND locked_until < $3`,
		sc.TenantID, sc.Region, before); err != nil {
		return fmt.Errorf("prune login throttle: %w", classify(err))
	}
	return nil
}

// SetPassword stores a human identity's password hash (argon2id, PHC string),
// replacing any previous password and clearing its login's throttle counts and lock.
func (s *Store) SetPassword(ctx context.Context, c Change, sc Scope, identityID, encoded string) (Credential, error) {
	if _, err := parseID("identity_id", identityID); err != nil {
		return Credential{}, err
	}
	var out Credential
	err := s.tx(ctx, func(tx pgx.Tx) error {
		id, err := getIdentity(ctx, tx, sc, identityID, "")
		if err != nil {
			return err
		}
		if !id.IsHuman() {
			return fieldErr("identity_id", "passwords are for humans; non-human identities use API keys or clients")
		}
		if id.Email != "" { // a new password unlocks the login
			subject := LoginSubject(id.Email)
			for _, table := range []string{"login_throttle", "login_throttle_sources"} {
				if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1 AND crdb_region = $2 AND subject = $3`, sc.TenantID, sc.Region, subject); err != nil {
					return fmt.Errorf("clear login throttle: %w", err)
				}
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE credentials SET revoked_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND identity_id = $3 AND kind = 'password' AND revoked_at IS NULL`,
			sc.TenantID, sc.Region, identityID); err != nil {
			return fmt.Errorf("revoke old password: %w", err)
		}
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
	Identity      Identity
	PasswordID    string // "" when the identity has no password
	PasswordHash  string
	TOTP          *TOTPState // confirmed enrollment, nil when none
	RecoveryCodes []RecoveryCode
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
// confirmed TOTP and unused recovery codes: two indexed reads in the home partition,
// both made for an unknown email too (which then fails with ErrNotFound).
func (s *Store) ReadLoginState(ctx context.Context, sc Scope, email string) (LoginState, error) {
	var st LoginState
	var err error
	st.Identity, err = scanIdentity(sc.TenantID, s.pool.QueryRow(ctx, `SELECT `+identityColumns+`
FROM identities WHERE crdb_region = $1 AND tenant_id = $2 AND lower(email) = lower($3) AND email IS NOT NULL`, sc.Region, sc.TenantID, email))
	notFound := errors.Is(err, pgx.ErrNoRows)
	if err != nil && !notFound {
		return LoginState{}, classify(err)
	}
	if notFound { // the second read all the same, so an unknown email costs what a known one does
		st.Identity.ID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, kind, coalesce(secret_hash, ''::BYTEA), coalesce(secret_encrypted, ''::BYTEA), last_step
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
		var step int64
		if err := rows.Scan(&id, &kind, &hash, &sealed, &step); err != nil {
			return LoginState{}, classify(err)
		}
		switch kind {
		case CredPassword:
			st.PasswordID, st.PasswordHash = id, string(hash)
		case CredTOTP:
			st.TOTP = &TOTPState{ID: id, Sealed: sealed, LastStep: step}
		case CredRecoveryCode:
			st.RecoveryCodes = append(st.RecoveryCodes, RecoveryCode{ID: id, Hash: hash})
		}
	}
	if err := rows.Err(); err != nil {
		return LoginState{}, classify(err)
	}
	if notFound {
		return LoginState{}, fmt.Errorf("%w: identity with that email", ErrNotFound)
	}
	return st, nil
}

// LoginFailure is a failed login, for the audit log. IdentityID is "" for an unknown
// name; the event then names the subject (LoginSubject) instead.
type LoginFailure struct {
	IdentityID string
	Subject    string
	Source     string
	Reason     string // bad_password, bad_totp, throttled, unknown_identity, …
}

// RecordLoginFailure writes the "login.failure" audit event. The attempt was already
// counted when its slot was taken.
func (s *Store) RecordLoginFailure(ctx context.Context, c Change, sc Scope, f LoginFailure) error {
	kind, target := "identity", f.IdentityID
	if target == "" {
		kind, target = "login", f.Subject
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		return s.writeAudit(ctx, tx, sc, c, audit{action: "login.failure", targetKind: kind, targetID: target,
			after: map[string]any{"reason": f.Reason, "source": f.Source}})
	})
}

// LoginSuccess says which credentials a successful login used.
type LoginSuccess struct {
	IdentityID     string
	Subject        string // LoginSubject of the name logged in with, and the source:
	Source         string // their failure counts restart for later attempts
	PasswordID     string
	TOTPID         string // with TOTPStep: the TOTP enrollment and the step it matched
	TOTPStep       int64
	RecoveryCodeID string // a recovery code used instead of TOTP
}

// CompleteLogin records a successful login: it restarts the failure counts of the name
// and of the name from this source (a delay or lock already set stays), consumes the
// one-time code (refusing a replay), and opens the session with its first refresh
// token, all in one transaction with the "login.success" audit event.
func (s *Store) CompleteLogin(ctx context.Context, c Change, sc Scope, l LoginSuccess, ns NewSession, refresh NewRefreshToken) (Session, error) {
	return s.completeLogin(ctx, c, sc, l, ns, func(tx pgx.Tx, sess Session) error { return insertRefresh(ctx, tx, sc, sess.ID, refresh) })
}

// completeLogin is CompleteLogin with what the session gets besides (a refresh token,
// a browser session) written by with, in the same transaction.
func (s *Store) completeLogin(ctx context.Context, c Change, sc Scope, l LoginSuccess, ns NewSession, with func(pgx.Tx, Session) error) (Session, error) {
	var out Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE credentials SET last_used_at = now()
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3`, sc.TenantID, sc.Region, l.PasswordID); err != nil {
			return fmt.Errorf("record password use: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE login_throttle SET failures = 0
WHERE tenant_id = $1 AND crdb_region = $2 AND subject = $3`, sc.TenantID, sc.Region, l.Subject); err != nil {
			return fmt.Errorf("reset failures: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE login_throttle_sources SET failures = 0
WHERE tenant_id = $1 AND crdb_region = $2 AND subject = $3 AND source = $4`, sc.TenantID, sc.Region, l.Subject, l.Source); err != nil {
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
		if err := with(tx, out); err != nil {
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
