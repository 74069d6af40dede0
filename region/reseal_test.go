package region_test

import (
	"context"
	"encoding/xml"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestKEKRotation rotates the key-encryption key the way docs/security.md says: the
// new key first and the old one second on every node, ResealSecrets, then the old key
// removed. A node holding only the new key then opens the region's signing key and
// a TOTP seed, an upstream OIDC client secret, a SAML SP key, a webhook secret and
// the response recorded for an idempotency key, sealed under the old one; before the
// reseal it could open none of them.
func TestKEKRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	oldText, _ := kek.Generate()
	newText, _ := kek.Generate()
	parse := func(text string) *kek.KEK {
		t.Helper()
		k, err := kek.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	oldKEK, both, newKEK := parse(oldText), parse(newText+"\n"+oldText), parse(newText)
	store := schematest.NewStore(t, "us-east")
	nodeURL := func(k *kek.KEK, id string) string {
		c := authConfig(k, id)
		return testNode(t, store, c)
	}
	oldURL := nodeURL(oldKEK, "us-east-1")
	admin := adminClient(oldURL, secret)
	if _, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "Acme", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	h, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Alice", Email: "alice@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	alice := h.Msg.Identity.Id
	if _, err := admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: alice, Password: "correct horse battery"})); err != nil {
		t.Fatal(err)
	}
	login := func(url, code string) (*keyplanev1.LoginResponse, error) {
		r, err := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, url).Login(ctx,
			connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "alice@acme.example", Password: "correct horse battery", TotpCode: code}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	first, err := login(oldURL, "")
	if err != nil {
		t.Fatal(err)
	}
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, oldURL)
	enroll := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: alice})
	enroll.Header().Set("Authorization", "Bearer "+first.Token.AccessToken)
	en, err := auth.EnrollTOTP(ctx, enroll)
	if err != nil {
		t.Fatal(err)
	}
	code := previousStepCode(t, en.Msg.Secret)
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: "acme", IdentityId: alice, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+first.Token.AccessToken)
	if _, err := auth.ConfirmTOTP(ctx, confirm); err != nil {
		t.Fatal(err)
	}

	// Sign-in providers seal secrets too: an upstream OIDC client secret and a SAML
	// SP key (its metadata page needs the key).
	opts := connect.WithInterceptors(bearerInterceptor(secret))
	up, err := keyplanev1connect.NewUpstreamServiceClient(http.DefaultClient, oldURL, opts).CreateUpstreamProvider(ctx,
		connect.NewRequest(&keyplanev1.CreateUpstreamProviderRequest{TenantId: "acme", Provider: &keyplanev1.UpstreamProvider{
			Name: "corp", DisplayName: "Corp SSO", Issuer: "https://corp.example", ClientId: "acme", ClientSecret: "upstream secret"}}))
	if err != nil {
		t.Fatal(err)
	}
	md, err := xml.Marshal(newTestIdP(t).current().Metadata())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyplanev1connect.NewSAMLServiceClient(http.DefaultClient, oldURL, opts).CreateSAMLIdP(ctx, connect.NewRequest(
		&keyplanev1.CreateSAMLIdPRequest{TenantId: "acme", Idp: &keyplanev1.SAMLIdP{Name: "hr", Metadata: string(md), EmailAttribute: "mail"}})); err != nil {
		t.Fatal(err)
	}
	sc := schema.Scope{TenantID: "acme", Region: "us-east"}
	// An alert webhook's signing secret, sealed as AnalyticsService seals it.
	hookID := uuid.NewString()
	if _, err := store.CreateWebhook(ctx, schema.Change{Actor: "test", RequestID: "hook"}, sc, schema.Webhook{ID: hookID, URL: "https://hooks.example.com/k",
		SealedSecret: oldKEK.Seal([]byte("whsec"), schema.WebhookSecretAD("acme", hookID))}); err != nil {
		t.Fatal(err)
	}
	webhookSecretOpens := func(k *kek.KEK) bool {
		hooks, err := store.ListWebhooks(ctx, sc)
		if err != nil || len(hooks) != 1 {
			t.Fatalf("webhooks: %v, %v", hooks, err)
		}
		plain, err := k.Open(hooks[0].SealedSecret, schema.WebhookSecretAD("acme", hookID))
		return err == nil && string(plain) == "whsec"
	}
	upstreamSecretOpens := func(k *kek.KEK) bool {
		p, err := store.GetUpstreamProvider(ctx, sc, up.Msg.Provider.Id)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := k.Open(p.SealedSecret, schema.UpstreamSecretAD("acme", p.ID))
		return err == nil && string(plain) == "upstream secret"
	}
	samlMetadata := func(url string) int {
		code, _ := get(t, url+"/t/acme/saml/hr/metadata", "")
		return code
	}
	// A keyed call's recorded response, sealed under the old key, and its retry.
	createBob := func(url string) (*connect.Response[keyplanev1.CreateIdentityResponse], error) {
		return keyedAdmin(url).CreateIdentity(withKey("create-bob"), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Bob"}))
	}
	bob, err := createBob(oldURL)
	if err != nil {
		t.Fatal(err)
	}
	replays := func(url string) bool {
		again, err := createBob(url)
		return err == nil && again.Header().Get(region.IdempotentReplayHeader) == "true" && again.Msg.Identity.Id == bob.Msg.Identity.Id
	}

	// Only the new key, before the reseal: the old secrets do not open.
	earlyURL := nodeURL(newKEK, "us-east-2")
	code, _ = totp.GenerateCode(en.Msg.Secret, time.Now())
	if _, err := login(earlyURL, code); err == nil {
		t.Fatal("a node without the old KEK logged in before the reseal: the test proves nothing")
	}
	if upstreamSecretOpens(newKEK) || webhookSecretOpens(newKEK) || samlMetadata(earlyURL) == http.StatusOK {
		t.Fatal("the new KEK opened a sign-in provider's secret before the reseal: the test proves nothing")
	}
	if replays(earlyURL) {
		t.Fatal("the new KEK opened a recorded response before the reseal: the test proves nothing")
	}

	change := schema.Change{Actor: "operator", RequestID: "kek-rotation"}
	got, err := region.ResealSecrets(ctx, store, both, change)
	if err != nil {
		t.Fatal(err)
	}
	if c := got["us-east"]; c.SigningKeys != 1 || c.TOTPSeeds != 1 || c.UpstreamSecrets != 1 || c.SAMLKeys != 1 || c.WebhookSecrets != 1 ||
		c.IdempotentResponses != 1 || c.Skipped != 0 {
		t.Fatalf("reseal in us-east = %+v, want 1 signing key, 1 TOTP seed, 1 upstream secret, 1 SAML key, 1 webhook secret and 1 idempotency record", c)
	}
	again, err := region.ResealSecrets(ctx, store, both, change)
	if err != nil {
		t.Fatal(err)
	}
	if c := again["us-east"]; c.SigningKeys != 0 || c.TOTPSeeds != 0 || c.UpstreamSecrets != 0 || c.SAMLKeys != 0 || c.WebhookSecrets != 0 || c.IdempotentResponses != 0 || c.Unchanged != 6 {
		t.Fatalf("a second reseal = %+v, want nothing left to do", c)
	}

	newURL := nodeURL(newKEK, "us-east-3")
	if !upstreamSecretOpens(newKEK) || !webhookSecretOpens(newKEK) {
		t.Error("after the reseal the new KEK alone does not open the upstream client secret or the webhook secret")
	}
	if code := samlMetadata(newURL); code != http.StatusOK {
		t.Errorf("after the reseal a node with only the new KEK serves the SAML SP metadata with %d, want 200", code)
	}
	if !replays(newURL) {
		t.Error("after the reseal a node with only the new KEK does not replay the recorded response of a keyed call")
	}
	events, _, err := store.ListAuditEvents(ctx, sc, schema.AuditFilter{Action: "saml.idp.reseal"}, schema.Page{Size: 10})
	if err != nil || len(events) != 1 {
		t.Errorf("saml.idp.reseal audit events: %d (%v), want 1", len(events), err)
	}
	code, _ = totp.GenerateCode(en.Msg.Secret, time.Now().Add(30*time.Second))
	full, err := login(newURL, code)
	if err != nil || full.Token == nil {
		t.Fatalf("login with TOTP on a node holding only the new KEK: %+v %v", full, err)
	}
	v, err := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, newURL).ValidateToken(ctx,
		connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: first.Token.AccessToken}))
	if err != nil || !v.Msg.Active {
		t.Fatalf("a token signed before the rotation, validated with only the new KEK: %v %v", v, err)
	}
	if fresh, err := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, newURL).ValidateToken(ctx,
		connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: full.Token.AccessToken})); err != nil ||
		strings.Join(fresh.Msg.GetClaims().GetAmr(), ",") != "pwd,otp,mfa" {
		t.Fatalf("the TOTP login's token: %v %v", fresh, err)
	}
}
