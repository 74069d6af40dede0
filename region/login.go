package region

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/credential"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// dummyHash is verified against when the email is unknown, so that an unknown email
// costs the same time as a wrong password and does not reveal who has an account.
var dummyHash = sync.OnceValue(func() string {
	h, _ := credential.HashPassword("keyplane-dummy-password")
	return h
})

func totpAD(tenantID, identityID string) []byte { return []byte("totp/" + tenantID + "/" + identityID) }

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
	t, err := n.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	sc := t.Scope()
	st, err := n.store.ReadLoginState(ctx, sc, m.Email)
	if errors.Is(err, schema.ErrNotFound) {
		_, _ = credential.VerifyPassword(dummyHash(), m.Password)
		n.metrics.credentialFailures.WithLabelValues("password").Inc()
		return nil, errBadLogin
	}
	if err != nil {
		return nil, err
	}
	now := n.now()
	id := st.Identity
	if !id.IsHuman() || st.PasswordID == "" || id.Status != schema.StatusActive || (!id.ExpiresAt.IsZero() && !now.Before(id.ExpiresAt)) {
		_, _ = credential.VerifyPassword(dummyHash(), m.Password)
		n.metrics.credentialFailures.WithLabelValues("password").Inc()
		return nil, errBadLogin
	}
	if now.Before(st.LockedUntil) {
		return nil, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("too many failed logins: try again in %s", st.LockedUntil.Sub(now).Round(time.Second)))
	}
	c := schema.Change{Actor: "identity:" + id.ID, RequestID: requestID(ctx)}
	fail := func(reason string, out error) error {
		n.metrics.credentialFailures.WithLabelValues("password").Inc()
		if _, locked, err := n.store.RecordLoginFailure(ctx, c, sc, id.ID, st.PasswordID, reason); err != nil {
			return err
		} else if !locked.IsZero() {
			return connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("%s; too many failed logins: try again in %s", connectError(ctx, n.log, out).Message(), locked.Sub(now).Round(time.Second)))
		}
		return out
	}
	ok, err := credential.VerifyPassword(st.PasswordHash, m.Password)
	if err != nil {
		return nil, fmt.Errorf("stored password hash of %s: %w", id.ID, err)
	}
	if !ok {
		return nil, fail("bad_password", errBadLogin)
	}
	success := schema.LoginSuccess{IdentityID: id.ID, PasswordID: st.PasswordID}
	amr := []string{"pwd"}
	if st.TOTP != nil {
		if m.TotpCode == "" && m.RecoveryCode == "" {
			return connect.NewResponse(&keyplanev1.LoginResponse{MfaRequired: true, IdentityId: id.ID}), nil
		}
		badCode := connect.NewError(connect.CodeUnauthenticated, errors.New("invalid one-time code"))
		if m.TotpCode != "" {
			if n.cfg.KEK == nil {
				return nil, ErrNoKEK
			}
			secret, err := n.cfg.KEK.Open(st.TOTP.Sealed, totpAD(t.ID, id.ID))
			if err != nil {
				return nil, fmt.Errorf("open TOTP secret of %s: %w", id.ID, err)
			}
			step, ok := credential.CheckTOTP(string(secret), m.TotpCode, now)
			if !ok || step <= st.TOTP.LastStep {
				return nil, fail("bad_totp", badCode)
			}
			success.TOTPID, success.TOTPStep = st.TOTP.ID, step
			amr = append(amr, "otp", "mfa")
		} else {
			h := credential.HashRecoveryCode(m.RecoveryCode)
			for _, rc := range st.RecoveryCodes {
				if subtle.ConstantTimeCompare(rc.Hash, h) == 1 {
					success.RecoveryCodeID = rc.ID
				}
			}
			if success.RecoveryCodeID == "" {
				return nil, fail("bad_recovery_code", badCode)
			}
			amr = append(amr, "mfa")
		}
	}
	ring, err := n.keys.get(ctx)
	if err != nil {
		return nil, err
	}
	refresh, err := credential.NewSecret(credential.PrefixRefreshToken)
	if err != nil {
		return nil, err
	}
	sess, err := n.store.CompleteLogin(ctx, c, sc, success, schema.NewSession{
		IdentityID: id.ID, GrantType: "password", CredentialID: st.PasswordID, AMR: amr, ExpiresAt: now.Add(refreshTTL),
	}, schema.NewRefreshToken{ID: refresh.KeyID, Hash: refresh.Hash, ExpiresAt: now.Add(refreshTTL)})
	if errors.Is(err, schema.ErrReplay) {
		return nil, fail("replayed_code", err)
	}
	if err != nil {
		return nil, err
	}
	ttl := t.AccessTokenTTL
	raw, err := n.mint(ring, grant{Tenant: t, IdentityID: id.ID, AMR: amr}, sess.ID, now, ttl)
	if err != nil {
		return nil, err
	}
	sess.ExpiresAt = now.Add(ttl)
	return connect.NewResponse(&keyplanev1.LoginResponse{Token: tokenToProto(raw, sess, refresh.Text, now), IdentityId: id.ID}), nil
}

func (a *AuthService) Refresh(ctx context.Context, req *connect.Request[keyplanev1.RefreshRequest]) (*connect.Response[keyplanev1.RefreshResponse], error) {
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

// selfService authorizes a call about identityID by the operator or that identity.
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
	return t, c, nil
}

func (a *AdminService) SetPassword(ctx context.Context, req *connect.Request[keyplanev1.SetPasswordRequest]) (*connect.Response[keyplanev1.SetPasswordResponse], error) {
	m := req.Msg
	if err := credential.CheckPasswordPolicy(m.Password); err != nil {
		return nil, fieldError("password", err.Error())
	}
	sc, err := a.scope(ctx, m.TenantId)
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
