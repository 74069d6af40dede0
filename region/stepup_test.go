package region_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp/totp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// wantStepUp asserts err is the step-up refusal: permission_denied with an ErrorInfo
// whose reason is step_up_required and the RFC 9470 challenge in WWW-Authenticate.
func wantStepUp(t *testing.T, err error, maxAge string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodePermissionDenied {
		t.Fatalf("got %v, want permission_denied step_up_required", err)
	}
	found := false
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok && info.Reason == region.ReasonStepUpRequired && info.Metadata["max_age"] == maxAge {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no ErrorInfo{reason: %s, max_age: %s} in %v", region.ReasonStepUpRequired, maxAge, err)
	}
	if h := ce.Meta().Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_user_authentication"`) || !strings.Contains(h, "max_age="+maxAge) {
		t.Errorf("WWW-Authenticate = %q, want the RFC 9470 challenge with max_age=%s", h, maxAge)
	}
}

// TestSecurityStepUpForSensitiveOperations (issue 13, item 6): a human tenant admin
// whose password alone was phished, or whose token is old, cannot bind roles: a
// sensitive call needs a token with a second factor from a login within the tenant's
// step-up window. Non-sensitive calls need nothing more; a non-human admin cannot step
// up and is authorized by its bindings alone; the tenant's own window applies.
func TestSecurityStepUpForSensitiveOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := &testClock{}
	f := newAdminFixture(t, func(c *region.Config) { c.Now = clock.Now })
	h, err := f.tenantAd.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice", Email: "alice@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	alice := h.Msg.Identity.Id
	// The bootstrap admin is a service account: sensitive calls need no step-up of it.
	if _, err := f.tenantAd.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: alice,
		Password: "alice's long password"})); err != nil {
		t.Fatalf("a non-human admin's sensitive call: %v", err)
	}
	f.bind(t, alice, schema.RoleTenantAdmin, "*")
	role, err := f.tenantAd.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	login := func(code string) *keyplanev1.LoginResponse {
		t.Helper()
		r, err := auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "alice@acme.example",
			Password: "alice's long password", TotpCode: code}))
		if err != nil || r.Msg.Token == nil {
			t.Fatalf("login: %v %v", r, err)
		}
		return r.Msg
	}
	scopes := 0
	bindReader := func(tok string) error { // each time on a scope of its own
		scopes++
		_, err := adminClient(f.url, tok).CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
			PrincipalKind: "identity", PrincipalId: f.owner, RoleId: role.Msg.Role.Id, Scope: "docs/" + strconv.Itoa(scopes) + "/"}))
		return err
	}

	pwd := login("").Token.AccessToken
	wantStepUp(t, bindReader(pwd), "600")
	// Widening a role changes what its bindings grant: sensitive like binding it.
	_, err = adminClient(f.url, pwd).UpdateRole(ctx, connect.NewRequest(&keyplanev1.UpdateRoleRequest{TenantId: "acme", RoleId: role.Msg.Role.Id,
		Permissions: []string{"docs.document.read", "docs.document.write"}}))
	wantStepUp(t, err, "600")
	if _, err := adminClient(f.url, pwd).ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"})); err != nil {
		t.Fatalf("a non-sensitive call with a password-only token: %v", err)
	}

	// Alice adds a second factor (a recent login suffices to enrol one) and logs in with it.
	enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: alice})
	enroll.Header().Set("Authorization", "Bearer "+pwd)
	en, err := auth.EnrollTOTP(ctx, enroll)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(en.Msg.Secret, clock.Now().Add(-30*time.Second))
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: "acme", IdentityId: alice, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+pwd)
	if _, err := auth.ConfirmTOTP(ctx, confirm); err != nil {
		t.Fatal(err)
	}
	code, _ = totp.GenerateCode(en.Msg.Secret, clock.Now())
	mfa := login(code).Token.AccessToken
	if err := bindReader(mfa); err != nil {
		t.Fatalf("a sensitive call with a fresh second factor: %v", err)
	}

	// Eleven minutes on, the same token is too old for the default window (10 min)…
	clock.Advance(11 * time.Minute)
	wantStepUp(t, bindReader(mfa), "600")
	// …but within a tenant's own 30-minute window.
	_, err = f.op.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme", StepUpWindow: durationpb.New(30 * time.Second)}))
	wantCode(t, err, connect.CodeInvalidArgument, "step_up_window")
	tn, err := f.op.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme", StepUpWindow: durationpb.New(30 * time.Minute)}))
	if err != nil || tn.Msg.Tenant.StepUpWindow.AsDuration() != 30*time.Minute {
		t.Fatalf("set the tenant's window: %v %v", tn, err)
	}
	if err := bindReader(mfa); err != nil {
		t.Fatalf("a sensitive call within the tenant's window: %v", err)
	}
}

// mfaLogin enrols TOTP for a human who logs in to tenant with email and password, and
// returns an access token from a login with both factors (amr mfa): what a human's
// sensitive calls need.
func mfaLogin(t *testing.T, baseURL, tenant, identity, email, password string) string {
	t.Helper()
	ctx := context.Background()
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, baseURL)
	login := func(code string) string {
		t.Helper()
		r, err := auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: tenant, Email: email, Password: password, TotpCode: code}))
		if err != nil || r.Msg.Token == nil {
			t.Fatalf("login of %s: %v %v", email, r, err)
		}
		return r.Msg.Token.AccessToken
	}
	pwd := login("")
	enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: tenant, IdentityId: identity})
	enroll.Header().Set("Authorization", "Bearer "+pwd)
	en, err := auth.EnrollTOTP(ctx, enroll)
	if err != nil {
		t.Fatalf("enrol TOTP for %s: %v", email, err)
	}
	code := previousStepCode(t, en.Msg.Secret)
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: tenant, IdentityId: identity, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+pwd)
	if _, err := auth.ConfirmTOTP(ctx, confirm); err != nil {
		t.Fatalf("confirm TOTP for %s: %v", email, err)
	}
	code, _ = totp.GenerateCode(en.Msg.Secret, time.Now())
	return login(code)
}
