package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// condFixture is a node with tenant acme, a viewer role (docs.document.read) and a
// checker client holding the operator secret. The test client reaches the node from
// 127.0.0.1, which is what conditions see as request.ip.
type condFixture struct {
	*fixture
	check  keyplanev1connect.CheckServiceClient
	viewer string
}

func newCondFixture(t *testing.T, configure func(*region.Config)) *condFixture {
	t.Helper()
	f := &condFixture{fixture: newFixtureWith(t, configure)}
	f.check = keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(secret)))
	r, err := f.admin.CreateRole(context.Background(), connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "viewer",
		Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	f.viewer = r.Msg.Role.Id
	return f
}

// bind gives the owner the viewer role on scope, with effect and condition; it
// returns the policy revision.
func (f *condFixture) bind(t *testing.T, effect keyplanev1.Effect, scope, cond string) int64 {
	t.Helper()
	r, err := f.admin.CreateBinding(context.Background(), connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", Effect: effect,
		PrincipalKind: "identity", PrincipalId: f.owner, RoleId: f.viewer, Scope: scope, Condition: cond}))
	if err != nil {
		t.Fatalf("bind %s %q: %v", scope, cond, err)
	}
	return r.Msg.PolicyRevision
}

// decide checks the owner reading resource with dev through client c.
func (f *condFixture) decide(t *testing.T, c keyplanev1connect.CheckServiceClient, resource string, dev *keyplanev1.Device) *keyplanev1.CheckResponse {
	t.Helper()
	r, err := c.Check(context.Background(), connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.owner}, Permission: "docs.document.read", Resource: resource,
		Device: dev, Explain: true}))
	if err != nil {
		t.Fatalf("check %s: %v", resource, err)
	}
	return r.Msg
}

type decisionCase struct {
	name, resource string
	dev            *keyplanev1.Device
	want           bool
	trace          string // in the trace or reason
}

func (f *condFixture) run(t *testing.T, c keyplanev1connect.CheckServiceClient, cases []decisionCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := f.decide(t, c, tc.resource, tc.dev)
			if got.Allowed != tc.want || !strings.Contains(got.Reason+"\n"+strings.Join(got.Trace, "\n"), tc.trace) {
				t.Fatalf("allowed=%v reason=%q trace=%q; want allowed=%v and %q", got.Allowed, got.Reason, got.Trace, tc.want, tc.trace)
			}
		})
	}
}

// TestCheckCIDRConditions: CIDR and IP functions over a real server, and literal
// ranges that do not parse refused when the binding is written, naming the field and
// the literal, with nothing written.
func TestCheckCIDRConditions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newCondFixture(t, nil)
	allow, deny := keyplanev1.Effect_EFFECT_ALLOW, keyplanev1.Effect_EFFECT_DENY
	f.bind(t, allow, "office/", `["10.0.0.0/8", "127.0.0.0/8"].exists(c, cidr(c).containsIP(request.ip))`)
	f.bind(t, allow, "vpn/", `cidr("10.0.0.0/8").containsIP(request.ip)`)
	f.bind(t, allow, "v6/", `ip(request.ip).family() == 6`)
	f.bind(t, allow, "local/", "")
	rev := f.bind(t, deny, "local/", `ip(request.ip).isLoopback()`)
	f.run(t, f.check, []decisionCase{
		{"loopback is in the office list", "office/x", nil, true, "matched"},
		{"loopback is not in 10/8", "vpn/x", nil, false, "condition false"},
		{"loopback is IPv4", "v6/x", nil, false, "condition false"},
		{"deny on loopback", "local/x", nil, false, "denied by deny binding"},
	})

	for _, tc := range []struct{ cond, literal string }{
		{`cidr("10.0.0.0/33").containsIP(request.ip)`, "10.0.0.0/33"},
		{`["10.0.0.0/8", "10.0.0.0.0/8"].exists(c, cidr(c).containsIP(request.ip))`, "10.0.0.0.0/8"},
		{`cidr("10.0.0.0/8").containsIP("10.0.0.300")`, "10.0.0.300"},
		{`ip("localhost") == ip(request.ip)`, "localhost"},
	} {
		_, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
			PrincipalId: f.owner, RoleId: f.viewer, Scope: "bad/", Condition: tc.cond}))
		wantCode(t, err, connect.CodeInvalidArgument, "condition")
		wantCode(t, err, connect.CodeInvalidArgument, tc.literal)
	}
	if got := f.decide(t, f.check, "bad/x", nil); got.Allowed || got.PolicyRevision != rev {
		t.Fatalf("after refused bindings: allowed=%v revision=%d, want denied at revision %d (nothing written)", got.Allowed, got.PolicyRevision, rev)
	}
}

// TestCheckDeviceConditions: the device a check carries feeds conditions; a condition
// on device without one fails closed (an allow does not apply, a deny does);
// device.asserted_by names the caller, so a condition can require a particular
// application.
func TestCheckDeviceConditions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newCondFixture(t, nil)
	allow, deny := keyplanev1.Effect_EFFECT_ALLOW, keyplanev1.Effect_EFFECT_DENY
	f.bind(t, allow, "posture/", `device.managed && device.compliant && device.disk_encrypted && !device.jailbroken && device.platform == "macos"`)
	f.bind(t, allow, "fresh/", `request.time - device.attested_time < duration("1h")`)
	f.bind(t, allow, "rooted/", "")
	f.bind(t, deny, "rooted/", `device.jailbroken`)
	f.bind(t, allow, "app/", `device.asserted_by == "`+f.bot+`" && device.managed`)

	now := f.clock.Now()
	good := &keyplanev1.Device{Id: "C02X", Platform: "macos", OsVersion: "15.1", Managed: true, Compliant: true, DiskEncrypted: true,
		ScreenLock: true, AttestedTime: timestamppb.New(now.Add(-10 * time.Minute))}
	jailbroken := &keyplanev1.Device{Platform: "ios", Managed: true, Compliant: true, DiskEncrypted: true, Jailbroken: true}
	stale := &keyplanev1.Device{Managed: true, AttestedTime: timestamppb.New(now.Add(-2 * time.Hour))}
	f.run(t, f.check, []decisionCase{
		{"good posture", "posture/x", good, true, "matched"},
		{"jailbroken", "posture/x", jailbroken, false, "condition false"},
		{"no device: allow does not apply", "posture/x", nil, false, "device is unknown"},
		{"fresh attestation", "fresh/x", good, true, "matched"},
		{"stale attestation", "fresh/x", stale, false, "condition false"},
		{"no attestation time", "fresh/x", &keyplanev1.Device{Managed: true}, false, "attested_time is unknown"},
		{"deny on a jailbroken device", "rooted/x", jailbroken, false, "denied by deny binding"},
		{"deny not on a good device", "rooted/x", good, true, "allowed"},
		{"no device: deny applies", "rooted/x", nil, false, "deny applies (fail closed)"},
		{"asserted by the operator, not the app", "app/x", good, false, "condition false"},
	})

	// The application (the bot, holding iam.checks.perform) asserts the device itself.
	role, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "checker", Permissions: []string{"iam.checks.perform"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
		PrincipalId: f.bot, RoleId: role.Msg.Role.Id, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	app := keyplanev1connect.NewCheckServiceClient(http.DefaultClient, f.url, connect.WithInterceptors(bearerInterceptor(f.exchange(t))))
	f.run(t, app, []decisionCase{
		{"asserted by the app", "app/x", good, true, "matched"},
		{"asserted by the app, unmanaged", "app/x", &keyplanev1.Device{}, false, "condition false"},
	})

	// CheckBulk: one device for every item.
	bulk, err := f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.owner}, Device: jailbroken,
		Items: []*keyplanev1.CheckItem{{Permission: "docs.document.read", Resource: "posture/x"}, {Permission: "docs.document.read", Resource: "rooted/x"},
			{Permission: "docs.document.read", Resource: "fresh/x"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if r := bulk.Msg.Results; len(r) != 3 || r[0].Allowed || r[1].Allowed || r[2].Allowed {
		t.Fatalf("bulk with a jailbroken device: %v", r)
	}
	bulk, err = f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.owner}, Device: good,
		Items: []*keyplanev1.CheckItem{{Permission: "docs.document.read", Resource: "posture/x"}, {Permission: "docs.document.read", Resource: "rooted/x"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if r := bulk.Msg.Results; len(r) != 2 || !r[0].Allowed || !r[1].Allowed {
		t.Fatalf("bulk with a good device: %v", r)
	}

	// Device fields out of bounds: invalid_argument naming the field.
	long := &keyplanev1.Device{Id: strings.Repeat("x", 257)}
	_, err = f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.owner}, Permission: "docs.document.read", Resource: "posture/x", Device: long}))
	wantCode(t, err, connect.CodeInvalidArgument, "device.id")
	_, err = f.check.CheckBulk(ctx, connect.NewRequest(&keyplanev1.CheckBulkRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckBulkRequest_IdentityId{IdentityId: f.owner}, Device: &keyplanev1.Device{Platform: "mac\nos"},
		Items: []*keyplanev1.CheckItem{{Permission: "docs.document.read", Resource: "posture/x"}}}))
	wantCode(t, err, connect.CodeInvalidArgument, "device.platform")
	_, err = f.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "acme",
		Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: f.owner}, Permission: "docs.document.read", Resource: "posture/x",
		Device: &keyplanev1.Device{AttestedTime: &timestamppb.Timestamp{Seconds: 1 << 62}}}))
	wantCode(t, err, connect.CodeInvalidArgument, "device.attested_time")

	// Unknown device fields and type mismatches in a condition are refused at write time.
	for _, cond := range []string{`device.trusted`, `device.managed == "yes"`, `device.attested_time > 5`} {
		_, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "identity",
			PrincipalId: f.owner, RoleId: f.viewer, Scope: "bad/", Condition: cond}))
		wantCode(t, err, connect.CodeInvalidArgument, "condition")
	}
}

// TestCheckDeviceConnectJSON: an outside client speaking Connect JSON with plain
// net/http. A device whose fields have the wrong JSON type is invalid_argument naming
// the field; a well-typed one is decided on.
func TestCheckDeviceConnectJSON(t *testing.T) {
	t.Parallel()
	f := newCondFixture(t, nil)
	f.bind(t, keyplanev1.Effect_EFFECT_ALLOW, "posture/", `device.managed && !device.jailbroken`)
	post := func(device string) (int, map[string]any) {
		t.Helper()
		body := `{"tenantId":"acme","identityId":"` + f.owner + `","permission":"docs.document.read","resource":"posture/x","device":` + device + `}`
		req, err := http.NewRequest(http.MethodPost, f.url+keyplanev1connect.CheckServiceCheckProcedure, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("response %s: %v", b, err)
		}
		return resp.StatusCode, out
	}
	for _, tc := range []struct{ device, field string }{
		{`{"managed":"yes"}`, "managed"},
		{`{"jailbroken":1}`, "jailbroken"},
		{`{"platform":true}`, "platform"},
		{`{"attestedTime":"yesterday"}`, "attestedTime"},
		{`{"attested_time":12}`, "attested_time"},
		{`"managed"`, "device"},
		{`{"osVersion":"` + strings.Repeat("9", 65) + `"}`, "device.os_version"},
	} {
		t.Run(tc.device, func(t *testing.T) {
			status, out := post(tc.device)
			if status != http.StatusBadRequest || out["code"] != "invalid_argument" || !strings.Contains(out["message"].(string), tc.field) {
				t.Fatalf("device %s: %d %v, want 400 invalid_argument naming %s", tc.device, status, out, tc.field)
			}
		})
	}
	status, out := post(`{"id":"C02X","managed":true,"jailbroken":false,"attestedTime":"2026-01-02T03:04:05Z"}`)
	if status != http.StatusOK || out["allowed"] != true {
		t.Fatalf("well-typed device: %d %v, want allowed", status, out)
	}
	// A denied answer omits allowed (JSON drops a false bool): it is the absence.
	status, out = post(`{"managed":true,"jailbroken":true}`)
	if status != http.StatusOK || out["allowed"] == true {
		t.Fatalf("jailbroken device: %d %v, want denied", status, out)
	}
}

// writeCountryDB writes an IP → country database in MMDB format (GeoIP2 Country
// records) mapping each CIDR to its code.
func writeCountryDB(t *testing.T, countries map[string]string) string {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-Country", IncludeReservedNetworks: true, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, code := range countries {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(code)}}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "country.mmdb")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(fh); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCheckCountryConditions: request.country from the node's --geoip-db decides
// conditions; without a database, or for an address not in it, a condition reading it
// fails closed.
func TestCheckCountryConditions(t *testing.T) {
	t.Parallel()
	allow, deny := keyplanev1.Effect_EFFECT_ALLOW, keyplanev1.Effect_EFFECT_DENY
	setup := func(f *condFixture) {
		f.bind(t, allow, "eu/", `request.country in ["DE", "FR"]`)
		f.bind(t, allow, "us/", `request.country == "US"`)
		f.bind(t, allow, "notkp/", `request.country != "KP"`)
		f.bind(t, allow, "embargo/", "")
		f.bind(t, deny, "embargo/", `request.country == "KP"`)
	}
	t.Run("loopback in DE", func(t *testing.T) {
		t.Parallel()
		db := writeCountryDB(t, map[string]string{"127.0.0.0/8": "DE", "::1/128": "US"})
		f := newCondFixture(t, func(c *region.Config) { c.GeoIPDB = db })
		setup(f)
		f.run(t, f.check, []decisionCase{
			{"allowed from DE", "eu/x", nil, true, "matched"},
			{"not from US", "us/x", nil, false, "condition false"},
			{"not from KP", "notkp/x", nil, true, "matched"},
			{"not embargoed", "embargo/x", nil, true, "allowed"},
		})
	})
	t.Run("loopback not in the database", func(t *testing.T) {
		t.Parallel()
		db := writeCountryDB(t, map[string]string{"192.0.2.0/24": "DE", "::1/128": "US"})
		f := newCondFixture(t, func(c *region.Config) { c.GeoIPDB = db })
		setup(f)
		f.run(t, f.check, []decisionCase{
			{"allow does not apply", "eu/x", nil, false, "request.country is unknown"},
			{"deny applies", "embargo/x", nil, false, "deny applies (fail closed)"},
		})
	})
	t.Run("no database", func(t *testing.T) {
		t.Parallel()
		f := newCondFixture(t, nil)
		setup(f)
		f.run(t, f.check, []decisionCase{
			{"allow does not apply", "eu/x", nil, false, "request.country is unknown"},
			{"a negation does not apply either", "notkp/x", nil, false, "request.country is unknown"},
			{"deny applies", "embargo/x", nil, false, "deny applies (fail closed)"},
		})
	})
	t.Run("not a database", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "country.mmdb")
		if err := os.WriteFile(path, []byte("not an mmdb"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := nodeConfig()
		cfg.IssuerBase = "http://127.0.0.1:1"
		cfg.GeoIPDB = path
		if _, err := region.New(cfg, nil, nil, prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "MMDB") {
			t.Fatalf("New with a bad geoip database: %v, want an error saying it is not an MMDB file", err)
		}
	})
}
