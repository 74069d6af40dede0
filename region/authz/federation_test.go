package authz_test

import (
	"encoding/json"
	"testing"

	"github.com/keyplane/keyplane/region/authz"
)

func TestClaimsConditions(t *testing.T) {
	t.Parallel()
	env, err := authz.NewClaimsEnv(authz.EnvOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gh := map[string]any{"repository": "acme/api", "ref": "refs/heads/main", "workflow": "deploy"}
	k8s := map[string]any{"kubernetes.io": map[string]any{"namespace": "prod", "serviceaccount": map[string]any{"name": "deployer"}}}
	for _, tc := range []struct {
		name, expr string
		claims     map[string]any
		want       bool
		wantErr    bool
	}{
		{"ci main", `claims.repository == "acme/api" && claims.ref == "refs/heads/main"`, gh, true, false},
		{"ci other branch", `claims.repository == "acme/api" && claims.ref == "refs/heads/dev"`, gh, false, false},
		{"ci prefix", `claims.ref.startsWith("refs/heads/")`, gh, true, false},
		{"k8s namespace", `claims["kubernetes.io"].namespace == "prod"`, k8s, true, false},
		{"k8s service account", `claims["kubernetes.io"].serviceaccount.name == "deployer"`, k8s, true, false},
		{"missing claim fails closed", `claims.environment == "prod"`, gh, false, true},
		{"has() guards a missing claim", `has(claims.environment) && claims.environment == "prod"`, gh, false, false},
		{"wrong type fails closed", `claims.repository > 3`, gh, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := env.CheckCondition(tc.expr); err != nil {
				t.Fatalf("check %q: %v", tc.expr, err)
			}
			got, err := env.Holds(tc.expr, tc.claims)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Holds(%q) = %v, %v; want %v (error %v)", tc.expr, got, err, tc.want, tc.wantErr)
			}
		})
	}
	for _, bad := range []string{"", "claims.repository", "claims.x ==", "1 + 1", `[1,2,3].map(x, [1,2,3].map(y, [1,2,3].map(z, claims.a == claims.b))).size() > 0 && claims.a.matches(claims.b)`} {
		if err := env.CheckCondition(bad); err == nil {
			t.Errorf("CheckCondition(%q) accepted", bad)
		}
	}
}

// FuzzClaimsCondition: a trust-policy condition over any JSON claims never panics and
// holds only when it evaluates to true without error.
func FuzzClaimsCondition(f *testing.F) {
	env, err := authz.NewClaimsEnv(authz.EnvOptions{})
	if err != nil {
		f.Fatal(err)
	}
	conds := []string{`claims.repository == "acme/api" && claims.ref == "refs/heads/main"`,
		`claims["kubernetes.io"].namespace == "prod"`, `claims.aud.exists(a, a == "x")`, `size(claims.sub) > 3`}
	for i, s := range []string{`{"repository":"acme/api","ref":"refs/heads/main"}`, `{"kubernetes.io":{"namespace":"prod"}}`,
		`{"aud":["x"]}`, `{"sub":12}`, `{}`, `[]`, `null`, `{"repository":{"x":1}}`} {
		f.Add(uint8(i), s)
	}
	f.Fuzz(func(t *testing.T, which uint8, doc string) {
		var claims map[string]any
		if json.Unmarshal([]byte(doc), &claims) != nil {
			return
		}
		expr := conds[int(which)%len(conds)]
		ok, err := env.Holds(expr, claims)
		if err != nil && ok {
			t.Fatalf("Holds(%q, %s) = true with error %v", expr, doc, err)
		}
	})
}
