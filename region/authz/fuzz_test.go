package authz_test

import (
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/authz"
)

func FuzzValidateResource(f *testing.F) {
	for _, s := range []string{"projects/alpha", "", "/", "a//b", "a/./b", "a/../b", "x~:@-._/y", strings.Repeat("a/", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, r string) {
		err := authz.ValidateResource(r)
		if err != nil {
			return
		}
		if len(r) > 1024 || strings.HasPrefix(r, "/") || strings.HasSuffix(r, "/") || strings.Contains(r, "//") {
			t.Fatalf("ValidateResource(%q) accepted a malformed resource", r)
		}
		segs := strings.Split(r, "/")
		if len(segs) > 32 {
			t.Fatalf("ValidateResource(%q) accepted %d segments", r, len(segs))
		}
		for _, s := range segs {
			if s == "." || s == ".." || len(s) > 128 {
				t.Fatalf("ValidateResource(%q) accepted segment %q", r, s)
			}
		}
		// A valid resource is a valid scope, as is its prefix form, and
		// each covers exactly what it should.
		if err := authz.ValidateScope(r); err != nil {
			t.Fatalf("ValidateScope(%q) = %v for a valid resource", r, err)
		}
		if err := authz.ValidateScope(r + "/"); err != nil {
			t.Fatalf("ValidateScope(%q) = %v for a valid resource prefix", r+"/", err)
		}
		if !authz.ScopeCovers(r, r) || !authz.ScopeCovers("*", r) || authz.ScopeCovers(r+"/", r) {
			t.Fatalf("ScopeCovers misbehaves for %q", r)
		}
	})
}

func FuzzPermission(f *testing.F) {
	for _, s := range [][2]string{{"*", "docs.document.read"}, {"docs.*", "docs.document.read"}, {"docs.document.*", "docs.folder.read"}, {"a.b.c", "a.b.c"}, {".*", ".."}, {"docs.doc*", "docs.document.read"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, perm string) {
		permErr := authz.ValidatePermission(perm)
		patErr := authz.ValidatePermissionPattern(pattern)
		if permErr == nil {
			if strings.Count(perm, ".") != 2 || strings.Contains(perm, "*") {
				t.Fatalf("ValidatePermission(%q) accepted a malformed permission", perm)
			}
			if authz.ValidatePermissionPattern(perm) != nil {
				t.Fatalf("valid permission %q is not a valid pattern", perm)
			}
			if !authz.MatchPermission(perm, perm) || !authz.MatchPermission("*", perm) {
				t.Fatalf("MatchPermission misbehaves for %q", perm)
			}
			svc, _, _ := strings.Cut(perm, ".")
			if !authz.MatchPermission(svc+".*", perm) {
				t.Fatalf("MatchPermission(%q, %q) = false", svc+".*", perm)
			}
		}
		match := authz.MatchPermission(pattern, perm)
		if match && (permErr != nil || patErr != nil) {
			t.Fatalf("MatchPermission(%q, %q) = true for invalid input", pattern, perm)
		}
		if match && pattern != "*" && pattern != perm && !strings.HasPrefix(perm, strings.TrimSuffix(pattern, "*")) {
			t.Fatalf("MatchPermission(%q, %q) = true without a prefix match", pattern, perm)
		}
	})
}

func FuzzCheckCondition(f *testing.F) {
	for _, s := range []string{
		`request.time.getHours() < 18`,
		`principal.attributes.department == "eng"`,
		`"mfa" in token.amr && request.time - token.auth_time < duration("10m")`,
		`has(context.ticket) && context.ticket != ""`,
		`[1,2,3].all(x, [1,2].exists(y, x > y))`,
		`resource.path.matches("^projects/[a-z]+/")`,
		`request.region ==`,
		`cidr("10.0.0.0/8").containsIP(request.ip)`,
		`["10.0.0.0/8", "192.168.0.0/16"].exists(c, cidr(c).containsIP(request.ip))`,
		`ip(request.ip).family() == 6 && !ip(request.ip).isLoopback()`,
		`cidr("10.0.0.0/8").containsCIDR("10.1.0.0/16") && isCIDR("x") == false`,
		`cidr("10.0.0.0/33").containsIP(request.ip)`,
		`request.country in ["DE", "FR"]`,
		`device.managed && device.compliant && !device.jailbroken && device.asserted_by != ""`,
		`request.time - device.attested_time < duration("1h")`,
	} {
		f.Add(s)
	}
	env := newEnv(f, 1000)
	f.Fuzz(func(t *testing.T, expr string) {
		if len(expr) > 512 {
			return
		}
		if env.CheckCondition(expr) != nil {
			return
		}
		// An accepted condition compiles into a policy and evaluates without
		// panicking, within the cost limit.
		snap, err := env.Compile(authz.Policy{
			Roles:    testRoles,
			Bindings: []authz.Binding{withCond(allow("b1", "identity", "alice", "viewer", "*"), expr)},
		})
		if err != nil {
			t.Fatalf("CheckCondition accepted %q but Compile failed: %v", expr, err)
		}
		r := read()
		r.PrincipalAttrs = map[string]any{"department": "eng"}
		r.Context = map[string]any{"ticket": "t"}
		snap.Check(r)
		r.IP, r.Country = "10.1.2.3", "DE"
		r.Device = &authz.Device{ID: "d1", Managed: true, AttestedTime: t0, AssertedBy: "app"}
		snap.Check(r)
	})
}

func FuzzCheck(f *testing.F) {
	f.Add("docs.document.read", "projects/alpha/documents/d1", "alice")
	f.Add("docs.*", "projects/alpha/", "alice")
	f.Add("*", "*", "bob")
	f.Add("iam.role.delete", "projects/alpha/../x", "")
	f.Add("docs.document.read", "projects/alpha", "eng")
	s := compile(f,
		allow("b1", "identity", "alice", "admin", "*"),
		allow("b2", "group", "eng", "editor", "projects/alpha/"),
		withCond(allow("b3", "identity", "bob", "viewer", "*"), `resource.path.startsWith("projects/")`),
		withCond(deny("b4", "group", "ops", "viewer", "projects/secret/"), `context.x == 1`),
	)
	f.Fuzz(func(t *testing.T, perm, resource, principal string) {
		for _, kind := range []string{"", "identity", "group"} {
			d := s.Check(authz.Request{PrincipalID: principal, PrincipalKind: kind, Permission: perm, Resource: resource, Time: t0, Explain: true})
			if d.Reason == "" {
				t.Fatalf("Check(%q, %q, %q) has no reason", principal, perm, resource)
			}
			if d.Allowed && (authz.ValidatePermission(perm) != nil || authz.ValidateResource(resource) != nil) {
				t.Fatalf("Check(%q, %q, %q) allowed an invalid request", principal, perm, resource)
			}
			if d.Allowed && len(d.BindingIDs) == 0 {
				t.Fatalf("Check(%q, %q, %q) allowed without a deciding binding", principal, perm, resource)
			}
		}
	})
}

// FuzzIncludes checks that inclusion is sound: whatever the included pattern or
// scope matches, the including one matches too (elevation approvals rely on it).
func FuzzIncludes(f *testing.F) {
	f.Add("docs.*", "docs.document.*", "docs.document.read", "prod/", "prod/db/", "prod/db/x")
	f.Add("*", "iam.*", "iam.elevations.approve", "*", "prod/", "prod/a")
	f.Add("docs.document.read", "docs.document.read", "docs.document.read", "prod/db", "prod/db", "prod/db")
	f.Add("docs.*", "docsx.*", "docsx.a.b", "prod/", "production/", "production/x")
	f.Fuzz(func(t *testing.T, outerPat, innerPat, perm, outerScope, innerScope, resource string) {
		if authz.PatternIncludes(outerPat, innerPat) && authz.MatchPermission(innerPat, perm) && !authz.MatchPermission(outerPat, perm) {
			t.Fatalf("PatternIncludes(%q, %q) but only the inner matches %q", outerPat, innerPat, perm)
		}
		if authz.PatternIncludes(outerPat, innerPat) && !authz.PatternIncludes(outerPat, outerPat) {
			t.Fatalf("PatternIncludes(%q, %q) for a pattern that does not include itself", outerPat, innerPat)
		}
		if authz.ScopeIncludes(outerScope, innerScope) && authz.ScopeCovers(innerScope, resource) && !authz.ScopeCovers(outerScope, resource) {
			t.Fatalf("ScopeIncludes(%q, %q) but only the inner covers %q", outerScope, innerScope, resource)
		}
	})
}
