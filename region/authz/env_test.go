package authz_test

import (
	"strings"
	"testing"

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
