package authz_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/region/authz"
)

var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

var testRoles = []authz.Role{
	{ID: "viewer", Name: "Viewer", Permissions: []string{"docs.document.read", "docs.folder.list"}},
	{ID: "editor", Name: "Editor", Permissions: []string{"docs.*"}},
	{ID: "doc-writer", Name: "Document writer", Permissions: []string{"docs.document.*"}},
	{ID: "admin", Name: "Administrator", Permissions: []string{"*"}, Sensitive: true},
}

var testMembers = map[string][]string{
	"eng": {"alice", "bob"},
	"ops": {"carol", "alice"},
}

func compile(t testing.TB, bindings ...authz.Binding) *authz.Snapshot {
	t.Helper()
	s, err := newEnv(t, 0).Compile(authz.Policy{Revision: 7, Roles: testRoles, Bindings: bindings, Members: testMembers})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func allow(id, kind, principal, roleID, scope string) authz.Binding {
	return authz.Binding{ID: id, PrincipalKind: kind, PrincipalID: principal, RoleID: roleID, Scope: scope, Effect: authz.Allow}
}

func deny(id, kind, principal, roleID, scope string) authz.Binding {
	b := allow(id, kind, principal, roleID, scope)
	b.Effect = authz.Deny
	return b
}

func withCond(b authz.Binding, cond string) authz.Binding {
	b.Condition = cond
	return b
}

func withExpiry(b authz.Binding, at time.Time) authz.Binding {
	b.ExpiresAt = at
	return b
}

// read is alice reading a document in project alpha at t0.
func read() authz.Request {
	return authz.Request{
		PrincipalID: "alice",
		Permission:  "docs.document.read",
		Resource:    "projects/alpha/documents/d1",
		Time:        t0,
		Explain:     true,
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		bindings      []authz.Binding
		req           func(*authz.Request)
		wantAllowed   bool
		wantIDs       []string
		wantSensitive bool
		wantReason    string
	}{
		{
			name:        "direct grant",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "projects/alpha/")},
			wantAllowed: true, wantIDs: []string{"b1"},
			wantReason: "allowed by binding b1 (role viewer on projects/alpha/)",
		},
		{
			name:        "group grant",
			bindings:    []authz.Binding{allow("b1", "group", "eng", "viewer", "projects/alpha/")},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "group grant to a group alice is not in",
			bindings: []authz.Binding{allow("b1", "group", "sales", "viewer", "*")},
			wantIDs:  nil, wantReason: "no binding grants docs.document.read on projects/alpha/documents/d1",
		},
		{
			name:        "service wildcard role",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "editor", "*")},
			req:         func(r *authz.Request) { r.Permission = "docs.folder.delete" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "service wildcard does not cross services",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "editor", "*")},
			req:      func(r *authz.Request) { r.Permission = "iam.role.get" },
		},
		{
			name:        "resource wildcard role",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "doc-writer", "*")},
			req:         func(r *authz.Request) { r.Permission = "docs.document.write" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "resource wildcard does not cover other resources",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "doc-writer", "*")},
			req:      func(r *authz.Request) { r.Permission = "docs.folder.list" },
		},
		{
			name:        "star role is sensitive",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "admin", "*")},
			req:         func(r *authz.Request) { r.Permission = "iam.role.delete" },
			wantAllowed: true, wantIDs: []string{"b1"}, wantSensitive: true,
		},
		{
			name:        "non-sensitive decider among sensitive candidates",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"), allow("b2", "identity", "alice", "admin", "projects/beta/")},
			wantAllowed: true, wantIDs: []string{"b1"}, wantSensitive: false,
		},
		{
			name:        "all matching allows decide",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"), allow("b2", "group", "ops", "admin", "projects/alpha/")},
			wantAllowed: true, wantIDs: []string{"b1", "b2"}, wantSensitive: true,
		},
		{
			name:     "prefix scope excludes sibling with shared prefix",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "projects/alpha/")},
			req:      func(r *authz.Request) { r.Resource = "projects/alphabet/documents/d1" },
		},
		{
			name:     "prefix scope excludes the prefix itself",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "projects/alpha/")},
			req:      func(r *authz.Request) { r.Resource = "projects/alpha" },
		},
		{
			name:        "exact scope",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "projects/alpha/documents/d1")},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "exact scope excludes children",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "projects/alpha")},
		},
		{
			name:        "star scope",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*")},
			req:         func(r *authz.Request) { r.Resource = "orgs/o1/projects/zeta/documents/d9" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:       "direct deny beats group allow",
			bindings:   []authz.Binding{allow("b1", "group", "eng", "editor", "*"), deny("b9", "identity", "alice", "viewer", "projects/alpha/")},
			wantIDs:    []string{"b9"},
			wantReason: "denied by deny binding b9",
		},
		{
			name:     "group deny beats direct allow",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "admin", "*"), deny("b9", "group", "ops", "doc-writer", "*")},
			wantIDs:  []string{"b9"},
		},
		{
			name:     "all matching denies decide",
			bindings: []authz.Binding{deny("b8", "group", "eng", "viewer", "*"), allow("b1", "identity", "alice", "admin", "*"), deny("b9", "group", "ops", "doc-writer", "*")},
			wantIDs:  []string{"b8", "b9"},
		},
		{
			name:        "deny of another permission does not apply",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"), deny("b9", "identity", "alice", "admin", "projects/beta/")},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "deny of a sensitive role is sensitive",
			bindings: []authz.Binding{deny("b9", "identity", "alice", "admin", "*")},
			wantIDs:  []string{"b9"}, wantSensitive: true,
		},
		{
			name:        "expiry just after request time",
			bindings:    []authz.Binding{withExpiry(allow("b1", "identity", "alice", "viewer", "*"), t0.Add(time.Nanosecond))},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "expiry exactly at request time",
			bindings: []authz.Binding{withExpiry(allow("b1", "identity", "alice", "viewer", "*"), t0)},
		},
		{
			name:     "expiry just before request time",
			bindings: []authz.Binding{withExpiry(allow("b1", "identity", "alice", "viewer", "*"), t0.Add(-time.Nanosecond))},
		},
		{
			name:        "expired deny no longer applies",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"), withExpiry(deny("b9", "identity", "alice", "viewer", "*"), t0.Add(-time.Second))},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:        "condition true",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `principal.attributes.department == "eng"`)},
			req:         func(r *authz.Request) { r.PrincipalAttrs = map[string]any{"department": "eng"} },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "condition false",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `principal.attributes.department == "eng"`)},
			req:      func(r *authz.Request) { r.PrincipalAttrs = map[string]any{"department": "sales"} },
		},
		{
			name:     "condition error fails closed for allow",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `principal.attributes.department == "eng"`)},
		},
		{
			name: "condition error applies deny",
			bindings: []authz.Binding{
				allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `principal.attributes.department != "eng"`),
			},
			wantIDs: []string{"b9"},
		},
		{
			name: "false deny condition lets allow through",
			bindings: []authz.Binding{
				allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `principal.attributes.department != "eng"`),
			},
			req:         func(r *authz.Request) { r.PrincipalAttrs = map[string]any{"department": "eng"} },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:        "working hours",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.time.getHours() < 18`)},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "outside working hours",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.time.getHours() < 18`)},
			req:      func(r *authz.Request) { r.Time = t0.Add(7 * time.Hour) },
		},
		{
			name:        "resource path condition",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `resource.path.startsWith("projects/alpha/")`)},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:        "region condition",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.region == "eu-west"`)},
			req:         func(r *authz.Request) { r.Region = "eu-west" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:        "ip condition with a known address",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.ip.startsWith("10.")`)},
			req:         func(r *authz.Request) { r.IP = "10.1.2.3" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "allow reading an unknown ip does not apply",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.ip == "" || request.ip.startsWith("10.")`)},
			req:      func(r *authz.Request) { r.IP = "" },
		},
		{
			name: "deny reading an unknown ip applies",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `request.ip == "203.0.113.9"`)},
			req:     func(r *authz.Request) { r.IP = "" },
			wantIDs: []string{"b9"},
		},
		{
			name: "deny using the whole request object with an unknown ip applies",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `[request].all(x, x.region == "cn")`)},
			req:     func(r *authz.Request) { r.IP = "" },
			wantIDs: []string{"b9"},
		},
		{
			name:        "a condition not reading the ip is decided without one",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `request.region == "eu-west"`)},
			req:         func(r *authz.Request) { r.IP, r.Region = "", "eu-west" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "allow reading the token of a check without one does not apply",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `!("mfa" in token.amr)`)},
		},
		{
			name: "deny reading the token of a check without one applies",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `token.auth_time > timestamp("2026-06-01T00:00:00Z")`)},
			wantIDs: []string{"b9"},
		},
		{
			name: "deny reading the token applies by its value when there is one",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"),
				withCond(deny("b9", "identity", "alice", "viewer", "*"), `token.auth_time > timestamp("2026-06-01T00:00:00Z")`)},
			req:         func(r *authz.Request) { r.AuthTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:        "context ticket present",
			bindings:    []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `has(context.ticket) && context.ticket != ""`)},
			req:         func(r *authz.Request) { r.Context = map[string]any{"ticket": "INC-42"} },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:     "context ticket absent",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), `has(context.ticket) && context.ticket != ""`)},
		},
		{
			name:     "step-up with fresh mfa",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "admin", "*"), stepUp)},
			req: func(r *authz.Request) {
				r.AMR = []string{"pwd", "mfa"}
				r.AuthTime = t0.Add(-5 * time.Minute)
			},
			wantAllowed: true, wantIDs: []string{"b1"}, wantSensitive: true,
		},
		{
			name:     "step-up with stale mfa",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "admin", "*"), stepUp)},
			req: func(r *authz.Request) {
				r.AMR = []string{"pwd", "mfa"}
				r.AuthTime = t0.Add(-11 * time.Minute)
			},
		},
		{
			name:     "step-up without mfa",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "admin", "*"), stepUp)},
			req: func(r *authz.Request) {
				r.AMR = []string{"pwd"}
				r.AuthTime = t0.Add(-time.Minute)
			},
		},
		{
			name:     "step-up with unknown auth time",
			bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "admin", "*"), stepUp)},
			req:      func(r *authz.Request) { r.AMR = []string{"mfa"} },
		},
		{
			name:     "unknown role never matches",
			bindings: []authz.Binding{allow("b1", "identity", "alice", "ghost", "*")},
		},
		{
			name:        "unknown role deny never matches",
			bindings:    []authz.Binding{allow("b1", "identity", "alice", "viewer", "*"), deny("b9", "identity", "alice", "ghost", "*")},
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:       "default deny",
			wantReason: "no binding grants docs.document.read on projects/alpha/documents/d1",
		},
		{
			name:     "another identity's grant",
			bindings: []authz.Binding{allow("b1", "identity", "bob", "admin", "*")},
		},
		{
			name:        "group principal checked directly",
			bindings:    []authz.Binding{allow("b1", "group", "eng", "viewer", "*"), allow("b2", "identity", "alice", "viewer", "*")},
			req:         func(r *authz.Request) { r.PrincipalKind, r.PrincipalID = "group", "eng" },
			wantAllowed: true, wantIDs: []string{"b1"},
		},
		{
			name:       "invalid permission",
			bindings:   []authz.Binding{allow("b1", "identity", "alice", "admin", "*")},
			req:        func(r *authz.Request) { r.Permission = "docs.*" },
			wantReason: "invalid permission",
		},
		{
			name:       "invalid resource",
			bindings:   []authz.Binding{allow("b1", "identity", "alice", "admin", "*")},
			req:        func(r *authz.Request) { r.Resource = "projects/../secrets" },
			wantReason: "invalid resource",
		},
		{
			name:       "invalid principal kind",
			bindings:   []authz.Binding{allow("b1", "identity", "alice", "admin", "*")},
			req:        func(r *authz.Request) { r.PrincipalKind = "robot" },
			wantReason: "invalid principal",
		},
		{
			name:       "empty principal",
			req:        func(r *authz.Request) { r.PrincipalID = "" },
			wantReason: "invalid principal",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := compile(t, tt.bindings...)
			r := read()
			if tt.req != nil {
				tt.req(&r)
			}
			d := s.Check(r)
			if d.Allowed != tt.wantAllowed {
				t.Fatalf("Allowed = %v, want %v (reason %q, trace %q)", d.Allowed, tt.wantAllowed, d.Reason, d.Trace)
			}
			if !slices.Equal(d.BindingIDs, tt.wantIDs) {
				t.Errorf("BindingIDs = %q, want %q (trace %q)", d.BindingIDs, tt.wantIDs, d.Trace)
			}
			if d.Sensitive != tt.wantSensitive {
				t.Errorf("Sensitive = %v, want %v", d.Sensitive, tt.wantSensitive)
			}
			if !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", d.Reason, tt.wantReason)
			}
			if d.Reason == "" {
				t.Errorf("Reason is empty")
			}
		})
	}
}

const stepUp = `"mfa" in token.amr && request.time - token.auth_time < duration("10m")`

func TestCheckTrace(t *testing.T) {
	t.Parallel()
	s := compile(t,
		allow("b-match", "identity", "alice", "viewer", "projects/alpha/"),
		withExpiry(allow("b-expired", "identity", "alice", "viewer", "*"), t0.Add(-time.Hour)),
		allow("b-scope", "group", "eng", "viewer", "projects/beta/"),
		allow("b-perm", "group", "ops", "doc-writer", "*"),
		allow("b-role", "identity", "alice", "ghost", "*"),
		withCond(allow("b-false", "identity", "alice", "viewer", "*"), `request.region == "us"`),
		withCond(allow("b-err", "group", "eng", "viewer", "*"), `context.missing == "x"`),
		withCond(deny("b-deny-err", "group", "ops", "viewer", "projects/gamma/"), `context.missing == "x"`),
		allow("b-other", "identity", "bob", "viewer", "*"),
	)
	r := read()
	r.Permission = "docs.folder.list"
	d := s.Check(r)
	if !d.Allowed || !slices.Equal(d.BindingIDs, []string{"b-match"}) {
		t.Fatalf("Check = %+v, want allowed by b-match", d)
	}
	want := map[string]string{
		"b-match":    "matched",
		"b-expired":  "expired",
		"b-scope":    "scope",
		"b-perm":     "no permission matching docs.folder.list",
		"b-role":     "unknown role",
		"b-false":    "condition false",
		"b-err":      "condition error, allow does not apply",
		"b-deny-err": "scope",
	}
	if len(d.Trace) != len(want) {
		t.Errorf("Trace has %d lines, want %d: %q", len(d.Trace), len(want), d.Trace)
	}
	for id, frag := range want {
		found := false
		for _, line := range d.Trace {
			if strings.HasPrefix(line, id+":") {
				found = true
				if !strings.Contains(line, frag) {
					t.Errorf("trace line %q does not contain %q", line, frag)
				}
			}
		}
		if !found {
			t.Errorf("trace %q does not mention %s", d.Trace, id)
		}
	}
	for _, line := range d.Trace {
		if strings.HasPrefix(line, "b-other") {
			t.Errorf("trace mentions bob's binding: %q", line)
		}
	}

	r.Explain = false
	if d := s.Check(r); d.Trace != nil {
		t.Errorf("Trace without Explain = %q, want nil", d.Trace)
	}

	// A deny whose condition errors applies, and says so.
	r.Explain = true
	r.Resource = "projects/gamma/documents/d1"
	d = s.Check(r)
	if d.Allowed || !slices.Equal(d.BindingIDs, []string{"b-deny-err"}) {
		t.Fatalf("Check = %+v, want denied by b-deny-err", d)
	}
	if !slices.ContainsFunc(d.Trace, func(l string) bool {
		return strings.HasPrefix(l, "b-deny-err:") && strings.Contains(l, "condition error, deny applies")
	}) {
		t.Errorf("trace %q does not say the deny applies on error", d.Trace)
	}
}

func TestCheckCostLimitAtRuntime(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 10_000)
	cond := `context.items.all(x, x > 0)` // estimated against 1024 items; real input larger
	s, err := env.Compile(authz.Policy{
		Roles: testRoles,
		Bindings: []authz.Binding{
			allow("b1", "identity", "alice", "viewer", "*"),
			withCond(deny("b9", "identity", "alice", "viewer", "*"), `!`+cond),
			withCond(allow("b2", "identity", "bob", "viewer", "*"), cond),
		},
	})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	items := make([]any, 100_000)
	for i := range items {
		items[i] = i + 1
	}
	for _, id := range []string{"alice", "bob"} {
		r := read()
		r.PrincipalID = id
		r.Context = map[string]any{"items": items}
		if d := s.Check(r); d.Allowed {
			t.Errorf("%s: Check = %+v, want denied by cost limit", id, d)
		} else if !slices.ContainsFunc(d.Trace, func(l string) bool { return strings.Contains(l, "condition error") }) {
			t.Errorf("%s: trace %q does not report the condition error", id, d.Trace)
		}
		r.Context = map[string]any{"items": items[:10]}
		if d := s.Check(r); id == "bob" && !d.Allowed {
			t.Errorf("%s: small input: Check = %+v, want allowed", id, d)
		}
	}
}

func TestCheckConcurrent(t *testing.T) {
	t.Parallel()
	s := compile(t,
		withCond(allow("b1", "group", "eng", "viewer", "*"), `principal.attributes.department == "eng"`),
		deny("b9", "identity", "bob", "viewer", "projects/secret/"),
	)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				r := read()
				r.PrincipalAttrs = map[string]any{"department": "eng"}
				want := true
				if (i+j)%2 == 0 {
					r.PrincipalID, r.Resource, want = "bob", "projects/secret/x", false
				}
				if d := s.Check(r); d.Allowed != want {
					t.Errorf("Check(%s, %s) = %+v, want allowed=%v", r.PrincipalID, r.Resource, d, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSnapshotRevision(t *testing.T) {
	t.Parallel()
	if got := compile(t).Revision(); got != 7 {
		t.Fatalf("Revision() = %d, want 7", got)
	}
}

func TestSnapshotIsolatedFromPolicy(t *testing.T) {
	t.Parallel()
	roles := []authz.Role{{ID: "viewer", Permissions: []string{"docs.document.read"}}}
	p := authz.Policy{
		Roles:    roles,
		Bindings: []authz.Binding{allow("b1", "group", "eng", "viewer", "*")},
		Members:  map[string][]string{"eng": {"alice"}},
	}
	s, err := newEnv(t, 0).Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	roles[0].Permissions[0] = "docs.document.write"
	p.Bindings[0].Scope = "projects/none"
	p.Members["eng"][0] = "mallory"
	if d := s.Check(read()); !d.Allowed {
		t.Fatalf("after mutating the policy, Check = %+v, want allowed", d)
	}
}

func TestCompileRejects(t *testing.T) {
	t.Parallel()
	good := allow("b1", "identity", "alice", "viewer", "*")
	tests := []struct {
		name     string
		roles    []authz.Role
		bindings []authz.Binding
		want     []string // substrings of the error
	}{
		{"bad pattern", []authz.Role{{ID: "r1", Permissions: []string{"docs.doc*"}}}, nil, []string{`role "r1"`, "docs.doc*"}},
		{"empty role id", []authz.Role{{Permissions: []string{"*"}}}, nil, []string{"role #0", "id"}},
		{"duplicate role", []authz.Role{{ID: "r1"}, {ID: "r1"}}, nil, []string{`role "r1"`, "duplicate"}},
		{"bad scope", testRoles, []authz.Binding{good, func() authz.Binding { b := good; b.ID, b.Scope = "b2", "projects//x"; return b }()}, []string{`binding "b2"`, "scope"}},
		{"empty scope", testRoles, []authz.Binding{func() authz.Binding { b := good; b.Scope = ""; return b }()}, []string{`binding "b1"`, "scope"}},
		{"bad effect", testRoles, []authz.Binding{func() authz.Binding { b := good; b.Effect = "maybe"; return b }()}, []string{`binding "b1"`, "effect"}},
		{"empty effect", testRoles, []authz.Binding{func() authz.Binding { b := good; b.Effect = ""; return b }()}, []string{`binding "b1"`, "effect"}},
		{"bad kind", testRoles, []authz.Binding{func() authz.Binding { b := good; b.PrincipalKind = "robot"; return b }()}, []string{`binding "b1"`, "kind"}},
		{"empty principal", testRoles, []authz.Binding{func() authz.Binding { b := good; b.PrincipalID = ""; return b }()}, []string{`binding "b1"`, "principal id"}},
		{"empty binding id", testRoles, []authz.Binding{func() authz.Binding { b := good; b.ID = ""; return b }()}, []string{"binding #0"}},
		{"duplicate binding", testRoles, []authz.Binding{good, good}, []string{`binding "b1"`, "duplicate"}},
		{"bad condition", testRoles, []authz.Binding{withCond(good, `request.region ==`)}, []string{`binding "b1"`, "Syntax error"}},
		{"non-bool condition", testRoles, []authz.Binding{withCond(good, `request.region`)}, []string{`binding "b1"`, "bool"}},
		{"unknown variable", testRoles, []authz.Binding{withCond(good, `nope == 1`)}, []string{`binding "b1"`, "undeclared reference"}},
	}
	env := newEnv(t, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := env.Compile(authz.Policy{Roles: tt.roles, Bindings: tt.bindings})
			if err == nil {
				t.Fatalf("Compile = %v, nil; want error", s)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Compile error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestCheckTraceSumsUpScopeMisses: a principal bound on many scopes gets ten trace lines
// for bindings whose scope does not cover the resource and one line counting the rest;
// every other line stays.
func TestCheckTraceSumsUpScopeMisses(t *testing.T) {
	t.Parallel()
	bindings := []authz.Binding{allow("b-perm", "identity", "alice", "doc-writer", "*")}
	for i := range 25 {
		bindings = append(bindings, allow(fmt.Sprintf("b-scope-%02d", i), "group", "eng", "viewer", fmt.Sprintf("projects/p%02d/", i)))
	}
	s := compile(t, bindings...)
	r := read()
	r.Permission, r.Resource, r.Explain = "docs.folder.list", "projects/other/x", true
	d := s.Check(r)
	if d.Allowed {
		t.Fatalf("Check = %+v, want denied", d)
	}
	scope := 0
	for _, line := range d.Trace {
		if strings.Contains(line, ": scope ") {
			scope++
		}
	}
	last := d.Trace[len(d.Trace)-1]
	if scope != 10 || len(d.Trace) != 12 || last != "and 15 more bindings whose scope does not cover projects/other/x" ||
		!slices.ContainsFunc(d.Trace, func(l string) bool { return strings.HasPrefix(l, "b-perm: role doc-writer has no permission") }) {
		t.Fatalf("trace %q: want b-perm's line, 10 scope lines and one counting 15 more", d.Trace)
	}
}
