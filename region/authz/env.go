package authz

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
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
//	request   {time: timestamp, ip: string, region: string, serving_region: string,
//	           country: string}  (region: where the request entered keyplane)
//	principal {id: string, kind: string, attributes: map(string, dyn)}
//	resource  {path: string, attributes: map(string, dyn)}
//	token     {amr: list(string), auth_time: timestamp}  (unknown without a token)
//	device    {id, platform, os_version: string, managed, compliant, disk_encrypted,
//	           screen_lock, jailbroken: bool, attested_time: timestamp,
//	           asserted_by: string}  (unknown without a device)
//	context   map(string, dyn)
//
// request, token and device are typed objects: unknown fields and type mismatches
// are rejected when checking. principal and resource are map(string, dyn),
// so a misspelt field there is an evaluation error (which fails closed). A
// condition that reads an input the request does not have fails closed the same way,
// whatever it would compute from a default: request.ip when the address is unknown
// (Request.IP empty), request.country when it is (Request.Country empty), token when
// there is none (Request.AuthTime zero), device when there is none (Request.Device
// nil) and device.attested_time when the device has none.
//
// The standard string extensions (ext.Strings) and the network extensions
// (ext.Network: ip(), cidr(), isIP(), isCIDR(), cidr.containsIP(), ip.family(), ...)
// are available. A literal address or range that does not parse is refused when
// checking: an argument of ip(), cidr(), containsIP() or containsCIDR(), or an
// element of a literal list such a call iterates over
// (["10.0.0.0/8"].exists(c, cidr(c).containsIP(request.ip))).
type Env struct {
	env       *cel.Env
	costLimit uint64

	mu    sync.Mutex
	cache map[string]*condition
}

// condition is a compiled, type-checked CEL condition.
type condition struct {
	expr         string
	prg          cel.Program
	readIP       bool // reads request.ip (or uses request whole)
	readCountry  bool // reads request.country (or uses request whole)
	readToken    bool // reads token
	readDevice   bool // reads device
	readAttested bool // reads device.attested_time (or uses device whole)
}

// Variable shapes exposed to CEL as native struct types, so field names and
// types are checked.
type requestVar struct {
	Time          time.Time `cel:"time"`
	IP            string    `cel:"ip"`
	Region        string    `cel:"region"`
	ServingRegion string    `cel:"serving_region"`
	Country       string    `cel:"country"`
}

type deviceVar struct {
	ID            string    `cel:"id"`
	Platform      string    `cel:"platform"`
	OSVersion     string    `cel:"os_version"`
	Managed       bool      `cel:"managed"`
	Compliant     bool      `cel:"compliant"`
	DiskEncrypted bool      `cel:"disk_encrypted"`
	ScreenLock    bool      `cel:"screen_lock"`
	Jailbroken    bool      `cel:"jailbroken"`
	AttestedTime  time.Time `cel:"attested_time"`
	AssertedBy    string    `cel:"asserted_by"`
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
	devT := reflect.TypeFor[deviceVar]()
	env, err := cel.NewEnv(
		ext.NativeTypes(reqT, tokT, devT, ext.ParseStructTags(true)),
		ext.Strings(),
		ext.Network(),
		cel.Variable("request", cel.ObjectType(celTypeName(reqT))),
		// Native struct fields cannot be of interface type, so principal and
		// resource, which carry map(string, dyn) attributes, are maps.
		cel.Variable("principal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("resource", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("token", cel.ObjectType(celTypeName(tokT))),
		cel.Variable("device", cel.ObjectType(celTypeName(devT))),
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

func (e *Env) compile(expr string) (*condition, error) {
	ast, prg, err := compileBool(e.env, expr, e.costLimit, func(ast *cel.Ast) error { return checkNetworkLiterals(ast.NativeRep()) })
	if err != nil {
		return nil, err
	}
	a := ast.NativeRep()
	return &condition{expr: expr, prg: prg, readIP: reads(a, "request", "ip"), readCountry: reads(a, "request", "country"),
		readToken: reads(a, "token"), readDevice: reads(a, "device"), readAttested: reads(a, "device", "attested_time")}, nil
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

// checkNetworkLiterals refuses a literal IP address or CIDR range that the network
// functions would fail to parse at evaluation time: the argument of a containsIP or
// containsCIDR call, and an element of a literal list whose iteration variable an
// ip(), cidr(), containsIP() or containsCIDR() call takes. (ext.Network itself
// refuses literal arguments of ip() and cidr().) Such a condition could never
// match an allow and would always match a deny: a typo, refused when it is written.
func checkNetworkLiterals(a *celast.AST) error {
	calls := celast.MatchDescendants(celast.NavigateAST(a), func(e celast.NavigableExpr) bool {
		return e.Kind() == celast.CallKind
	})
	for _, call := range calls {
		c := call.AsCall()
		if len(c.Args()) != 1 {
			continue
		}
		var parse func(string) error
		switch {
		case c.FunctionName() == "ip" && !c.IsMemberFunction(), c.FunctionName() == "containsIP" && c.IsMemberFunction():
			parse = parseIPLiteral
		case c.FunctionName() == "cidr" && !c.IsMemberFunction(), c.FunctionName() == "containsCIDR" && c.IsMemberFunction():
			parse = parseCIDRLiteral
		default:
			continue
		}
		for _, s := range literalStrings(call, c.Args()[0]) {
			if err := parse(s); err != nil {
				return fmt.Errorf("%s(): %w", c.FunctionName(), err)
			}
		}
	}
	return nil
}

// literalStrings returns the string constants arg, an argument of call, stands for: arg
// itself when it is one, or the elements of a literal list of strings when arg is the
// (value) variable of a comprehension over that list; else none.
func literalStrings(call celast.NavigableExpr, arg celast.Expr) []string {
	switch arg.Kind() {
	case celast.LiteralKind:
		if s, ok := arg.AsLiteral().(types.String); ok {
			return []string{string(s)}
		}
		return nil
	case celast.IdentKind:
	default:
		return nil
	}
	name := arg.AsIdent()
	for cur := call; ; {
		p, ok := cur.Parent()
		if !ok {
			return nil
		}
		if p.Kind() == celast.ComprehensionKind && p.AsComprehension().IterRange().ID() != cur.ID() {
			comp := p.AsComprehension()
			value := comp.IterVar()
			if comp.HasIterVar2() {
				value = comp.IterVar2()
			}
			switch name {
			case value:
				return listStrings(comp.IterRange())
			case comp.IterVar(), comp.IterVar2(), comp.AccuVar():
				return nil // bound here to something else
			}
		}
		cur = p
	}
}

// listStrings returns the elements of a list literal of string constants; else none.
func listStrings(e celast.Expr) []string {
	if e.Kind() != celast.ListKind {
		return nil
	}
	var out []string
	for _, el := range e.AsList().Elements() {
		if el.Kind() != celast.LiteralKind {
			return nil
		}
		s, ok := el.AsLiteral().(types.String)
		if !ok {
			return nil
		}
		out = append(out, string(s))
	}
	return out
}

// parseIPLiteral accepts what ext.Network's ip() accepts: an IPv4 or IPv6 address
// without a zone, not IPv4-mapped.
func parseIPLiteral(s string) error {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not an IP address", s)
	case a.Zone() != "":
		return fmt.Errorf("IP address %q must not have a zone", s)
	case a.Is4In6():
		return fmt.Errorf("IP address %q must not be IPv4-mapped IPv6; write the IPv4 address", s)
	}
	return nil
}

// parseCIDRLiteral accepts what ext.Network's cidr() accepts: address/prefix-length,
// without a zone, not IPv4-mapped.
func parseCIDRLiteral(s string) error {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a CIDR range (address/prefix-length, such as 10.0.0.0/8)", s)
	case p.Addr().Zone() != "":
		return fmt.Errorf("CIDR range %q must not have a zone", s)
	case p.Addr().Is4In6():
		return fmt.Errorf("CIDR range %q must not be IPv4-mapped IPv6; write the IPv4 range", s)
	}
	return nil
}

// sizeEstimator bounds the size of every string, list and map reachable from
// the condition variables, so that cost estimates are finite. Inputs whose size
// keyplane bounds (an address, a country code, the device's strings) get their
// bound; everything else assumedInputSize.
type sizeEstimator struct{}

// boundedInputs are the maximum sizes of inputs bounded more tightly than
// assumedInputSize.
var boundedInputs = map[string]uint64{
	"request.ip":         45, // an IPv6 address with an embedded IPv4 address
	"request.country":    2,
	"device.id":          MaxDeviceIDLen,
	"device.platform":    MaxDeviceFieldLen,
	"device.os_version":  MaxDeviceFieldLen,
	"device.asserted_by": MaxDeviceFieldLen,
}

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	if max, ok := boundedInputs[strings.Join(path, ".")]; ok {
		return &checker.SizeEstimate{Min: 0, Max: max}
	}
	return &checker.SizeEstimate{Min: 0, Max: assumedInputSize}
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// eval evaluates c against vars. Any failure, including exceeding the cost
// limit or a non-bool result, is an error.
func (c *condition) eval(vars map[string]any) (bool, error) { return evalBool(c.prg, vars) }
