package region

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// dummyHash is verified against when the email is unknown, the login is throttled or
// cannot use a password, so that those cost the same as a wrong password and reveal
// nothing.
var dummyHash = sync.OnceValue(func() string {
	h, _ := credential.HashPassword("keyplane-dummy-password")
	return h
})

// DefaultStepUpWindow is how recent an identity's authentication must be for it to
// change its own credentials (enrol TOTP, receive recovery codes).
const DefaultStepUpWindow = 10 * time.Minute

// LoginConfig configures logins under attack. Its zero value means the defaults.
type LoginConfig struct {
	// Throttle counts failed logins per (login, source address) and per login; the zero
	// value means schema.DefaultThrottle().
	Throttle schema.Throttle
	// HashConcurrency bounds concurrent password hashes (argon2id, about 19 MiB each)
	// on the node; 0 means AutoHashConcurrency(), sized from memory.
	HashConcurrency int
	// HashWait is how long a login waits for a hashing slot before it is refused with
	// resource_exhausted; 0 means DefaultHashWait.
	HashWait time.Duration
	// StepUpWindow is how recent an identity's login must be for it to enrol TOTP and
	// receive recovery codes, and (with a second factor) for a human's sensitive calls,
	// in tenants that set no window of their own; 0 means DefaultStepUpWindow.
	StepUpWindow time.Duration
	// Rates are the request-rate limits; zero fields mean DefaultRateLimits'.
	Rates RateLimits
}

// withDefaults fills the zero fields.
func (c LoginConfig) withDefaults() LoginConfig {
	if c.Throttle == (schema.Throttle{}) {
		c.Throttle = schema.DefaultThrottle()
	}
	if c.HashConcurrency == 0 {
		c.HashConcurrency = AutoHashConcurrency()
	}
	if c.HashWait == 0 {
		c.HashWait = DefaultHashWait
	}
	if c.StepUpWindow == 0 {
		c.StepUpWindow = DefaultStepUpWindow
	}
	c.Rates = c.Rates.withDefaults()
	return c
}

// Validate reports the first invalid field (after defaults are applied).
func (c LoginConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.HashConcurrency < 1 || c.HashConcurrency > 1024:
		return errors.New("password hash concurrency: 1 to 1024 (0: sized from memory)")
	case c.HashWait < 0 || c.HashWait > time.Minute:
		return errors.New("password hash wait: at most 1m")
	case c.StepUpWindow < time.Minute || c.StepUpWindow > 24*time.Hour:
		return errors.New("step-up window: 1m to 24h")
	}
	return c.Throttle.Validate()
}

// guards are the node's login and endpoint protections.
type guards struct {
	hash                     *hashGate
	login, token, introspect *pairLimiter
}

func newGuards(c LoginConfig, m *metrics) *guards {
	l := c.Rates
	return &guards{hash: newHashGate(c.HashConcurrency, c.HashWait, m),
		login:      newPairLimiter("login", l.LoginPerIP, l.LoginPerTenant, l.MaxKeys),
		token:      newPairLimiter("token", l.TokenPerIP, l.TokenPerTenant, l.MaxKeys),
		introspect: newPairLimiter("introspection", l.IntrospectPerIP, l.IntrospectPerTenant, l.MaxKeys)}
}

func totpAD(tenantID, identityID string) []byte { return []byte("totp/" + tenantID + "/" + identityID) }

// Login checks a password (and second factor) under attack (checkLogin) and opens a
// session with an access and a refresh token.
func (a *AuthService) Login(ctx context.Context, req *connect.Request[keyplanev1.LoginRequest]) (*connect.Response[keyplanev1.LoginResponse], error) {
	m := req.Msg
	n := a.node
	switch {
	case m.Email == "":
		return nil, fieldError("email", "required")
	case len(m.Email) > 320:
		return nil, fieldError("email", "at most 320 characters")
	case m.Password == "":
		return nil, fieldError("password", "required")
	case len(m.Password) > credential.MaxPasswordBytes:
		return nil, fieldError("password", fmt.Sprintf("at most %d bytes", credential.MaxPasswordBytes))
	case m.TotpCode != "" && m.RecoveryCode != "":
		return nil, fieldError("recovery_code", "send a TOTP code or a recovery code, not both")
	case len(m.TotpCode) > 16 || len(m.RecoveryCode) > 64:
		return nil, fieldError("totp_code", "too long")
	}
	lc, err := n.checkLogin(ctx, loginAttempt{tenantID: m.TenantId, email: m.Email, password: m.Password,
		totp: m.TotpCode, recovery: m.RecoveryCode, source: sourceIP(req.Peer().Addr)})
	if err != nil {
		return nil, err
	}
	if lc.mfaRequired {
		return connect.NewResponse(&keyplanev1.LoginResponse{MfaRequired: true, IdentityId: lc.identity.ID}), nil
	}
	t, id, c, amr, now := lc.tenant, lc.identity, lc.change, lc.amr, n.now()
	// The ring that signs for this tenant's algorithm, made before the login commits:
	// a commit followed by a failed mint would spend the second factor for nothing.
	ring, err := n.keys.signer(ctx, signingAlg(t))
	if err != nil {
		return nil, err
	}
	refresh, err := credential.NewSecret(credential.PrefixRefreshToken)
	if err != nil {
		return nil, err
	}
	sess, err := n.store.CompleteLogin(ctx, c, t.Scope(), lc.success, schema.NewSession{
		IdentityID: id.ID, GrantType: "password", CredentialID: lc.passwordID, AMR: amr, ExpiresAt: now.Add(refreshTTL),
	}, schema.NewRefreshToken{ID: refresh.KeyID, Hash: refresh.Hash, ExpiresAt: now.Add(refreshTTL)})
	if errors.Is(err, schema.ErrReplay) {
		return nil, lc.fail("replayed_code", "bad_second_factor", err)
	}
	if err != nil {
		return nil, err
	}
	n.metrics.loginAttempts.WithLabelValues("success").Inc()
	ttl := t.AccessTokenTTL
	raw, err := n.mint(ring, grant{Tenant: t, IdentityID: id.ID, AMR: amr}, sess.ID, now, ttl)
	if err != nil {
		return nil, err
	}
	sess.ExpiresAt = now.Add(ttl)
	return connect.NewResponse(&keyplanev1.LoginResponse{Token: tokenToProto(raw, sess, refresh.Text, now), IdentityId: id.ID}), nil
}

// loginAttempt is what a login presents: by the Login RPC, or by the OpenID
// Provider's login page (whose second step presents the pendingLogin its first step
// sealed instead of the password again).
type loginAttempt struct {
	tenantID, email, password, totp, recovery, source string
	pending                                           *pendingLogin
}

// loginCheck is a login that passed every check; its session is not opened yet.
type loginCheck struct {
	mfaRequired bool // the password was right; a second factor is needed
	tenant      schema.Tenant
	identity    schema.Identity
	passwordID  string
	hasTOTP     bool
	success     schema.LoginSuccess
	amr         []string
	change      schema.Change
	// fail records a failure found after the checks (a replayed code at commit) and
	// returns out.
	fail func(reason, result string, out error) error
}

// checkLogin checks a login under attack. In order: the rate limits per source IP
// and per tenant; a password hashing slot (bounded per node); an attempt slot taken
// in the database before the password is checked (refused while this source must wait
// or the login is locked); then one argon2id verification, against the stored hash
// or, for an unknown, unusable or throttled login, a dummy one; then the second factor
// when the identity has one. Every failure before the second factor is the same
// Unauthenticated "invalid email or password" after the same work, so answers tell
// nothing about which logins exist or are locked.
func (n *Node) checkLogin(ctx context.Context, in loginAttempt) (loginCheck, error) {
	if err := n.guards.login.allow(ctx, n.metrics, in.source, in.tenantID, n.now()); err != nil {
		return loginCheck{}, err
	}
	t, err := n.activeTenant(ctx, in.tenantID)
	if err != nil {
		return loginCheck{}, err
	}
	sc := t.Scope()
	st, err := n.store.ReadLoginState(ctx, sc, in.email)
	known := err == nil
	if err != nil && !errors.Is(err, schema.ErrNotFound) {
		return loginCheck{}, err
	}
	now := n.now()
	if rand.IntN(64) == 0 { // idle throttle rows of the tenant, now and then; before taking a hashing slot
		if err := n.store.PruneLoginThrottle(ctx, sc, now.Add(-n.cfg.Login.Throttle.Window)); err != nil {
			n.log.WarnContext(ctx, "prune login throttle", "err", err)
		}
	}
	release := func() {}
	if in.pending == nil {
		acquired, err := n.guards.hash.acquire(ctx)
		if err != nil {
			return loginCheck{}, err
		}
		release = sync.OnceFunc(acquired)
		defer release()
	}
	subject := schema.LoginSubject(in.email)
	slot, err := n.store.TakeLoginSlot(ctx, sc, n.cfg.Login.Throttle, subject, in.source, now)
	if err != nil {
		return loginCheck{}, err
	}
	id := st.Identity
	usable := known && id.IsHuman() && st.PasswordID != "" && id.Status == schema.StatusActive && (id.ExpiresAt.IsZero() || now.Before(id.ExpiresAt))
	failure := schema.LoginFailure{IdentityID: id.ID, Subject: subject, Source: in.source}
	switch {
	case !usable:
		failure.Reason = "unknown_identity"
	case slot == schema.SlotDelayed:
		failure.Reason = "delayed"
	case slot == schema.SlotLocked:
		failure.Reason = "locked"
	}
	var ok bool
	if in.pending != nil {
		// The password was checked by this login's first step: the same identity with
		// the same password, not long ago (pendingLogin).
		ok = in.pending.IdentityID == id.ID && in.pending.PasswordID == st.PasswordID && now.Before(in.pending.ExpiresAt)
	} else {
		hash := st.PasswordHash
		if failure.Reason != "" {
			hash = dummyHash()
		}
		if ok, err = credential.VerifyPassword(hash, in.password); err != nil {
			return loginCheck{}, fmt.Errorf("stored password hash of %s: %w", id.ID, err)
		}
	}
	release() // the rest needs no hashing slot
	c := schema.Change{Actor: "identity:" + id.ID, ActorKind: "human", RequestID: requestID(ctx)}
	if !known {
		c.Actor, c.ActorKind = "anonymous", ""
	}
	fail := func(reason, result string, out error) error {
		n.metrics.credentialFailures.WithLabelValues("password").Inc()
		n.metrics.loginAttempts.WithLabelValues(result).Inc()
		failure.Reason = reason
		if err := n.store.RecordLoginFailure(ctx, c, sc, failure); err != nil {
			return err
		}
		return out
	}
	switch {
	case failure.Reason == "unknown_identity":
		return loginCheck{}, fail(failure.Reason, "unknown", errBadLogin)
	case failure.Reason != "":
		return loginCheck{}, fail(failure.Reason, failure.Reason, errBadLogin)
	case !ok:
		return loginCheck{}, fail("bad_password", "bad_password", errBadLogin)
	}
	success := schema.LoginSuccess{IdentityID: id.ID, Subject: subject, Source: in.source, PasswordID: st.PasswordID}
	amr := []string{"pwd"}
	if st.TOTP != nil {
		if in.totp == "" && in.recovery == "" {
			n.metrics.loginAttempts.WithLabelValues("mfa_required").Inc()
			return loginCheck{mfaRequired: true, tenant: t, identity: id, passwordID: st.PasswordID, fail: fail}, nil
		}
		badCode := connect.NewError(connect.CodeUnauthenticated, errors.New("invalid one-time code"))
		if in.totp != "" {
			if n.cfg.KEK == nil {
				return loginCheck{}, ErrNoKEK
			}
			secret, err := n.cfg.KEK.Open(st.TOTP.Sealed, totpAD(t.ID, id.ID))
			if err != nil {
				return loginCheck{}, fmt.Errorf("open TOTP secret of %s: %w", id.ID, err)
			}
			step, ok := credential.CheckTOTP(string(secret), in.totp, now)
			if !ok || step <= st.TOTP.LastStep {
				return loginCheck{}, fail("bad_totp", "bad_second_factor", badCode)
			}
			success.TOTPID, success.TOTPStep = st.TOTP.ID, step
			amr = append(amr, "otp", "mfa")
		} else {
			h := credential.HashRecoveryCode(in.recovery)
			for _, rc := range st.RecoveryCodes {
				if subtle.ConstantTimeCompare(rc.Hash, h) == 1 {
					success.RecoveryCodeID = rc.ID
				}
			}
			if success.RecoveryCodeID == "" {
				return loginCheck{}, fail("bad_recovery_code", "bad_second_factor", badCode)
			}
			amr = append(amr, "mfa")
		}
	}
	return loginCheck{tenant: t, identity: id, passwordID: st.PasswordID, hasTOTP: st.TOTP != nil, success: success, amr: amr, change: c, fail: fail}, nil
}

func (a *AuthService) Refresh(ctx context.Context, req *connect.Request[keyplanev1.RefreshRequest]) (*connect.Response[keyplanev1.RefreshResponse], error) {
	if err := a.node.guards.token.allow(ctx, a.node.metrics, sourceIP(req.Peer().Addr), req.Msg.TenantId, a.node.now()); err != nil {
		return nil, err
	}
	t, err := a.node.activeTenant(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if req.Msg.RefreshToken == "" {
		return nil, fieldError("refresh_token", "required")
	}
	raw, refresh, sess, err := a.node.refresh(ctx, t, req.Msg.RefreshToken)
	var oe *oauthError
	if errors.As(err, &oe) {
		code := connect.CodeUnauthenticated
		if oe.Code == "invalid_request" {
			code = connect.CodeInvalidArgument
		}
		return nil, connect.NewError(code, errors.New("refresh_token: "+oe.Description))
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.RefreshResponse{Token: tokenToProto(raw, sess, refresh, a.node.now())}), nil
}

func (a *AuthService) EnrollTOTP(ctx context.Context, req *connect.Request[keyplanev1.EnrollTOTPRequest]) (*connect.Response[keyplanev1.EnrollTOTPResponse], error) {
	m := req.Msg
	n := a.node
	t, caller, err := n.selfService(ctx, req.Header().Get("Authorization"), m.TenantId, m.IdentityId)
	if err != nil {
		return nil, err
	}
	if n.cfg.KEK == nil {
		return nil, ErrNoKEK
	}
	id, err := n.store.GetIdentity(ctx, t.Scope(), m.IdentityId)
	if err != nil {
		return nil, err
	}
	account := id.Email
	if account == "" {
		account = id.ID
	}
	key, err := credential.NewTOTP("keyplane "+t.ID, account)
	if err != nil {
		return nil, err
	}
	if _, err := n.store.EnrollTOTP(ctx, caller.change(ctx), t.Scope(), id.ID, n.cfg.KEK.Seal([]byte(key.Secret), totpAD(t.ID, id.ID))); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.EnrollTOTPResponse{Secret: key.Secret, OtpauthUrl: key.URL}), nil
}

func (a *AuthService) ConfirmTOTP(ctx context.Context, req *connect.Request[keyplanev1.ConfirmTOTPRequest]) (*connect.Response[keyplanev1.ConfirmTOTPResponse], error) {
	m := req.Msg
	n := a.node
	t, caller, err := n.selfService(ctx, req.Header().Get("Authorization"), m.TenantId, m.IdentityId)
	if err != nil {
		return nil, err
	}
	if m.Code == "" {
		return nil, fieldError("code", "required")
	}
	if n.cfg.KEK == nil {
		return nil, ErrNoKEK
	}
	pending, err := n.store.PendingTOTP(ctx, t.Scope(), m.IdentityId)
	if err != nil {
		return nil, err
	}
	secret, err := n.cfg.KEK.Open(pending.Sealed, totpAD(t.ID, m.IdentityId))
	if err != nil {
		return nil, fmt.Errorf("open TOTP secret: %w", err)
	}
	step, ok := credential.CheckTOTP(string(secret), m.Code, n.now())
	if !ok {
		return nil, fieldError("code", "does not match: check the authenticator's clock and try the next code")
	}
	codes, hashes, err := credential.NewRecoveryCodes(10)
	if err != nil {
		return nil, err
	}
	if err := n.store.ConfirmTOTP(ctx, caller.change(ctx), t.Scope(), m.IdentityId, pending.ID, step, hashes); err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.ConfirmTOTPResponse{RecoveryCodes: codes}), nil
}

// requireRecentAuth refuses an identity whose session authenticated longer ago than
// the step-up window (or at an unknown time): a stolen access token alone must not
// change the account's credentials. The operator is not an identity and passes.
func (n *Node) requireRecentAuth(t schema.Tenant, c caller) error {
	if c.operator() {
		return nil
	}
	if window := n.stepUpWindow(t); c.authTime.IsZero() || n.now().Sub(c.authTime) > window {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"recent authentication required: log in again (this needs a login within the last %s)", window))
	}
	return nil
}

// selfService authorizes a call about identityID by the operator or that identity;
// an identity must have logged in recently (requireRecentAuth).
func (n *Node) selfService(ctx context.Context, header, tenantID, identityID string) (schema.Tenant, caller, error) {
	t, err := n.activeTenant(ctx, tenantID)
	if err != nil {
		return schema.Tenant{}, caller{}, err
	}
	if identityID == "" {
		return schema.Tenant{}, caller{}, fieldError("identity_id", "required")
	}
	c, err := n.authenticate(ctx, header, t.ID)
	if err != nil {
		return schema.Tenant{}, caller{}, err
	}
	if c.identityID != "" && c.identityID != identityID {
		return schema.Tenant{}, caller{}, connect.NewError(connect.CodePermissionDenied, errors.New("identity_id: an identity may only manage its own second factor"))
	}
	if err := n.requireRecentAuth(t, c); err != nil {
		return schema.Tenant{}, caller{}, err
	}
	return t, c, nil
}

func (a *AdminService) SetPassword(ctx context.Context, req *connect.Request[keyplanev1.SetPasswordRequest]) (*connect.Response[keyplanev1.SetPasswordResponse], error) {
	m := req.Msg
	if err := credential.CheckPasswordPolicy(m.Password); err != nil {
		return nil, fieldError("password", err.Error())
	}
	if m.IdentityId == "" {
		return nil, fieldError("identity_id", "required")
	}
	sc, err := a.manageIdentity(ctx, m.TenantId, m.IdentityId, "", true)
	if err != nil {
		return nil, err
	}
	encoded, err := credential.HashPassword(m.Password)
	if err != nil {
		return nil, err
	}
	c, err := a.node.store.SetPassword(ctx, change(ctx), sc, m.IdentityId, encoded)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.SetPasswordResponse{Credential: credentialToProto(c)}), nil
}
