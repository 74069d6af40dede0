package authz

import (
	"fmt"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

// RuleEnv checks and evaluates membership-rule conditions: CEL over one identity,
// deciding which groups it belongs to by rule (docs/lifecycle.md). Conditions see
//
//	identity   {id: string, kind: string, display_name: string, email: string,
//	            purpose: string, attributes: map(string, dyn)}
//	attributes map(string, dyn)   (the same as identity.attributes)
//
// A condition that fails to evaluate (a missing attribute, the cost limit) does not
// hold: an identity gets no membership from it. Safe for concurrent use.
type RuleEnv struct{ *boolEnv }

// IdentityFacts is what a membership-rule condition sees of an identity.
type IdentityFacts struct {
	ID, Kind, DisplayName, Email, Purpose string
	Attributes                            map[string]any
}

// NewRuleEnv returns a RuleEnv with opts' cost limit (zero: DefaultCostLimit).
func NewRuleEnv(opts EnvOptions) (*RuleEnv, error) {
	env, err := cel.NewEnv(
		ext.Strings(),
		cel.Variable("identity", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("authz: build rule environment: %w", err)
	}
	return &RuleEnv{newBoolEnv(env, opts)}, nil
}

// CheckRuleCondition reports whether expr is an acceptable membership-rule condition:
// it parses, type-checks, returns bool and its estimated cost is within the limit.
func (e *RuleEnv) CheckRuleCondition(expr string) error {
	_, err := e.program(expr)
	return err
}

// Match reports whether expr holds for i. Any evaluation failure is an error (which
// callers treat as "does not hold").
func (e *RuleEnv) Match(expr string, i IdentityFacts) (bool, error) {
	attrs := nonNil(i.Attributes)
	return e.holds(expr, map[string]any{
		"identity": map[string]any{"id": i.ID, "kind": i.Kind, "display_name": i.DisplayName, "email": i.Email,
			"purpose": i.Purpose, "attributes": attrs},
		"attributes": attrs,
	})
}
