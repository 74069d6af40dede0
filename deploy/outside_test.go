package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/routing"
)

// jsonClient is an outside developer's client: plain net/http speaking Connect JSON,
// no keyplane code, the operator secret as bearer (break-glass, for brevity) and the
// Keyplane-Tenant header the docs ask for.
type jsonClient struct {
	t      *testing.T
	secret string
}

type jsonAnswer struct {
	status   int
	body     map[string]any
	servedBy string
}

// code is the Connect error code of a failed call, "" for a success.
func (a jsonAnswer) code() string {
	c, _ := a.body["code"].(string)
	return c
}

func (c jsonClient) call(url, procedure, tenant string, body map[string]any) jsonAnswer {
	c.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		c.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url+procedure, bytes.NewReader(b))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.secret)
	if tenant != "" {
		req.Header.Set(routing.TenantHeader, tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	out := jsonAnswer{status: resp.StatusCode, servedBy: resp.Header.Get("Keyplane-Served-By")}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		c.t.Fatalf("%s: %s: not JSON: %q", procedure, resp.Status, raw)
	}
	return out
}

// must is call for a setup step that has to succeed; it returns the answer's body.
func (c jsonClient) must(url, procedure, tenant string, body map[string]any) map[string]any {
	c.t.Helper()
	a := c.call(url, procedure, tenant, body)
	if a.status != http.StatusOK {
		c.t.Fatalf("%s: %d %v", procedure, a.status, a.body)
	}
	return a.body
}

func field(m map[string]any, path ...string) string {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[p]
	}
	s, _ := v.(string)
	return s
}

// outsideClientCases is the held-out review's style of test: authorization cases
// against the three-region cluster through a plain JSON client, each sent through a
// node of some region (acme lives in us-east, so most are forwarded).
func outsideClientCases(t *testing.T, mr *multiRegion) {
	const (
		tenant = "acme"
		admin  = "/keyplane.v1.AdminService/"
		check  = "/keyplane.v1.CheckService/"
	)
	cl := mr.cl
	c := jsonClient{t: t, secret: cl.OperatorSecret}
	node := func(region string, i int) string { return cl.RegionNodes(region)[i%2].URL }
	setup := node("eu-west", 0)

	role := func(name string, perms ...string) string {
		return field(c.must(setup, admin+"CreateRole", tenant, map[string]any{"tenantId": tenant, "name": name, "permissions": perms}), "role", "id")
	}
	human := func(name string) string {
		return field(c.must(setup, admin+"CreateIdentity", tenant, map[string]any{"tenantId": tenant, "kind": "IDENTITY_KIND_HUMAN",
			"displayName": name}), "identity", "id")
	}
	bind := func(b map[string]any) string {
		b["tenantId"] = tenant
		if b["principalKind"] == nil {
			b["principalKind"] = "identity"
		}
		b["justification"] = "outside-client cases"
		return field(c.must(setup, admin+"CreateBinding", tenant, b), "binding", "id")
	}
	reader, editor, all := role("oc-reader", "docs.document.read"), role("oc-editor", "docs.*"), role("oc-all", "*")
	alice, bob, carol, dave, erin := human("alice"), human("bob"), human("carol"), human("dave"), human("erin")
	group := field(c.must(setup, admin+"CreateGroup", tenant, map[string]any{"tenantId": tenant, "name": "oc-contractors"}), "group", "id")
	c.must(setup, admin+"AddGroupMember", tenant, map[string]any{"tenantId": tenant, "groupId": group, "identityId": dave})

	aliceRead := bind(map[string]any{"principalId": alice, "roleId": reader, "scope": "projects/alpha/"})
	bind(map[string]any{"principalId": alice, "roleId": editor, "scope": "projects/alpha/secret/", "effect": "EFFECT_DENY"})
	bind(map[string]any{"principalId": alice, "roleId": reader, "scope": "eu/", "condition": `request.region == "eu-west"`})
	bind(map[string]any{"principalId": bob, "roleId": editor, "scope": "*", "condition": `has(context.ticket)`})
	bind(map[string]any{"principalId": carol, "roleId": reader, "scope": "projects/beta/", "condition": `request.time > timestamp("2020-01-01T00:00:00Z")`})
	bind(map[string]any{"principalId": carol, "roleId": reader, "scope": "net/", "condition": `cidr("127.0.0.0/8").containsIP(request.ip)`})
	bind(map[string]any{"principalId": carol, "roleId": reader, "scope": "office/", "condition": `cidr("10.0.0.0/8").containsIP(request.ip)`})
	bind(map[string]any{"principalId": carol, "roleId": reader, "scope": "laptops/", "condition": `device.managed && !device.jailbroken`})
	bind(map[string]any{"principalId": carol, "roleId": all, "scope": "ops/"})
	bind(map[string]any{"principalId": dave, "roleId": reader, "scope": "beta/"})
	bind(map[string]any{"principalKind": "group", "principalId": group, "roleId": reader, "scope": "beta/confidential/", "effect": "EFFECT_DENY"})
	bind(map[string]any{"principalId": erin, "roleId": reader, "scope": "*", "expireTime": time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)})

	type tc struct {
		name, via, who, perm, resource string
		context                        map[string]any
		device                         map[string]any
		want                           string // DECISION_ALLOW, DECISION_DENY or a Connect error code
	}
	managed := map[string]any{"managed": true, "jailbroken": false}
	decide := func(tt tc) {
		t.Helper()
		body := map[string]any{"tenantId": tenant, "identityId": tt.who, "permission": tt.perm, "resource": tt.resource}
		if tt.context != nil {
			body["context"] = tt.context
		}
		if tt.device != nil {
			body["device"] = tt.device
		}
		a := c.call(tt.via, check+"Check", tenant, body)
		got := field(a.body, "decision")
		if a.status != http.StatusOK {
			got = a.code()
		}
		if got != tt.want {
			t.Errorf("%s: %s %s on %s via %s: %s %v, want %s", tt.name, tt.who, tt.perm, tt.resource, tt.via, got, a.body, tt.want)
		}
		if allowed, _ := a.body["allowed"].(bool); a.status == http.StatusOK && allowed != (got == "DECISION_ALLOW") {
			t.Errorf("%s: allowed %v disagrees with decision %s", tt.name, a.body["allowed"], got)
		}
	}
	for _, tt := range []tc{
		{"prefix scope", node("ap-south", 0), alice, "docs.document.read", "projects/alpha/doc", nil, nil, "DECISION_ALLOW"},
		{"prefix is not a string prefix", node("ap-south", 1), alice, "docs.document.read", "projects/alphabet/doc", nil, nil, "DECISION_DENY"},
		{"role lacks the permission", node("us-east", 0), alice, "docs.document.write", "projects/alpha/doc", nil, nil, "DECISION_DENY"},
		{"deny wins over allow", node("eu-west", 1), alice, "docs.document.read", "projects/alpha/secret/plan", nil, nil, "DECISION_DENY"},
		{"condition on context, absent", node("eu-west", 0), bob, "docs.document.write", "x/1", nil, nil, "DECISION_DENY"},
		{"condition on context, present", node("eu-west", 0), bob, "docs.document.write", "x/1", map[string]any{"ticket": "T-7"}, nil, "DECISION_ALLOW"},
		{"wildcard pattern stops at its service", node("us-east", 1), bob, "billing.invoice.pay", "x/1", map[string]any{"ticket": "T-7"}, nil, "DECISION_DENY"},
		{"condition on time", node("ap-south", 0), carol, "docs.document.read", "projects/beta/x", nil, nil, "DECISION_ALLOW"},
		{"condition on the caller's IP, forwarded", node("ap-south", 1), carol, "docs.document.read", "net/x", nil, nil, "DECISION_ALLOW"},
		{"condition on the caller's IP, local", node("us-east", 0), carol, "docs.document.read", "net/x", nil, nil, "DECISION_ALLOW"},
		{"CIDR outside the caller's network", node("eu-west", 1), carol, "docs.document.read", "office/x", nil, nil, "DECISION_DENY"},
		{"device posture, managed", node("ap-south", 0), carol, "docs.document.read", "laptops/x", nil, managed, "DECISION_ALLOW"},
		{"device posture, jailbroken", node("ap-south", 1), carol, "docs.document.read", "laptops/x", nil,
			map[string]any{"managed": true, "jailbroken": true}, "DECISION_DENY"},
		{"device posture absent fails closed", node("us-east", 0), carol, "docs.document.read", "laptops/x", nil, nil, "DECISION_DENY"},
		{"device attribute of the wrong type", node("eu-west", 0), carol, "docs.document.read", "laptops/x", nil,
			map[string]any{"managed": "yes"}, "invalid_argument"},
		{"role * grants any permission", node("eu-west", 0), carol, "billing.invoice.pay", "ops/x", nil, nil, "DECISION_ALLOW"},
		{"role * only on its scope", node("eu-west", 0), carol, "billing.invoice.pay", "dev/x", nil, nil, "DECISION_DENY"},
		{"a group's deny reaches its member", node("us-east", 1), dave, "docs.document.read", "beta/confidential/1", nil, nil, "DECISION_DENY"},
		{"the member's own allow elsewhere", node("ap-south", 0), dave, "docs.document.read", "beta/public/1", nil, nil, "DECISION_ALLOW"},
		{"request.region entered at eu-west", node("eu-west", 1), alice, "docs.document.read", "eu/1", nil, nil, "DECISION_ALLOW"},
		{"request.region entered at us-east", node("us-east", 0), alice, "docs.document.read", "eu/1", nil, nil, "DECISION_DENY"},
		{"request.region entered at ap-south", node("ap-south", 0), alice, "docs.document.read", "eu/1", nil, nil, "DECISION_DENY"},
		{"no binding at all", node("us-east", 0), erin, "docs.document.write", "x/1", nil, nil, "DECISION_DENY"},
		{"invalid permission", node("eu-west", 0), alice, "docs.*", "x/1", nil, nil, "invalid_argument"},
		{"unknown identity", node("eu-west", 0), "0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b", "docs.document.read", "x/1", nil, nil, "not_found"},
	} {
		decide(tt)
	}

	// WhoCan agrees with Check, groups expanded, denies applied.
	whoCan := func(via, resource string) []string {
		a := c.call(via, check+"WhoCan", tenant, map[string]any{"tenantId": tenant, "permission": "docs.document.read", "resource": resource})
		if a.status != http.StatusOK {
			t.Fatalf("WhoCan %s: %d %v", resource, a.status, a.body)
		}
		var ids []string
		hs, _ := a.body["holders"].([]any)
		for _, h := range hs {
			if m, _ := h.(map[string]any); m["kind"] == "identity" {
				ids = append(ids, fmt.Sprint(m["id"]))
			}
		}
		return ids
	}
	if got := whoCan(node("ap-south", 1), "beta/confidential/1"); slices.Contains(got, dave) {
		t.Errorf("WhoCan(read, beta/confidential/1) lists dave, whom Check denies: %v", got)
	}
	if got := whoCan(node("eu-west", 1), "beta/public/1"); !slices.Contains(got, dave) {
		t.Errorf("WhoCan(read, beta/public/1) = %v, want dave", got)
	}

	// Cross-tenant: the header and the body must agree, and another tenant's identity
	// is not found in this one.
	if a := c.call(node("us-east", 0), check+"Check", "globex", map[string]any{"tenantId": tenant, "identityId": alice,
		"permission": "docs.document.read", "resource": "projects/alpha/doc"}); a.code() != "invalid_argument" || !strings.Contains(field(a.body, "message"), "tenant") {
		t.Errorf("Check naming acme under Keyplane-Tenant globex: %d %v, want invalid_argument naming the tenant", a.status, a.body)
	}
	if a := c.call(node("ap-south", 0), check+"Check", "globex", map[string]any{"tenantId": "globex", "identityId": alice,
		"permission": "docs.document.read", "resource": "projects/alpha/doc"}); a.code() != "not_found" {
		t.Errorf("Check of acme's alice in globex: %d %v, want not_found", a.status, a.body)
	}

	// An expiring binding stops applying; a removed one is gone at once everywhere.
	time.Sleep(2 * time.Second)
	decide(tc{"expired binding", node("ap-south", 0), erin, "docs.document.read", "x/1", nil, nil, "DECISION_DENY"})
	c.must(node("eu-west", 1), admin+"DeleteBinding", tenant, map[string]any{"tenantId": tenant, "bindingId": aliceRead})
	for _, n := range cl.Nodes {
		decide(tc{"binding removal seen from " + n.ID, n.URL, alice, "docs.document.read", "projects/alpha/doc", nil, nil, "DECISION_DENY"})
	}
}
