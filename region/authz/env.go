package authz

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/ext"
)

// DefaultCostLimit is the per-evaluation CEL cost limit used when
// EnvOptions.CostLimit is zero.
const DefaultCostLimit = 10000

// maxCachedPrograms bounds the number of compiled conditions an Env keeps.
const maxCachedPrograms = 4096

// assumedInputSize is the size (characters, list items or map entries) the
// cost estimator assumes for every string, list and map reachable from the
// condition variables. Resource paths are at most 1024 bytes; larger inputs
// are still bounded at run time by the cost limit.
const assumedInputSize = 1024

// EnvOptions configures an Env. The zero value is usable.
type EnvOptions struct {
	// CostLimit bounds the CEL cost of one condition evaluation and the
	// worst-case estimated cost accepted by CheckCondition. Zero means
	// DefaultCostLimit.
	CostLimit uint64
}

// Env is the CEL environment conditions are checked and compiled in. It
// caches compiled programs by expression text (bounded). An Env is safe for
// concurrent use by multiple goroutines.
//
// Conditions see these variables:
//
//	request   {time: timestamp, ip: string, region: string, serving_region: string}
//	          (ip "" when unknown; region: where the request entered keyplane)
//	principal {id: string, kind: string, attributes: map(string, dyn)}
//	resource  {path: string, attributes: map(string, dyn)}
//	token     {amr: list(string), auth_time: timestamp}  (unknown without a token)
//	context   map(string, dyn)
//
// request and token are typed objects: unknown fields and type mismatches
// are rejected when checking. principal and resource are map(string, dyn),
// so a misspelt field there is an evaluation error (which fails closed). A
// condition that reads request.ip when the address is unknown (Request.IP empty),
// or token when there is none (Request.AuthTime zero), fails closed the same way,
// whatever it would compute from a default. The standard string extensions
// (ext.Strings) are available.
type Env struct {
	env       *cel.Env
	costLimit uint64

	mu    sync.Mutex
	cache map[string]*condition
}

// condition is a compiled, type-checked CEL condition.
type condition struct {
	expr      string
	prg       cel.Program
	readIP    bool // reads request.ip (or uses request whole)
	readToken bool // reads token
}

// Variable shapes exposed to CEL as native struct types, so field names and
// types are checked.
type requestVar struct {
	Time          time.Time `cel:"time"`
	IP            string    `cel:"ip"`
	Region        string    `cel:"region"`
	ServingRegion string    `cel:"serving_region"`
}

type tokenVar struct {
	AMR      []string  `cel:"amr"`
	AuthTime time.Time `cel:"auth_time"`
}

// NewEnv returns an Env configured by opts.
func NewEnv(opts EnvOptions) (*Env, error) {
	limit := opts.CostLimit
	if limit == 0 {
		limit = DefaultCostLimit
	}
	reqT := reflect.TypeFor[requestVar]()
	tokT := reflect.TypeFor[tokenVar]()
	env, err := cel.NewEnv(
		ext.NativeTypes(reqT, tokT, ext.ParseStructTags(true)),
		ext.Strings(),
		cel.Variable("request", cel.ObjectType(celTypeName(reqT))),
		// Native struct fields cannot be of interface type, so principal and
		// resource, which carry map(string, dyn) attributes, are maps.
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("resource", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("token", cel.ObjectType(celTypeName(tokT))),
		cel.Variable("context", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("authz: build cel environment: %w", err)
	}
	return &Env{env: env, costLimit: limit, cache: make(map[string]*condition)}, nil
}

// celTypeName is the name ext.NativeTypes gives a Go struct type.
func celTypeName(t reflect.Type) string {
	return "authz." + t.Name()
}

// CheckCondition reports whether expr is an acceptable condition: it parses,
// type-checks against the condition variables, returns bool, and its
// worst-case estimated cost is at most the cost limit. Errors carry CEL's
// message.
func (e *Env) CheckCondition(expr string) error {
	_, err := e.condition(expr)
	return err
}

// condition returns the compiled program for expr, from the cache if present.
func (e *Env) condition(expr string) (*condition, error) {
	e.mu.Lock()
	c, ok := e.cache[expr]
	e.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := e.compile(expr)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.cache[expr]; ok {
		return prev, nil
	}
	if len(e.cache) >= maxCachedPrograms {
		// Evict an arbitrary entry: map iteration order is unspecified, which
		// is good enough for a bound that is only hit by unusual workloads.
		for k := range e.cache {
			delete(e.cache, k)
			break
		}
	}
	e.cache[expr] = c
	return c, nil
}

func (e *Env) compile(expr string) (c *condition, err error) {
	defer func() {
		// CEL should not panic on any input; if it does, reject the expression.
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("condition %q: internal cel error: %v", expr, r)
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
	prg, err := e.env.Program(ast, cel.CostLimit(e.costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("condition %q: %w", expr, err)
	}
	return &condition{expr: expr, prg: prg, readIP: reads(ast.NativeRep(), "request", "ip"), readToken: reads(ast.NativeRep(), "token")}, nil
}

// reads reports whether a checked condition reads variable name: any use of it when
// fields is empty, else a use through one of fields or other than through a field
// (which could reach them). Such a condition cannot be decided when those inputs are
// unknown.
func reads(a *celast.AST, name string, fields ...string) bool {
	uses := celast.MatchDescendants(celast.NavigateAST(a), func(e celast.NavigableExpr) bool {
		if e.Kind() != celast.IdentKind || e.AsIdent() != name {
			return false
		}
		p, ok := e.Parent()
		return len(fields) == 0 || !ok || p.Kind() != celast.SelectKind || slices.Contains(fields, p.AsSelect().FieldName())
	})
	return len(uses) > 0
}

// sizeEstimator bounds the size of every string, list and map reachable from
// the condition variables, so that cost estimates are finite.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	if len(n.Path()) == 0 {
		return nil
	}
	return &checker.SizeEstimate{Min: 0, Max: assumedInputSize}
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// eval evaluates c against vars. Any failure, including exceeding the cost
// limit or a non-bool result, is an error.
func (c *condition) eval(vars map[string]any) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("internal cel error: %v", r)
		}
	}()
	out, _, err := c.prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("condition returned %s, not bool", out.Type())
	}
	return b, nil
}
