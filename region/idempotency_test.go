package region_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
)

type idemKey struct{}

// keyedAdmin is an operator's admin client that sends the Idempotency-Key in its
// context (withKey) and names the call's tenant in Keyplane-Tenant, as routing
// clients do.
func keyedAdmin(url string) keyplanev1connect.AdminServiceClient {
	return keyplanev1connect.NewAdminServiceClient(http.DefaultClient, url, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+secret)
				if m, ok := req.Any().(interface{ GetTenantId() string }); ok {
					req.Header().Set(routing.TenantHeader, m.GetTenantId())
				}
				if m, ok := req.Any().(*keyplanev1.CreateTenantRequest); ok && req.Header().Get(routing.TenantHeader) == "" { // as routing/client does
					req.Header().Set(routing.TenantHeader, m.GetId())
				}
				if k, ok := ctx.Value(idemKey{}).(string); ok {
					req.Header().Set(region.IdempotencyKeyHeader, k)
				}
				return next(ctx, req)
			}
		})))
}

func withKey(k string) context.Context { return context.WithValue(context.Background(), idemKey{}, k) }

// TestIdempotencyKeys: a keyed call sent again gets the first response and changes
// nothing more, also when the copies race; the key with another request is refused;
// an error is not recorded; the OAuth token endpoint takes keys too.
func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	admin := keyedAdmin(f.url)
	create := func(ctx context.Context, name string) (*connect.Response[keyplanev1.CreateIdentityResponse], error) {
		return admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: f.tenant,
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name}))
	}
	creations := func(id string) int {
		t.Helper()
		n := 0
		for _, e := range f.listAudit(t, &keyplanev1.ListAuditEventsRequest{TenantId: f.tenant, TargetId: id}) {
			if e.Action == "identity.create" {
				n++
			}
		}
		return n
	}

	t.Run("a retry gets the first response", func(t *testing.T) {
		first, err := create(withKey("k-retry"), "Ada")
		if err != nil {
			t.Fatal(err)
		}
		again, err := create(withKey("k-retry"), "Ada")
		if err != nil {
			t.Fatal(err)
		}
		if again.Msg.Identity.Id != first.Msg.Identity.Id {
			t.Fatalf("retry created %s, first call %s", again.Msg.Identity.Id, first.Msg.Identity.Id)
		}
		if first.Header().Get(region.IdempotentReplayHeader) != "" || again.Header().Get(region.IdempotentReplayHeader) != "true" {
			t.Fatalf("%s: first %q, retry %q; want only the retry marked", region.IdempotentReplayHeader,
				first.Header().Get(region.IdempotentReplayHeader), again.Header().Get(region.IdempotentReplayHeader))
		}
		if n := creations(first.Msg.Identity.Id); n != 1 {
			t.Fatalf("%d identity.create events, want 1", n)
		}
		other, err := create(withKey("k-retry-2"), "Ada")
		if err != nil {
			t.Fatal(err)
		}
		if other.Msg.Identity.Id == first.Msg.Identity.Id {
			t.Fatal("another key got the first key's identity")
		}
	})

	t.Run("the key with another request is refused", func(t *testing.T) {
		if _, err := create(withKey("k-reuse"), "Grace"); err != nil {
			t.Fatal(err)
		}
		_, err := create(withKey("k-reuse"), "Hopper")
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), region.IdempotencyKeyHeader) {
			t.Fatalf("same key, other body: %v, want failed_precondition naming %s", err, region.IdempotencyKeyHeader)
		}
		// The refused call ran (its caller is checked before any refusal names the key)
		// and was rolled back: no Hopper.
		ids, err := admin.ListIdentities(context.Background(), connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: f.tenant}))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids.Msg.Identities {
			if id.DisplayName == "Hopper" {
				t.Fatal("the refused call's identity was created")
			}
		}
	})

	t.Run("concurrent copies change once", func(t *testing.T) {
		const copies = 8
		ids := make([]string, copies)
		errs := make([]error, copies)
		var wg sync.WaitGroup
		for i := range copies {
			wg.Go(func() {
				r, err := create(withKey("k-race"), "Race")
				if err == nil {
					ids[i] = r.Msg.Identity.Id
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range copies {
			if errs[i] != nil {
				t.Fatalf("copy %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("copies created %s and %s", ids[0], ids[i])
			}
		}
		if n := creations(ids[0]); n != 1 {
			t.Fatalf("%d identity.create events, want 1", n)
		}
	})

	t.Run("a copy that clashes with the winner's change gets the winner's answer", func(t *testing.T) {
		// Group names are unique per tenant: the copies that lose the race fail on the
		// name the winner took, and answer with the winner's record, not AlreadyExists.
		const copies = 6
		ids, errs := make([]string, copies), make([]error, copies)
		var wg sync.WaitGroup
		for i := range copies {
			wg.Go(func() {
				r, err := admin.CreateGroup(withKey("k-group-race"), connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: f.tenant, Name: "racers"}))
				if err == nil {
					ids[i] = r.Msg.Group.Id
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range copies {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("copy %d: %q, %v; want every copy to answer group %q", i, ids[i], errs[i], ids[0])
			}
		}
	})

	t.Run("CreateTenant takes a key: a retry gets the one admin client secret", func(t *testing.T) {
		create := func(ctx context.Context, id, header string) (*connect.Response[keyplanev1.CreateTenantResponse], error) {
			req := connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: id, Name: "Keyed " + id, HomeRegion: "us-east"})
			if header != "" {
				req.Header().Set(routing.TenantHeader, header)
			}
			return admin.CreateTenant(ctx, req)
		}
		first, err := create(withKey("k-tenant"), "keyed-co", "")
		if err != nil {
			t.Fatal(err)
		}
		again, err := create(withKey("k-tenant"), "keyed-co", "")
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if again.Header().Get(region.IdempotentReplayHeader) != "true" || again.Msg.AdminClientSecret != first.Msg.AdminClientSecret ||
			again.Msg.AdminClientSecret == "" {
			t.Fatalf("retry: replayed %q, same secret %v; want the first call's answer", again.Header().Get(region.IdempotentReplayHeader),
				again.Msg.AdminClientSecret == first.Msg.AdminClientSecret)
		}
		_, err = create(withKey("k-tenant-2"), "keyed-co", "")
		wantCode(t, err, connect.CodeAlreadyExists, "")
		_, err = create(withKey("k-tenant-3"), "keyed-other", "keyed-co")
		wantCode(t, err, connect.CodeInvalidArgument, `id: the request creates tenant "keyed-other"`)

		const copies = 6
		secrets, errs := make([]string, copies), make([]error, copies)
		var wg sync.WaitGroup
		for i := range copies {
			wg.Go(func() {
				r, err := create(withKey("k-tenant-race"), "raced-co", "")
				if err == nil {
					secrets[i] = r.Msg.AdminClientSecret
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range copies {
			if errs[i] != nil || secrets[i] != secrets[0] || secrets[i] == "" {
				t.Fatalf("racing CreateTenant copy %d: %v (same secret: %v); want every copy to answer the winner's", i, errs[i], secrets[i] == secrets[0])
			}
		}
	})

	t.Run("a one-time secret is replayed only to the same call", func(t *testing.T) {
		expiry := timestamppb.New(time.Now().Add(time.Hour).Truncate(time.Second))
		req := func() *connect.Request[keyplanev1.CreateAPIKeyRequest] {
			return connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: f.tenant, IdentityId: f.bot, Name: "deploy",
				ExpireTime: expiry})
		}
		first, err := admin.CreateAPIKey(withKey("k-secret"), req())
		if err != nil {
			t.Fatal(err)
		}
		again, err := admin.CreateAPIKey(withKey("k-secret"), req())
		if err != nil {
			t.Fatal(err)
		}
		if again.Msg.ApiKey != first.Msg.ApiKey || again.Msg.Credential.Id != first.Msg.Credential.Id {
			t.Fatal("the retry made another key")
		}
		// The record is sealed at rest: the secret is not in the stored response.
		var stored []byte
		if err := f.store.Pool().QueryRow(context.Background(), `SELECT response FROM idempotency_keys WHERE key = 'k-secret'`).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(stored), first.Msg.ApiKey) {
			t.Fatal("the recorded response holds the API key in the clear")
		}
		// Another caller (another credential) with the same key and body gets the
		// answer its own credential gets (here: it may not mint keys), never the record,
		// nor a refusal that would tell it the tenant used the key.
		other := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(
			connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
				return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
					r.Header().Set("Authorization", "Bearer "+f.exchange(t))
					r.Header().Set(routing.TenantHeader, f.tenant)
					r.Header().Set(region.IdempotencyKeyHeader, "k-secret")
					return next(ctx, r)
				}
			})))
		if _, err := other.CreateAPIKey(context.Background(), req()); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("another caller replaying the key: %v, want permission_denied (its own answer)", err)
		}
	})

	t.Run("errors are not recorded", func(t *testing.T) {
		bad := func() error {
			_, err := admin.CreateIdentity(withKey("k-error"), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: f.tenant,
				Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "orphan"}))
			return err
		}
		for range 2 {
			var ce *connect.Error
			if err := bad(); !errors.As(err, &ce) || ce.Meta().Get(region.IdempotentReplayHeader) != "" {
				t.Fatalf("a refused call: %v (replayed %q), want the handler's own refusal each time", err, ce.Meta().Get(region.IdempotentReplayHeader))
			}
		}
		var n int
		if err := f.store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE key = 'k-error'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d records of a refused call (%v), want 0", n, err)
		}
	})

	t.Run("a refused login still counts against the lockout", func(t *testing.T) {
		f.human(t, "keyed@acme.test", "correct horse battery staple")
		auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
		before := f.loginFailures(t)["bad_password"]
		for range 2 {
			req := connect.NewRequest(&keyplanev1.LoginRequest{TenantId: f.tenant, Email: "keyed@acme.test", Password: "wrong"})
			req.Header().Set(routing.TenantHeader, f.tenant)
			req.Header().Set(region.IdempotencyKeyHeader, "k-login") // the same key: a failure is not replayed
			if _, err := auth.Login(context.Background(), req); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("wrong password: %v, want unauthenticated", err)
			}
		}
		if got := f.loginFailures(t)["bad_password"] - before; got != 2 {
			t.Fatalf("%d bad_password failures recorded for two keyed attempts, want 2 (%v)", got, f.loginFailures(t))
		}
	})

	t.Run("bad keys are refused naming the header", func(t *testing.T) {
		for _, k := range []string{strings.Repeat("k", 256), "ключ", "with space"} {
			_, err := create(withKey(k), "Bad")
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), region.IdempotencyKeyHeader) {
				t.Fatalf("key %q: %v, want invalid_argument naming %s", k, err, region.IdempotencyKeyHeader)
			}
		}
		// A malformed tenant id with a good key is the caller's error too, not unavailable.
		_, err := admin.CreateIdentity(withKey("k-bad-tenant"), connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "Not A Tenant!",
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Bad"}))
		wantCode(t, err, connect.CodeInvalidArgument, "tenant_id")
	})

	t.Run("the token endpoint", func(t *testing.T) {
		mint := func(key string) (string, string) {
			form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}
			req, err := http.NewRequest(http.MethodPost, f.url+"/t/"+f.tenant+"/oauth2/token", strings.NewReader(form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(f.clientID, f.secret)
			req.Header.Set(region.IdempotencyKeyHeader, key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
				t.Fatalf("mint: %d %v", resp.StatusCode, err)
			}
			return body.AccessToken, resp.Header.Get(region.IdempotentReplayHeader)
		}
		key := rand.Text()
		tok, replayed := mint(key)
		again, replayedAgain := mint(key)
		if tok != again || replayed != "" || replayedAgain != "true" {
			t.Fatalf("same key minted two tokens (or marks %q, %q)", replayed, replayedAgain)
		}
		if fresh, _ := mint(rand.Text()); fresh == tok {
			t.Fatal("a new key got the old token")
		}
	})
}
