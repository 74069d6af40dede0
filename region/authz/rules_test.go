package authz_test

import (
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/authz"
)

func TestRuleEnv(t *testing.T) {
	t.Parallel()
	env, err := authz.NewRuleEnv(authz.EnvOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng := authz.IdentityFacts{ID: "i1", Kind: "human", Email: "a@example.com", Attributes: map[string]any{"department": "eng", "level": 3.0}}
	tests := []struct {
		expr    string
		want    bool
		wantErr string // at evaluation; "" for none
	}{
		{`attributes.department == "eng"`, true, ""},
		{`identity.attributes.department == "sales"`, false, ""},
		{`identity.kind == "human" && attributes.level >= 3.0`, true, ""},
		{`identity.email.endsWith("@example.com")`, true, ""},
		{`attributes.missing == "x"`, false, "no such key"},
	}
	for _, tt := range tests {
		got, err := env.Match(tt.expr, eng)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Match(%s) error %v, want %q", tt.expr, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Match(%s) = %v, %v; want %v", tt.expr, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", `attributes.department`, `identity.nope(`, `principal.id == "x"`} {
		if err := env.CheckRuleCondition(bad); err == nil {
			t.Errorf("CheckRuleCondition(%q) accepted", bad)
		}
	}
}
