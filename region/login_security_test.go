package region_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp/totp"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// fromAddr is an HTTP client whose connections come from the loopback address ip
// (127.0.0.2, …): a distinct source address as the node sees it.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}

// previousStepCode is the TOTP code of the 30 s step before the current one (so that
// a later code of the current step is not a replay), made at least 10 s before the
// current step ends: the node accepts one step either way, and a code made just
// before a step boundary would be two steps old when a loaded machine checks it (the
// TestKEKRotation flake of stop 26).
func previousStepCode(t *testing.T, secret string) string {
	t.Helper()
	const step = 30 * time.Second
	if left := step - time.Duration(time.Now().UnixNano()%int64(step)); left < 10*time.Second {
		time.Sleep(left)
	}
	code, err := totp.GenerateCode(secret, time.Now().Add(-step))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// authFrom is an AuthService client whose calls come from the loopback address ip.
func (f *fixture) authFrom(ip string) keyplanev1connect.AuthServiceClient {
	return keyplanev1connect.NewAuthServiceClient(fromAddr(ip), f.url)
}

// human creates a human identity of the fixture's tenant with email and password.
func (f *fixture) human(t *testing.T, email, password string) string {
	t.Helper()
	ctx := context.Background()
	h, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: f.tenant,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: email, Email: email}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: f.tenant, IdentityId: h.Msg.Identity.Id, Password: password})); err != nil {
		t.Fatal(err)
	}
	return h.Msg.Identity.Id
}

// loginFailures counts the tenant's login.failure audit events by reason.
func (f *fixture) loginFailures(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	page := ""
	for {
		evs, err := f.admin.ListAuditEvents(context.Background(), connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: f.tenant, PageSize: 1000, PageToken: page}))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Msg.Events {
			switch e.Action {
			case "login.failure":
				out[fmt.Sprint(e.After.AsMap()["reason"])]++
			case "login.success":
				out["success"]++
			}
		}
		if page = evs.Msg.NextPageToken; page == "" {
			return out
		}
	}
}

func login(ctx context.Context, c keyplanev1connect.AuthServiceClient, email, password string) (*keyplanev1.LoginResponse, error) {
	r, err := c.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: email, Password: password}))
	if err != nil {
		return nil, err
	}
	return r.Msg, nil
}

// noRateLimits turns the per-IP and per-tenant login limits off and lets logins wait
// long for a hashing slot, so that a test sees only the throttle.
func noRateLimits(c *region.Config) {
	c.Login.Rates.LoginPerIP = region.RateLimit{PerSecond: -1}
	c.Login.Rates.LoginPerTenant = region.RateLimit{PerSecond: -1}
	c.Login.HashConcurrency = 4
	c.Login.HashWait = time.Minute
}

// TestSecurityLoginBurstCannotPassLockout is finding 2 of issue 12: locked_until was
// read before the argon2 check and written after it, so a burst of 24 wrong passwords
// and the right one were all evaluated and the right one got a token. Now each attempt
// takes its slot in one statement before the check: of 24 concurrent wrong passwords
// from one address only the configured free attempts are evaluated, and the right
// password sent after them (once all 24 slots are decided) is refused, with no token.
func TestSecurityLoginBurstCannotPassLockout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const free = 5
	f := newFixtureWith(t, func(c *region.Config) {
		noRateLimits(c)
		// A delay far longer than the test, so that no wall-clock time passing during the
		// burst can free a slot: the outcome depends on counts only.
		c.Login.Throttle = schema.Throttle{SourceFree: free, SourceDelay: time.Hour, SourceMaxDelay: 2 * time.Hour,
			LockAfter: 50, LockFor: time.Hour, Window: 24 * time.Hour}
	})
	f.human(t, "carol@acme.example", "the right password")

	var wg sync.WaitGroup
	errs := make([]error, 24)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = login(ctx, f.auth, "carol@acme.example", fmt.Sprintf("wrong password %02d", i))
		})
	}
	wg.Wait() // every wrong attempt has taken its slot or been refused one
	for _, err := range errs {
		wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")
	}
	got, err := login(ctx, f.auth, "carol@acme.example", "the right password")
	if err == nil {
		t.Fatalf("the right password after the burst got a token: %+v", got)
	}
	wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")

	counts := f.loginFailures(t)
	if counts["bad_password"] != free || counts["delayed"] != 24-free+1 || counts["success"] != 0 {
		t.Fatalf("audit: %v; want %d passwords evaluated (bad_password), %d refused (delayed, the right one included), no success",
			counts, free, 24-free+1)
	}
	// Past the delay the owner logs in, and that restarts the counts.
	f.clock.Advance(time.Hour + time.Second)
	if _, err := login(ctx, f.auth, "carol@acme.example", "the right password"); err != nil {
		t.Fatalf("after the delay: %v", err)
	}
}

// TestSecurityLoginSameAnswerAndNoLockoutFromOneAddress is finding 8 of issue 12: a
// known email answered resource_exhausted after 3 failures and an unknown one never
// (account enumeration), and anyone could keep a user locked for up to 15 minutes. Now
// unknown, throttled and wrong-password logins get the same code and message after the
// same work (a slot, one argon2id verification, an audit event); an attacker's
// failures delay only their own address, and the hard lock needs failures from many
// addresses.
func TestSecurityLoginSameAnswerAndNoLockoutFromOneAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) {
		noRateLimits(c)
		c.Login.Throttle = schema.Throttle{SourceFree: 3, SourceDelay: time.Hour, SourceMaxDelay: 2 * time.Hour,
			LockAfter: 12, LockFor: time.Hour, Window: 24 * time.Hour}
	})
	dave := f.human(t, "dave@acme.example", "dave's right password")
	attacker := f.authFrom("127.0.0.2")

	// The same answer for a wrong password, an unknown email and a throttled login.
	var answers []string
	for i := range 6 {
		_, err := login(ctx, attacker, "dave@acme.example", "not dave's password")
		answers = append(answers, fmt.Sprintf("known #%d: %v %q", i+1, connect.CodeOf(err), errMessage(err)))
		_, err = login(ctx, attacker, "nobody@acme.example", "not anyone's password")
		answers = append(answers, fmt.Sprintf("unknown #%d: %v %q", i+1, connect.CodeOf(err), errMessage(err)))
	}
	for _, a := range answers {
		if !strings.HasSuffix(a, `unauthenticated "invalid email or password"`) {
			t.Errorf("answers differ: %s", a)
		}
	}
	counts := f.loginFailures(t)
	if counts["bad_password"] != 3 || counts["delayed"] != 3 || counts["unknown_identity"] != 6 {
		t.Fatalf("audit: %v; want 3 bad_password and 3 delayed for dave, 6 unknown_identity", counts)
	}
	// The attacker's address is delayed; dave's own is not.
	if _, err := login(ctx, f.authFrom("127.0.0.3"), "dave@acme.example", "dave's right password"); err != nil {
		t.Fatalf("the victim, from another address, after an attacker's failures: %v", err)
	}

	// Failures from many addresses together lock the login hard, for every address; the
	// answer is still the same.
	for i := range 4 {
		c := f.authFrom(fmt.Sprintf("127.0.1.%d", i+1))
		for range 3 {
			_, err := login(ctx, c, "dave@acme.example", "a distributed guess")
			wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")
		}
	}
	_, err := login(ctx, f.authFrom("127.0.0.3"), "dave@acme.example", "dave's right password")
	wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")
	if got := f.loginFailures(t)["locked"]; got != 1 {
		t.Fatalf("the victim's login while locked: %d locked events, want 1", got)
	}
	// An operator's password reset lifts the lock at once.
	if _, err := f.admin.SetPassword(ctx, connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: dave, Password: "dave's new password"})); err != nil {
		t.Fatal(err)
	}
	if _, err := login(ctx, f.authFrom("127.0.0.3"), "dave@acme.example", "dave's new password"); err != nil {
		t.Fatalf("after the operator reset the password: %v", err)
	}
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return fmt.Sprint(err)
}

// TestSecurityLoginRateLimits covers the rate limits of issue 12's "Login under
// attack": Login, the OAuth token endpoint and introspection are limited per source
// address and per tenant; past a limit the answer is resource_exhausted (Connect) or
// 429 (HTTP) with Retry-After, and other addresses are unaffected.
func TestSecurityLoginRateLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Rates so slow that no token refills while the test runs: outcomes are counts.
	slow := func(burst int) region.RateLimit { return region.RateLimit{PerSecond: 0.0001, Burst: burst} }
	f := newFixtureWith(t, func(c *region.Config) {
		c.Login.Rates = region.RateLimits{LoginPerIP: slow(3), LoginPerTenant: slow(5),
			TokenPerIP: slow(2), TokenPerTenant: slow(100), IntrospectPerIP: slow(2), IntrospectPerTenant: slow(100)}
	})
	a := f.authFrom("127.0.0.2")
	for range 3 {
		_, err := login(ctx, a, "nobody@acme.example", "some password")
		wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")
	}
	_, err := a.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "nobody@acme.example", Password: "some password"}))
	wantCode(t, err, connect.CodeResourceExhausted, "from this address")
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" {
		t.Fatalf("no Retry-After on %v", err)
	}
	// Another address has its own budget, until the tenant's (5) is spent.
	b := f.authFrom("127.0.0.3")
	for range 2 {
		_, err := login(ctx, b, "nobody@acme.example", "some password")
		wantCode(t, err, connect.CodeUnauthenticated, "invalid email or password")
	}
	_, err = login(ctx, b, "nobody@acme.example", "some password")
	wantCode(t, err, connect.CodeResourceExhausted, "for this tenant")
	if got := f.loginFailures(t)["unknown_identity"]; got != 5 {
		t.Fatalf("%d logins evaluated, want 5 (the rest refused before any work)", got)
	}

	for _, ep := range []string{"token", "introspect"} {
		form := url.Values{"grant_type": {"client_credentials"}, "token": {"x"}}
		for i := range 3 {
			req, _ := http.NewRequest(http.MethodPost, f.url+"/t/acme/oauth2/"+ep, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(f.clientID, f.secret)
			resp, err := fromAddr("127.0.0.4").Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			limited := resp.StatusCode == http.StatusTooManyRequests
			if limited != (i == 2) || (limited && resp.Header.Get("Retry-After") == "") {
				t.Fatalf("%s request %d: status %d, Retry-After %q; want 429 with Retry-After on the third only",
					ep, i+1, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
	}
	// ExchangeAPIKey and Refresh mint tokens too: they share the token endpoint's limits.
	c := f.authFrom("127.0.0.5")
	for i := range 3 {
		_, err := c.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: f.apiKey}))
		if i < 2 && err != nil {
			t.Fatalf("exchange %d: %v", i+1, err)
		}
		if i == 2 {
			wantCode(t, err, connect.CodeResourceExhausted, "from this address")
		}
	}
	d := f.authFrom("127.0.0.6")
	for i := range 3 {
		_, err := d.Refresh(ctx, connect.NewRequest(&keyplanev1.RefreshRequest{TenantId: "acme", RefreshToken: "kpr_not_a_real_one"}))
		if i < 2 {
			wantCode(t, err, connect.CodeUnauthenticated, "refresh_token")
		} else {
			wantCode(t, err, connect.CodeResourceExhausted, "from this address")
		}
	}
}

// TestSecurityStepUpForCredentialChanges is finding 13 of issue 12: TOTP enrolment
// needed only an active access token, so a token thief could enrol their own
// authenticator and take the recovery codes. Now enrolment and confirmation (which
// returns the recovery codes) need a login within the step-up window.
func TestSecurityStepUpForCredentialChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t) // the default window: 10 minutes; tokens live 15
	id := f.human(t, "erin@acme.example", "erin's long password")
	fresh := func() string {
		r, err := login(ctx, f.auth, "erin@acme.example", "erin's long password")
		if err != nil {
			t.Fatal(err)
		}
		return r.Token.AccessToken
	}
	enroll := func(tok string) (*keyplanev1.EnrollTOTPResponse, error) {
		req := connect.NewRequest(&keyplanev1.EnrollTOTPRequest{TenantId: "acme", IdentityId: id})
		req.Header().Set("Authorization", "Bearer "+tok)
		r, err := f.auth.EnrollTOTP(ctx, req)
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	stolen := fresh()
	f.clock.Advance(11 * time.Minute)
	if !f.validate(t, stolen).Active {
		t.Fatal("the token should still be active: the test needs an active but old login")
	}
	_, err := enroll(stolen)
	wantCode(t, err, connect.CodePermissionDenied, "log in again")

	// Sessions take auth_time from the database clock: bring the node's back to it.
	f.clock.Advance(-11 * time.Minute)
	tok := fresh()
	en, err := enroll(tok)
	if err != nil {
		t.Fatalf("enrol right after a login: %v", err)
	}
	f.clock.Advance(11 * time.Minute)
	code, _ := totp.GenerateCode(en.Secret, f.clock.Now())
	confirm := connect.NewRequest(&keyplanev1.ConfirmTOTPRequest{TenantId: "acme", IdentityId: id, Code: code})
	confirm.Header().Set("Authorization", "Bearer "+tok)
	_, err = f.auth.ConfirmTOTP(ctx, confirm)
	wantCode(t, err, connect.CodePermissionDenied, "log in again")
}

// TestSecurityConcurrentFailedLogins is finding 15 of issue 12: package-level
// *connect.Error values had the request id written into their metadata on every call,
// a data race (and "concurrent map writes" could kill the node). Many concurrent
// failed logins, API key exchanges and client authentications, under -race, each get
// their own error carrying their own request id.
func TestSecurityConcurrentFailedLogins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) {
		noRateLimits(c)
		c.Login.Rates.TokenPerIP = region.RateLimit{PerSecond: -1}
	})
	f.human(t, "frank@acme.example", "frank's long password")
	c := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	var wg sync.WaitGroup
	for i := range 48 {
		wg.Go(func() {
			id := fmt.Sprintf("race-%d", i)
			var err error
			switch i % 3 {
			case 0:
				req := connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: "frank@acme.example", Password: "wrong " + id})
				req.Header().Set("X-Request-Id", id)
				_, err = c.Login(ctx, req)
			case 1:
				req := connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme", Email: id + "@acme.example", Password: "wrong " + id})
				req.Header().Set("X-Request-Id", id)
				_, err = c.Login(ctx, req)
			case 2:
				req := connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "acme", ApiKey: flipChar(f.apiKey, len(f.apiKey)-2)})
				req.Header().Set("X-Request-Id", id)
				_, err = c.ExchangeAPIKey(ctx, req)
			}
			var ce *connect.Error
			if connect.CodeOf(err) != connect.CodeUnauthenticated || !errors.As(err, &ce) {
				t.Errorf("%s: %v, want unauthenticated", id, err)
				return
			}
			if got := ce.Meta().Get("X-Request-Id"); got != id {
				t.Errorf("%s: the error carries request id %q", id, got)
			}
		})
	}
	wg.Wait()
}

// TestSecurityLoginHashBound is finding 3 of issue 12 in-process (the RSS bound is
// measured on a real node process in deploy): password hashing runs at most
// HashConcurrency at once; a login that cannot get a slot in time is refused with
// resource_exhausted and Retry-After, before any password work.
func TestSecurityLoginHashBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixtureWith(t, func(c *region.Config) {
		noRateLimits(c)
		c.Login.HashConcurrency = 1
		c.Login.HashWait = time.Millisecond
	})
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() { _, errs[i] = login(ctx, f.auth, fmt.Sprintf("u%d@acme.example", i), "some password") })
	}
	wg.Wait()
	busy := 0
	for _, err := range errs {
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			busy++
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" || !strings.Contains(ce.Message(), "busy") {
				t.Errorf("refusal without Retry-After: %v", err)
			}
		case connect.CodeUnauthenticated:
		default:
			t.Errorf("unexpected answer: %v", err)
		}
	}
	evaluated := f.loginFailures(t)["unknown_identity"]
	if busy == 0 || evaluated+busy != len(errs) {
		t.Fatalf("%d refused busy, %d evaluated, of %d concurrent logins on one hashing slot; want some refused, the rest evaluated", busy, evaluated, len(errs))
	}
}
