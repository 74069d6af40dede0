package authz_test

import (
	"fmt"
	"time"

	"github.com/keyplane/keyplane/region/authz"
)

func ExampleEnv_Compile() {
	env, err := authz.NewEnv(authz.EnvOptions{})
	if err != nil {
		panic(err)
	}
	snap, err := env.Compile(authz.Policy{
		Revision: 1,
		Roles: []authz.Role{
			{ID: "editor", Permissions: []string{"docs.*"}},
			{ID: "viewer", Permissions: []string{"docs.document.read"}},
		},
		Bindings: []authz.Binding{
			{ID: "b1", PrincipalKind: "group", PrincipalID: "eng", RoleID: "editor", Scope: "projects/alpha/", Effect: authz.Allow,
				Condition: `request.time.getHours() < 18`},
			{ID: "b9", PrincipalKind: "identity", PrincipalID: "bob", RoleID: "viewer", Scope: "projects/alpha/secret", Effect: authz.Deny},
		},
		Members: map[string][]string{"eng": {"alice", "bob"}},
	})
	if err != nil {
		panic(err)
	}
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	for _, r := range []authz.Request{
		{PrincipalID: "alice", Permission: "docs.document.read", Resource: "projects/alpha/secret", Time: at},
		{PrincipalID: "bob", Permission: "docs.document.read", Resource: "projects/alpha/secret", Time: at},
		{PrincipalID: "alice", Permission: "docs.document.read", Resource: "projects/alpha/secret", Time: at.Add(10 * time.Hour)},
	} {
		d := snap.Check(r)
		fmt.Println(d.Allowed, d.Reason)
	}
	// Output:
	// true allowed by binding b1 (role editor on projects/alpha/)
	// false denied by deny binding b9
	// false no binding grants docs.document.read on projects/alpha/secret
}
