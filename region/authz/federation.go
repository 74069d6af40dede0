package authz

import (
	"fmt"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

// ClaimsEnv checks and evaluates trust-policy conditions of workload identity
// federation (docs/federation.md): CEL over the verified claims of an external token.
// Conditions see
//
//	claims map(string, dyn)   (the token's JSON claims: claims.repository,
//	                           claims["kubernetes.io"].namespace, …)
//
// A condition that fails to evaluate (a missing claim, a wrong type, the cost limit)
// does not hold: the token is refused. Safe for concurrent use.
type ClaimsEnv struct{ *boolEnv }

// NewClaimsEnv returns a ClaimsEnv with opts' cost limit (zero: DefaultCostLimit).
func NewClaimsEnv(opts EnvOptions) (*ClaimsEnv, error) {
	env, err := cel.NewEnv(ext.Strings(), cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		return nil, fmt.Errorf("authz: build claims environment: %w", err)
	}
	return &ClaimsEnv{newBoolEnv(env, opts)}, nil
}

// CheckCondition reports whether expr is an acceptable trust-policy condition: it
// parses, type-checks, returns bool and its estimated cost is within the limit.
func (e *ClaimsEnv) CheckCondition(expr string) error {
	_, err := e.program(expr)
	return err
}

// Holds reports whether expr holds for claims. Any evaluation failure is an error,
// which callers treat as "does not hold".
func (e *ClaimsEnv) Holds(expr string, claims map[string]any) (bool, error) {
	return e.holds(expr, map[string]any{"claims": nonNil(claims)})
}
