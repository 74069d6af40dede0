package authz_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/region/authz"
)

func newEnv(t testing.TB, limit uint64) *authz.Env {
	t.Helper()
	env, err := authz.NewEnv(authz.EnvOptions{CostLimit: limit})
	if err != nil {
		t.Fatalf("NewEnv: %v", err)
	}
	return env
}

func TestCheckCondition(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	tests := []struct {
		name    string
		expr    string
		wantErr string // substring; empty means valid
	}{
		{"hours", `request.time.getHours() < 18`, ""},
		{"department", `principal.attributes.department == "eng"`, ""},
		{"path prefix", `resource.path.startsWith("projects/alpha/")`, ""},
		{"step-up", `"mfa" in token.amr && request.time - token.auth_time < duration("10m")`, ""},
		{"context has", `has(context.ticket) && context.ticket != ""`, ""},
		{"region", `request.region == "eu-west"`, ""},
		{"principal kind", `principal.kind == "identity" && principal.id != ""`, ""},
		{"resource attrs", `resource.attributes.owner == principal.id`, ""},
		{"ip", `request.ip.startsWith("10.")`, ""},
		{"string ext", `resource.path.split("/").size() > 2`, ""},
		{"cidr contains ip", `cidr("10.0.0.0/8").containsIP(request.ip)`, ""},
		{"cidr contains ip object", `cidr("2001:db8::/32").containsIP(ip(request.ip))`, ""},
		{"ip family", `ip(request.ip).family() == 6`, ""},
		{"ip loopback", `ip(request.ip).isLoopback()`, ""},
		{"cidr list idiom", `["10.0.0.0/8", "192.168.0.0/16"].exists(c, cidr(c).containsIP(request.ip))`, ""},
		{"ip list idiom", `["10.0.0.1", "::1"].exists(a, ip(a) == ip(request.ip))`, ""},
		{"contains cidr", `cidr("10.0.0.0/8").containsCIDR("10.1.0.0/16")`, ""},
		{"isCIDR of a bad string is just false", `isCIDR("not a cidr") || isIP("nope")`, ""},
		{"country", `request.country in ["DE", "FR"]`, ""},
		{"device posture", `device.managed && device.compliant && !device.jailbroken && device.disk_encrypted && device.screen_lock`, ""},
		{"device strings", `device.platform == "macos" && device.os_version.startsWith("15.") && device.id != ""`, ""},
		{"device attested", `request.time - device.attested_time < duration("1h")`, ""},
		{"device asserted by", `device.asserted_by == "operator"`, ""},
		{"bad cidr literal", `cidr("10.0.0.0/33").containsIP(request.ip)`, `10.0.0.0/33`},
		{"bad ip literal", `ip("10.0.0.256") == ip(request.ip)`, `10.0.0.256`},
		{"bad containsIP literal", `cidr("10.0.0.0/8").containsIP("10.0.0.x")`, `"10.0.0.x" is not an IP address`},
		{"bad containsCIDR literal", `cidr("10.0.0.0/8").containsCIDR("10.1.0.0")`, `"10.1.0.0" is not a CIDR range`},
		{"zone in containsIP literal", `cidr("fe80::/10").containsIP("fe80::1%eth0")`, "zone"},
		{"mapped in containsIP literal", `cidr("10.0.0.0/8").containsIP("::ffff:10.0.0.1")`, "IPv4-mapped"},
		{"bad element of a cidr list", `["10.0.0.0/8", "192.168.0.0/166"].exists(c, cidr(c).containsIP(request.ip))`, `"192.168.0.0/166" is not a CIDR range`},
		{"bad element of a containsIP list", `["10.0.0.1", "10.0.0.1.1"].exists(a, cidr("10.0.0.0/8").containsIP(a))`, `"10.0.0.1.1" is not an IP address`},
		{"bad element of an ip list", `["::1", "localhost"].exists(a, ip(a) == ip(request.ip))`, `"localhost" is not an IP address`},
		{"shadowed variable is not the list's", `["x"].exists(c, ["10.0.0.0/8"].exists(c, cidr(c).containsIP(request.ip)))`, ""},
		{"ip as a string", `ip(request.ip) == "10.0.0.1"`, "no matching overload"},
		{"unknown device field", `device.trusted`, "undefined field"},
		{"device type mismatch", `device.managed == "yes"`, "no matching overload"},
		{"country type mismatch", `request.country == 49`, "no matching overload"},
		{"non-bool", `request.region`, "must evaluate to bool"},
		{"int", `1 + 2`, "must evaluate to bool"},
		{"syntax error", `request.region ==`, "Syntax error"},
		{"unknown variable", `user.name == "x"`, "undeclared reference"},
		{"unknown field", `request.regoin == "eu"`, "undefined field"},
		{"type mismatch", `request.region == 1`, "no matching overload"},
		{"token type mismatch", `token.amr == "mfa"`, "no matching overload"},
		{"empty", ``, "must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := env.CheckCondition(tt.expr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckCondition(%q) = %v, want nil", tt.expr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckCondition(%q) = %v, want error containing %q", tt.expr, err, tt.wantErr)
			}
		})
	}
}

func TestCheckConditionCostLimit(t *testing.T) {
	t.Parallel()
	const costly = `[1,2,3,4,5,6,7,8,9,10].all(x, [1,2,3,4,5,6,7,8,9,10].all(y, [1,2,3,4,5,6,7,8,9,10].all(z, x+y+z > 0)))`
	if err := newEnv(t, 100).CheckCondition(costly); err == nil || !strings.Contains(err.Error(), "exceeds the limit 100") {
		t.Fatalf("CheckCondition(costly) with limit 100 = %v, want cost error", err)
	}
	if err := newEnv(t, 1_000_000).CheckCondition(costly); err != nil {
		t.Fatalf("CheckCondition(costly) with limit 1e6 = %v, want nil", err)
	}
}

// TestNetworkConditionCost: the network functions are bounded by the cost estimator,
// so a long literal CIDR list passes and an absurd one is refused at write time.
func TestNetworkConditionCost(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	list := func(n int) string {
		cidrs := make([]string, n)
		for i := range cidrs {
			cidrs[i] = fmt.Sprintf("%q", fmt.Sprintf("10.%d.0.0/16", i%256))
		}
		return "[" + strings.Join(cidrs, ",") + "].exists(c, cidr(c).containsIP(request.ip))"
	}
	if err := env.CheckCondition(list(20)); err != nil {
		t.Fatalf("20 CIDRs: %v", err)
	}
	if err := env.CheckCondition(list(2000)); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("2000 CIDRs: %v, want a cost error", err)
	}
	// A string the estimator cannot bound (context) costs more than request.ip.
	if err := newEnv(t, 60).CheckCondition(`cidr("10.0.0.0/8").containsIP(request.ip)`); err != nil {
		t.Fatalf("request.ip with limit 60: %v", err)
	}
	if err := newEnv(t, 60).CheckCondition(`cidr("10.0.0.0/8").containsIP(string(context.ip))`); err == nil {
		t.Fatal("context.ip with limit 60 accepted: its size is not bounded")
	}
}

// TestConditionInputs: conditions on CIDRs, country and device evaluate against the
// request, and fail closed (an allow does not apply, a deny does) when the request does
// not carry what they read.
func TestConditionInputs(t *testing.T) {
	t.Parallel()
	attested := t0.Add(-10 * time.Minute)
	managed := &authz.Device{ID: "d1", Platform: "macos", OSVersion: "15.1", Managed: true, Compliant: true, DiskEncrypted: true,
		ScreenLock: true, AttestedTime: attested, AssertedBy: "app-1"}
	tests := []struct {
		name  string
		cond  string
		req   func(*authz.Request)
		allow bool // the allow binding applies
		deny  bool // the same condition on a deny binding applies
		trace string
	}{
		{"ip in cidr", `cidr("10.0.0.0/8").containsIP(request.ip)`, func(r *authz.Request) { r.IP = "10.1.2.3" }, true, true, "matched"},
		{"ip not in cidr", `cidr("10.0.0.0/8").containsIP(request.ip)`, func(r *authz.Request) { r.IP = "11.1.2.3" }, false, false, "condition false"},
		{"ip in cidr list", `["10.0.0.0/8", "192.168.0.0/16"].exists(c, cidr(c).containsIP(request.ip))`, func(r *authz.Request) { r.IP = "192.168.4.5" }, true, true, "matched"},
		{"ipv6 family", `ip(request.ip).family() == 6`, func(r *authz.Request) { r.IP = "2001:db8::1" }, true, true, "matched"},
		{"ipv4 family", `ip(request.ip).family() == 6`, func(r *authz.Request) { r.IP = "192.0.2.1" }, false, false, "condition false"},
		{"ip unknown", `!cidr("10.0.0.0/8").containsIP(request.ip)`, func(r *authz.Request) {}, false, true, "request.ip is unknown"},
		{"country", `request.country == "DE"`, func(r *authz.Request) { r.Country = "DE" }, true, true, "matched"},
		{"other country", `request.country == "DE"`, func(r *authz.Request) { r.Country = "US" }, false, false, "condition false"},
		{"country unknown", `request.country != "KP"`, func(r *authz.Request) { r.IP = "10.0.0.1" }, false, true, "request.country is unknown"},
		{"request whole needs country", `request == request`, func(r *authz.Request) { r.IP = "10.0.0.1" }, false, true, "request.country is unknown"},
		{"managed device", `device.managed && device.compliant && !device.jailbroken`, func(r *authz.Request) { r.Device = managed }, true, true, "matched"},
		{"jailbroken device", `!device.jailbroken`, func(r *authz.Request) { r.Device = &authz.Device{Jailbroken: true} }, false, false, "condition false"},
		{"no device", `!device.jailbroken`, func(r *authz.Request) {}, false, true, "device is unknown"},
		{"no device, negated", `!device.managed`, func(r *authz.Request) {}, false, true, "device is unknown"},
		{"fresh attestation", `request.time - device.attested_time < duration("1h")`, func(r *authz.Request) { r.Device = managed }, true, true, "matched"},
		{"no attestation", `request.time - device.attested_time > duration("1h")`, func(r *authz.Request) { r.Device = &authz.Device{Managed: true} }, false, true, "attested_time is unknown"},
		{"no attestation needed", `device.managed`, func(r *authz.Request) { r.Device = &authz.Device{Managed: true} }, true, true, "matched"},
		{"asserted by", `device.asserted_by == "app-1" && device.managed`, func(r *authz.Request) { r.Device = managed }, true, true, "matched"},
		{"asserted by another", `device.asserted_by == "app-2" && device.managed`, func(r *authz.Request) { r.Device = managed }, false, false, "condition false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := read()
			tt.req(&r)
			d := compile(t, withCond(allow("b1", "identity", "alice", "viewer", "*"), tt.cond)).Check(r)
			if d.Allowed != tt.allow || !strings.Contains(strings.Join(d.Trace, "\n"), tt.trace) {
				t.Fatalf("allow binding: allowed=%v trace=%q, want allowed=%v and %q", d.Allowed, d.Trace, tt.allow, tt.trace)
			}
			d = compile(t, allow("b0", "identity", "alice", "viewer", "*"), withCond(deny("b9", "identity", "alice", "viewer", "*"), tt.cond)).Check(r)
			if d.Allowed == tt.deny {
				t.Fatalf("deny binding: allowed=%v (%s), want the deny to apply=%v; trace %q", d.Allowed, d.Reason, tt.deny, d.Trace)
			}
		})
	}
}

func TestValidateDevice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		d     authz.Device
		field string // empty: valid
	}{
		{"empty", authz.Device{}, ""},
		{"typical", authz.Device{ID: "C02XK0AAJG5H", Platform: "macos", OSVersion: "15.1.1", Managed: true}, ""},
		{"long id", authz.Device{ID: strings.Repeat("x", authz.MaxDeviceIDLen+1)}, "id"},
		{"long platform", authz.Device{Platform: strings.Repeat("x", authz.MaxDeviceFieldLen+1)}, "platform"},
		{"control character", authz.Device{OSVersion: "15\n1"}, "os_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := authz.ValidateDevice(&tt.d)
			var fe *authz.DeviceFieldError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("ValidateDevice = %v, want nil", err)
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
				t.Fatalf("ValidateDevice = %v, want an error on %s", err, tt.field)
			}
		})
	}
}

// Conditional access: an office network, a managed device, a country; inputs the
// request lacks fail closed.
func ExampleEnv_CheckCondition_conditionalAccess() {
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println(env.CheckCondition(`cidr("10.0.0.0/33").containsIP(request.ip)`) != nil)
	cond := `["10.0.0.0/8", "192.168.0.0/16"].exists(c, cidr(c).containsIP(request.ip)) && device.managed && request.country == "DE"`
	snap, err := env.Compile(authz.Policy{
		Roles:    []authz.Role{{ID: "viewer", Permissions: []string{"docs.document.read"}}},
		Bindings: []authz.Binding{{ID: "b1", PrincipalKind: "identity", PrincipalID: "alice", RoleID: "viewer", Scope: "*", Effect: authz.Allow, Condition: cond}},
	})
	if err != nil {
		panic(err)
	}
	r := authz.Request{PrincipalID: "alice", Permission: "docs.document.read", Resource: "docs/1", IP: "10.1.2.3", Country: "DE",
		Device: &authz.Device{Managed: true, AssertedBy: "app"}, Explain: true}
	fmt.Println(snap.Check(r).Allowed)
	r.Device = nil
	fmt.Println(snap.Check(r).Trace[0])
	// Output:
	// true
	// true
	// b1: condition error, allow does not apply (fail closed): device is unknown: the check carries no device
}
