package authz

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
)

// compileBool compiles expr in env as a condition: it parses, type-checks, returns
// bool, passes check (if any) and its worst-case estimated cost is within limit. The
// program enforces limit at run time. CEL should not panic on any input; if it does,
// the expression is refused.
func compileBool(env *cel.Env, expr string, limit uint64, check func(*cel.Ast) error) (ast *cel.Ast, prg cel.Program, err error) {
	defer func() {
		if r := recover(); r != nil {
			ast, prg, err = nil, nil, fmt.Errorf("condition %q: internal cel error: %v", expr, r)
		}
	}()
	if expr == "" {
		return nil, nil, errors.New("condition must not be empty")
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, nil, fmt.Errorf("condition %q: %w", expr, iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, nil, fmt.Errorf("condition %q must evaluate to bool, not %s", expr, ast.OutputType())
	}
	if check != nil {
		if err := check(ast); err != nil {
			return nil, nil, fmt.Errorf("condition %q: %w", expr, err)
		}
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, nil, fmt.Errorf("condition %q: estimate cost: %w", expr, err)
	}
	if est.Max > limit {
		return nil, nil, fmt.Errorf("condition %q: worst-case estimated cost %d exceeds the limit %d", expr, est.Max, limit)
	}
	prg, err = env.Program(ast, cel.CostLimit(limit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, nil, fmt.Errorf("condition %q: %w", expr, err)
	}
	return ast, prg, nil
}

// evalBool runs prg on vars; any failure, a panic or a non-bool result included, is an
// error.
func evalBool(prg cel.Program, vars map[string]any) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("internal cel error: %v", r)
		}
	}()
	out, _, err := prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("condition returned %s, not bool", out.Type())
	}
	return b, nil
}

// boolEnv is a CEL environment for conditions of one kind (membership rules, trust
// policies) with a bounded cache of compiled programs. Safe for concurrent use.
type boolEnv struct {
	env       *cel.Env
	costLimit uint64

	mu    sync.Mutex
	cache map[string]cel.Program
}

func newBoolEnv(env *cel.Env, opts EnvOptions) *boolEnv {
	limit := opts.CostLimit
	if limit == 0 {
		limit = DefaultCostLimit
	}
	return &boolEnv{env: env, costLimit: limit, cache: make(map[string]cel.Program)}
}

// program returns expr's compiled program, from the cache if present.
func (e *boolEnv) program(expr string) (cel.Program, error) {
	e.mu.Lock()
	prg, ok := e.cache[expr]
	e.mu.Unlock()
	if ok {
		return prg, nil
	}
	_, prg, err := compileBool(e.env, expr, e.costLimit, nil)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cache) >= maxCachedPrograms {
		clear(e.cache)
	}
	e.cache[expr] = prg
	return prg, nil
}

// holds reports whether expr holds for vars; any failure is an error.
func (e *boolEnv) holds(expr string, vars map[string]any) (bool, error) {
	prg, err := e.program(expr)
	if err != nil {
		return false, err
	}
	return evalBool(prg, vars)
}
