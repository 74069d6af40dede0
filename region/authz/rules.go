package authz

import (
	"errors"
	"fmt"
	"sync"

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
type RuleEnv struct {
	env       *cel.Env
	costLimit uint64

	mu    sync.Mutex
	cache map[string]cel.Program
}

// IdentityFacts is what a membership-rule condition sees of an identity.
type IdentityFacts struct {
	ID, Kind, DisplayName, Email, Purpose string
	Attributes                            map[string]any
}

// NewRuleEnv returns a RuleEnv with opts' cost limit (zero: DefaultCostLimit).
func NewRuleEnv(opts EnvOptions) (*RuleEnv, error) {
	limit := opts.CostLimit
	if limit == 0 {
		limit = DefaultCostLimit
	}
	env, err := cel.NewEnv(
		ext.Strings(),
		cel.Variable("identity", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("authz: build rule environment: %w", err)
	}
	return &RuleEnv{env: env, costLimit: limit, cache: make(map[string]cel.Program)}, nil
}

// CheckRuleCondition reports whether expr is an acceptable membership-rule condition:
// it parses, type-checks, returns bool and its estimated cost is within the limit.
func (e *RuleEnv) CheckRuleCondition(expr string) error {
	_, err := e.program(expr)
	return err
}

// Match reports whether expr holds for i. Any evaluation failure is an error (which
// callers treat as "does not hold").
func (e *RuleEnv) Match(expr string, i IdentityFacts) (ok bool, err error) {
	prg, err := e.program(expr)
	if err != nil {
		return false, err
	}
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("internal cel error: %v", r)
		}
	}()
	attrs := nonNil(i.Attributes)
	out, _, err := prg.Eval(map[string]any{
		"identity": map[string]any{"id": i.ID, "kind": i.Kind, "display_name": i.DisplayName, "email": i.Email,
			"purpose": i.Purpose, "attributes": attrs},
		"attributes": attrs,
	})
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("condition returned %s, not bool", out.Type())
	}
	return b, nil
}

func (e *RuleEnv) program(expr string) (prg cel.Program, err error) {
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
