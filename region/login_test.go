package region_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp/totp"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

func TestLoginPasswordTOTPAndRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice", Email: "alice@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	alice := h.Msg.Identity.Id
	_, err = f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: alice, Password: "short"}))
	wantCode(t, err, connect.CodeInvalidArgument, "password")
	_, err = f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: f.bot, Password: "correct horse battery"}))
	wantCode(t, err, connect.CodeInvalidArgument, "identity_id")
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: alice, Password: "correct horse battery"})); err != nil {
		t.Fatal(err)
	}
	login := func(pw, code, recovery string) (*keyplanev1.LoginResponse, error) {
		r, err := f.auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "ALICE@acme.example",
			Password: pw, TotpCode: code, RecoveryCode: recovery}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	got, err := login("correct horse battery", "", "")
	if err != nil || got.Token == nil || !strings.HasPrefix(got.Token.RefreshToken, "kpr_") {
		t.Fatalf("password login: %+v %v", got, err)
	}
	if v := f.validate(t, got.Token.AccessToken); !v.Active || strings.Join(v.Claims.Amr, ",") != "pwd" || v.Claims.Subject != alice {
		t.Fatalf("login token: %+v", v)
	}
	_, err = f.auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "nobody@acme.example", Password: "whatever-it-is"}))
	wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")

	// Enroll TOTP as Alice herself, with her access token.
	enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: alice})
	enroll.Header().Set("Authorization", "Bearer "+got.Token.AccessToken)
	en, err := f.auth.EnrollTOTP(ctx, enroll)
	if err != nil || !strings.HasPrefix(en.Msg.OtpauthUrl, "otpauth://totp/") {
		t.Fatalf("enroll: %v %v", en, err)
	}
	// Confirm with this step's code and log in with the next one: the server accepts
	// one step either side, so both hold however slowly the calls run (up to 30 s).
	now := time.Now()
	code, _ := totp.GenerateCode(en.Msg.Secret, now)
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: "acme", IdentityId: alice, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+got.Token.AccessToken)
	cf, err := f.auth.ConfirmTOTP(ctx, confirm)
	if err != nil || len(cf.Msg.RecoveryCodes) != 10 {
		t.Fatalf("confirm: %v %v", cf, err)
	}

	mfa, err := login("correct horse battery", "", "")
	if err != nil || !mfa.MfaRequired || mfa.Token != nil {
		t.Fatalf("login without the second factor: %+v %v", mfa, err)
	}
	code, _ = totp.GenerateCode(en.Msg.Secret, now.Add(30*time.Second))
	full, err := login("correct horse battery", code, "")
	if err != nil || full.Token == nil {
		t.Fatalf("login with TOTP: %+v %v", full, err)
	}
	if v := f.validate(t, full.Token.AccessToken); strings.Join(v.Claims.GetAmr(), ",") != "pwd,otp,mfa" {
		t.Fatalf("amr: %v", v.Claims.GetAmr())
	}
	_, err = login("correct horse battery", code, "") // the same step again
	wantCode(t, err, connect.CodeUnauthenticated, "one-time code")
	rc := cf.Msg.RecoveryCodes[0]
	if _, err := login("correct horse battery", "", strings.ToUpper(rc)); err != nil {
		t.Fatalf("recovery code: %v", err)
	}
	_, err = login("correct horse battery", "", rc)
	wantCode(t, err, connect.CodeUnauthenticated, "one-time code")

	// Refresh rotates; presenting a used refresh token revokes the whole session.
	r1 := full.Token.RefreshToken
	ref, err := f.auth.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: r1}))
	if err != nil || ref.Msg.Token.RefreshToken == r1 || ref.Msg.Token.SessionId != full.Token.SessionId {
		t.Fatalf("refresh: %v %v", ref, err)
	}
	if !f.validate(t, ref.Msg.Token.AccessToken).Active {
		t.Fatal("refreshed token inactive")
	}
	_, err = f.auth.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: r1}))
	wantCode(t, err, connect.CodeUnauthenticated, "already used")
	wantInactive(t, f.validate(t, ref.Msg.Token.AccessToken), "session_revoked")
	// The OAuth token endpoint calls the same reuse invalid_grant (RFC 6749 §5.2).
	form := postForm(t, f.url+"/t/acme/oauth2/token", "", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r1}})
	if form.status != 400 || form.body["error"] != "invalid_grant" || !strings.Contains(fmt.Sprint(form.body["error_description"]), "already used") {
		t.Fatalf("reused refresh token at the token endpoint: got %d %v, want 400 invalid_grant", form.status, form.body)
	}
	_, err = f.auth.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: ref.Msg.Token.RefreshToken}))
	wantCode(t, err, connect.CodeUnauthenticated, "refresh_token")
}
