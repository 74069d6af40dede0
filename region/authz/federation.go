package authz

import (
	"errors"
	"fmt"
	"sync"

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
type ClaimsEnv struct {
	env       *cel.Env
	costLimit uint64

	mu    sync.Mutex
	cache map[string]cel.Program
}

// NewClaimsEnv returns a ClaimsEnv with opts' cost limit (zero: DefaultCostLimit).
func NewClaimsEnv(opts EnvOptions) (*ClaimsEnv, error) {
	limit := opts.CostLimit
	if limit == 0 {
		limit = DefaultCostLimit
	}
	env, err := cel.NewEnv(ext.Strings(), cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		return nil, fmt.Errorf("authz: build claims environment: %w", err)
	}
	return &ClaimsEnv{env: env, costLimit: limit, cache: make(map[string]cel.Program)}, nil
}

// CheckCondition reports whether expr is an acceptable trust-policy condition: it
// parses, type-checks, returns bool and its estimated cost is within the limit.
func (e *ClaimsEnv) CheckCondition(expr string) error {
	_, err := e.program(expr)
	return err
}

// Holds reports whether expr holds for claims. Any evaluation failure is an error,
// which callers treat as "does not hold".
func (e *ClaimsEnv) Holds(expr string, claims map[string]any) (ok bool, err error) {
	prg, err := e.program(expr)
	if err != nil {
		return false, err
	}
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("internal cel error: %v", r)
		}
	}()
	out, _, err := prg.Eval(map[string]any{"claims": nonNil(claims)})
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("condition returned %s, not bool", out.Type())
	}
	return b, nil
}

func (e *ClaimsEnv) program(expr string) (prg cel.Program, err error) {
	e.mu.Lock()
	prg, ok := e.cache[expr]
	e.mu.Unlock()
	if ok {
		return prg, nil
	}
	defer func() {
		if r := recover(); r != nil {
			prg, err = nil, fmt.Errorf("condition %q: internal cel error: %v", expr, r)
		}
	}()
	if expr == "" {
		return nil, errors.New("condition must not be empty")
	}
	ast, iss := e.env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("condition %q: %w", expr, iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("condition %q must evaluate to bool, not %s", expr, ast.OutputType())
	}
	est, err := e.env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, fmt.Errorf("condition %q: estimate cost: %w", expr, err)
	}
	if est.Max > e.costLimit {
		return nil, fmt.Errorf("condition %q: worst-case estimated cost %d exceeds the limit %d", expr, est.Max, e.costLimit)
	}
	prg, err = e.env.Program(ast, cel.CostLimit(e.costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("condition %q: %w", expr, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cache) >= maxCachedPrograms {
		clear(e.cache)
	}
	e.cache[expr] = prg
	return prg, nil
}
