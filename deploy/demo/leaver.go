package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// The leaver tour (issue 15): an HR system, speaking SCIM 2.0 from one region, hires a
// manager and a person who owns a service account; the person signs in; then HR marks
// them inactive. keyplane offboards them in one transaction: their token is dead in
// every region at once, and the service account they owned now belongs to their
// manager, its own token still working.

// scimCall sends a SCIM request to the tenant's endpoint through an application's view
// of region from, as the HR system, and decodes the answer.
func scimCall(ctx context.Context, st State, tn Tenant, from, token, method, path string, body any) (map[string]any, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, st.ClientURLs[from][from][0]+"/t/"+tn.ID+"/scim/v2"+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/scim+json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("SCIM %s %s from %s: %w", method, path, from, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("SCIM %s %s from %s: %s %s", method, path, from, resp.Status, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("SCIM %s %s from %s: %w", method, path, from, err)
	}
	return out, nil
}

// scimUser is a SCIM User as an HR system provisions it.
func scimUser(name, tenant, department, manager string) map[string]any {
	ext := map[string]any{"department": department}
	if manager != "" {
		ext["manager"] = map[string]any{"value": manager}
	}
	return map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"},
		"userName": name + "@" + tenant + ".example", "active": true,
		"name":   map[string]any{"givenName": name, "familyName": "Example"},
		"emails": []map[string]any{{"value": name + "@" + tenant + ".example", "type": "work", "primary": true}},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": ext,
	}
}

// runLeaverTour runs the leaver step of the tour; it fails if any answer is wrong.
func runLeaverTour(ctx context.Context, w io.Writer, st State) error {
	tn := st.Tenants[0]
	var regions []string
	for _, r := range st.Regions {
		regions = append(regions, r.Name)
	}
	hr := regions[1%len(regions)]
	// The tenant admin's client does the tenant's admin work, and is the HR system's
	// SCIM client (it holds iam.scim.provision through tenant-admin).
	adminTok, err := oauthToken(ctx, st, tn, hr, tn.TenantAdminClient, tn.TenantAdminSecret)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nleaver: an HR system in %s provisions people into %s over SCIM.\n", hr, tn.ID)
	morgan, err := scimCall(ctx, st, tn, hr, adminTok, http.MethodPost, "/Users", scimUser("morgan", tn.ID, "sales", ""))
	if err != nil {
		return err
	}
	dana, err := scimCall(ctx, st, tn, hr, adminTok, http.MethodPost, "/Users", scimUser("dana", tn.ID, "eng", fmt.Sprint(morgan["id"])))
	if err != nil {
		return err
	}
	morganID, danaID := fmt.Sprint(morgan["id"]), fmt.Sprint(dana["id"])
	fmt.Fprintf(w, "  1. HR hires morgan and dana (manager: morgan)\n")

	base := st.ClientURLs[hr][hr][0]
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, base, connect.WithInterceptors(client.Bearer(adminTok), client.Tenant()))
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, base, connect.WithInterceptors(client.Tenant()))
	bot, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tn.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "dana-reports", OwnerId: danaID, Purpose: "weekly reports",
		ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}))
	if err != nil {
		return fmt.Errorf("create dana's service account: %w", err)
	}
	key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: tn.ID, IdentityId: bot.Msg.Identity.Id,
		Name: "reports", ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		return fmt.Errorf("create dana-reports' API key: %w", err)
	}
	botTok, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: tn.ID, ApiKey: key.Msg.ApiKey}))
	if err != nil {
		return fmt.Errorf("exchange dana-reports' API key: %w", err)
	}
	const password = "correct horse battery staple" // a demo password: the tour sets it and signs in with it
	if _, err := admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: tn.ID, IdentityId: danaID, Password: password})); err != nil {
		return fmt.Errorf("set dana's password: %w", err)
	}
	login, err := auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: tn.ID, Email: "dana@" + tn.ID + ".example", Password: password}))
	if err != nil {
		return fmt.Errorf("dana signs in: %w", err)
	}
	danaTok := login.Msg.GetToken().GetAccessToken()
	if danaTok == "" {
		return fmt.Errorf("dana's sign-in gave no token: %v", login.Msg)
	}
	fmt.Fprintf(w, "  2. dana signs in and owns the service account dana-reports (with its own token)\n")

	start := time.Now()
	if _, err := scimCall(ctx, st, tn, hr, adminTok, http.MethodPatch, "/Users/"+danaID, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []map[string]any{{"op": "Replace", "path": "active", "value": "False"}},
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "  3. HR marks dana inactive (SCIM PATCH active=False)       %4d ms: offboarded in one transaction\n", time.Since(start).Milliseconds())

	fmt.Fprintf(w, "  4. introspected by an app in every region at once:\n")
	type answer struct {
		dana, bot tourCall
		err       error
	}
	answers := make([]answer, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[i]
			if a.dana, a.err = oauthCall(ctx, st, tn, r, "/oauth2/introspect", url.Values{"token": {danaTok}}); a.err == nil {
				a.bot, a.err = oauthCall(ctx, st, tn, r, "/oauth2/introspect", url.Values{"token": {botTok.Msg.GetToken().GetAccessToken()}})
			}
		}()
	}
	wg.Wait()
	for i, r := range regions {
		a := answers[i]
		if a.err != nil {
			return a.err
		}
		if a.dana.body["active"] != false {
			return fmt.Errorf("the leaver's token is still active from %s: %v", r, a.dana.body)
		}
		if a.bot.body["active"] != true {
			return fmt.Errorf("dana-reports' token is inactive from %s after the hand-over: %v", r, a.bot.body)
		}
		fmt.Fprintf(w, "     from %-10s dana's token inactive, dana-reports' token active (%s → %s)\n", r, a.dana.route, a.dana.servedBy)
	}
	owned, err := admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: tn.ID, Id: bot.Msg.Identity.Id}))
	if err != nil {
		return fmt.Errorf("read dana-reports: %w", err)
	}
	if owned.Msg.Identity.OwnerId != morganID {
		return fmt.Errorf("dana-reports is owned by %s after the offboarding, not by dana's manager morgan %s", owned.Msg.Identity.OwnerId, morganID)
	}
	fmt.Fprintf(w, "  5. dana-reports now belongs to morgan, dana's manager\n")
	return nil
}

// oauthToken gets an access token for keyplane's API with the client credentials
// grant, as an application in region from.
func oauthToken(ctx context.Context, st State, tn Tenant, from, clientID, secret string) (string, error) {
	tn.ClientID, tn.ClientSecret = clientID, secret
	c, err := oauthCall(ctx, st, tn, from, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		return "", err
	}
	tok, _ := c.body["access_token"].(string)
	if tok == "" {
		return "", fmt.Errorf("no access token in %v", c.body)
	}
	return tok, nil
}
