package authz_test

import (
	"fmt"
	"testing"

	"github.com/keyplane/keyplane/region/authz"
)

// benchPolicy has 5,000 identities, 100 roles, 300 groups with every identity
// in 3 of them, and 10,000 bindings: one direct allow per identity and 5,000
// group bindings (about 17 per group; a tenth conditional, some denies).
func benchPolicy() authz.Policy {
	const (
		identities = 5000
		roles      = 100
		groups     = 300
	)
	services := []string{"docs", "iam", "billing", "compute", "storage"}
	p := authz.Policy{Revision: 1, Members: make(map[string][]string, groups)}
	for i := range roles {
		svc := services[i%len(services)]
		perms := []string{fmt.Sprintf("%s.res%d.read", svc, i%10), fmt.Sprintf("%s.res%d.*", svc, (i+1)%10)}
		if i%20 == 0 {
			perms = append(perms, svc+".*")
		}
		p.Roles = append(p.Roles, authz.Role{ID: fmt.Sprintf("role%d", i), Permissions: perms, Sensitive: i%25 == 0})
	}
	for i := range identities {
		id := fmt.Sprintf("user%d", i)
		for k := range 3 {
			g := fmt.Sprintf("group%d", (i*3+k*101)%groups)
			p.Members[g] = append(p.Members[g], id)
		}
	}
	n := 0
	add := func(kind, principal, scope, cond string, effect authz.Effect) {
		p.Bindings = append(p.Bindings, authz.Binding{
			ID: fmt.Sprintf("b%d", n), PrincipalKind: kind, PrincipalID: principal, RoleID: fmt.Sprintf("role%d", n%roles),
			Scope: scope, Condition: cond, Effect: effect,
		})
		n++
	}
	for i := range identities {
		add("identity", fmt.Sprintf("user%d", i), fmt.Sprintf("projects/p%d/", i%50), "", authz.Allow)
	}
	for i := range 5000 {
		g := fmt.Sprintf("group%d", i%groups)
		switch {
		case i%10 == 0:
			add("group", g, fmt.Sprintf("projects/p%d/", i%50), `principal.attributes.department == "eng"`, authz.Allow)
		case i%37 == 0:
			add("group", g, fmt.Sprintf("projects/p%d/secret/", i%50), "", authz.Deny)
		default:
			add("group", g, fmt.Sprintf("projects/p%d/", i%50), "", authz.Allow)
		}
	}
	return p
}

func BenchmarkCheck(b *testing.B) {
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		b.Fatal(err)
	}
	s, err := env.Compile(benchPolicy())
	if err != nil {
		b.Fatal(err)
	}
	attrs := map[string]any{"department": "eng"}
	reqs := make([]authz.Request, 1024)
	for i := range reqs {
		user := (i * 7919) % 5000
		if i%2 == 0 {
			user = (i*50 + i%50) % 5000 // direct binding's scope covers the resource
		}
		reqs[i] = authz.Request{
			PrincipalID:    fmt.Sprintf("user%d", user),
			PrincipalAttrs: attrs,
			Permission:     fmt.Sprintf("docs.res%d.read", i%10),
			Resource:       fmt.Sprintf("projects/p%d/documents/d%d", i%50, i),
			Time:           t0,
		}
	}
	allowed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if s.Check(reqs[i%len(reqs)]).Allowed {
			allowed++
		}
	}
	b.ReportMetric(float64(allowed)/float64(b.N), "allowed/op")
}

func BenchmarkCompile(b *testing.B) {
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		b.Fatal(err)
	}
	p := benchPolicy()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := env.Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}
