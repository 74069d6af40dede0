package region

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	filter "github.com/scim2/filter-parser/v2"
)

// SCIM PATCH (RFC 7644 §3.5.2), with what Microsoft Entra ID and Okta send: op names
// in any case ("Replace"), path-less add/replace whose value object holds attribute
// paths as keys (including the enterprise extension's URN-prefixed names), booleans as
// the strings "True"/"False", the manager as a bare id, and members removed either by
// a value filter (members[value eq "…"]) or by a value list on the path "members".
// Operations apply in order to a copy of the resource; the result is normalized as a
// PUT body would be, so a PATCH can never store what a PUT could not.

const scimMaxOperations = 1000

type scimPatchOp struct {
	op    string // add, replace, remove
	path  string
	value any
	has   bool // value was given
}

func invalidPath(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "invalidPath", detail: fmt.Sprintf(format, args...)}
}

func invalidSyntax(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "invalidSyntax", detail: fmt.Sprintf(format, args...)}
}

func mutability(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "mutability", detail: fmt.Sprintf(format, args...)}
}

func noTarget(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "noTarget", detail: fmt.Sprintf(format, args...)}
}

// decodePatch reads a PatchOp request body.
func decodePatch(body map[string]any) ([]scimPatchOp, error) {
	var ops []any
	sawSchema := false
	for k, v := range body {
		switch strings.ToLower(k) {
		case "schemas":
			list, _ := v.([]any)
			for _, s := range list {
				if str, ok := s.(string); ok && strings.EqualFold(str, scimPatchSchema) {
					sawSchema = true
				}
			}
		case "operations":
			list, ok := v.([]any)
			if !ok {
				return nil, invalidSyntax("Operations: must be a list")
			}
			ops = list
		default:
			return nil, invalidSyntax("unknown member %q of a PatchOp request", k)
		}
	}
	if !sawSchema {
		return nil, invalidSyntax("schemas: must be [%q]", scimPatchSchema)
	}
	if len(ops) == 0 {
		return nil, invalidSyntax("Operations: at least one operation")
	}
	if len(ops) > scimMaxOperations {
		return nil, &scimError{status: http.StatusBadRequest, scimType: "tooMany", detail: fmt.Sprintf("Operations: at most %d", scimMaxOperations)}
	}
	out := make([]scimPatchOp, 0, len(ops))
	for i, o := range ops {
		m, ok := o.(map[string]any)
		if !ok {
			return nil, invalidSyntax("Operations[%d]: must be an object", i)
		}
		var p scimPatchOp
		for k, v := range m {
			switch strings.ToLower(k) {
			case "op":
				s, _ := v.(string)
				p.op = strings.ToLower(s)
			case "path":
				s, ok := v.(string)
				if !ok {
					return nil, invalidPath("Operations[%d].path: must be a string", i)
				}
				p.path = strings.TrimSpace(s)
			case "value":
				p.value, p.has = v, true
			default:
				return nil, invalidSyntax("Operations[%d]: unknown member %q", i, k)
			}
		}
		switch p.op {
		case "add", "replace":
			if !p.has {
				return nil, invalidSyntax("Operations[%d]: %s needs a value", i, p.op)
			}
		case "remove":
			if p.path == "" {
				return nil, noTarget("Operations[%d]: remove needs a path", i)
			}
		default:
			return nil, invalidSyntax(`Operations[%d].op: must be "add", "replace" or "remove"`, i)
		}
		out = append(out, p)
	}
	return out, nil
}

// applyPatch applies ops to res (an editable copy of the resource, see
// userEditable), in order.
func applyPatch(r *scimResource, res map[string]any, ops []scimPatchOp) error {
	for i, op := range ops {
		var err error
		if op.path == "" {
			err = applyPathless(r, res, op)
		} else {
			err = applyPath(r, res, op)
		}
		if err != nil {
			var se *scimError
			if errors.As(err, &se) {
				se.detail = fmt.Sprintf("Operations[%d]: %s", i, se.detail)
			}
			return err
		}
	}
	return nil
}

// applyPathless applies an add or replace whose value is an object of attributes:
// each key is a path (Entra ID sends "name.givenName" and URN-prefixed names), and an
// extension URN key holds an object of that extension's attributes.
func applyPathless(r *scimResource, res map[string]any, op scimPatchOp) error {
	m, ok := op.value.(map[string]any)
	if !ok {
		return scimValueError("an %s without a path needs an object value", op.op)
	}
	for k, v := range m {
		if strings.EqualFold(k, "schemas") {
			continue
		}
		if ext, ok := r.extension(k); ok {
			inner, ok := v.(map[string]any)
			if !ok {
				return scimValueError("%s: must be an object", ext)
			}
			for ik, iv := range inner {
				if err := applyPath(r, res, scimPatchOp{op: op.op, path: ext + ":" + ik, value: iv, has: true}); err != nil {
					return err
				}
			}
			continue
		}
		if err := applyPath(r, res, scimPatchOp{op: op.op, path: k, value: v, has: true}); err != nil {
			return err
		}
	}
	return nil
}

func applyPath(r *scimResource, res map[string]any, op scimPatchOp) error {
	p, err := filter.ParsePath([]byte(op.path))
	if err != nil {
		return invalidPath("path %q is not a SCIM attribute path", op.path)
	}
	a, ext, sub, ok := scimScope{r: r}.resolve(p.AttributePath)
	if !ok {
		return invalidPath("path %q: no such attribute of a %s", op.path, r.name)
	}
	if a.readOnly() || (sub != nil && sub.readOnly()) {
		// Okta repeats the id in a path-less replace: the same value changes nothing.
		if sub == nil && op.op != "remove" && reflect.DeepEqual(container(res, ext)[a.Name], op.value) {
			return nil
		}
		return mutability("%s is read-only", op.path)
	}
	c := container(res, ext)
	if c == nil {
		if op.op == "remove" {
			return nil
		}
		c = map[string]any{}
		res[ext] = c
	}
	if p.ValueExpression != nil {
		return applyFiltered(a, c, p, op)
	}
	if p.SubAttribute != nil {
		return invalidPath("path %q: a sub-attribute after a filter needs a filter", op.path)
	}
	if sub != nil {
		if a.Multi {
			return invalidPath(`path %q: %s is multi-valued: select values with a filter, e.g. %s[type eq "work"].%s`, op.path, a.Name, a.Name, sub.Name)
		}
		m, _ := c[a.Name].(map[string]any)
		if op.op == "remove" {
			delete(m, sub.Name)
			return nil
		}
		if m == nil {
			m = map[string]any{}
			c[a.Name] = m
		}
		m[sub.Name] = op.value
		return nil
	}
	switch op.op {
	case "remove":
		if a.Multi && op.has && op.value != nil {
			return removeValues(a, c, op.value)
		}
		delete(c, a.Name)
	case "add":
		if a.Multi {
			c[a.Name] = appendValues(asList(c[a.Name]), asList(op.value))
			return nil
		}
		mergeOrSet(a, c, op.value)
	case "replace":
		if a.Multi {
			c[a.Name] = asList(op.value)
			return nil
		}
		mergeOrSet(a, c, op.value)
	}
	return nil
}

// mergeOrSet sets a single-valued attribute; a complex one takes the sub-attributes
// given and keeps the others (RFC 7644 §3.5.2.1, §3.5.2.3).
func mergeOrSet(a *scimAttr, c map[string]any, v any) {
	old, oldOK := c[a.Name].(map[string]any)
	nv, newOK := v.(map[string]any)
	if a.Type == "complex" && oldOK && newOK {
		for k, x := range nv {
			old[k] = x
		}
		return
	}
	c[a.Name] = v
}

// appendValues adds values to a multi-valued attribute, skipping ones already there.
func appendValues(have, add []any) []any {
	for _, v := range add {
		dup := false
		for _, h := range have {
			if reflect.DeepEqual(h, v) || sameValue(h, v) {
				dup = true
				break
			}
		}
		if !dup {
			have = append(have, v)
		}
	}
	return have
}

// sameValue: two complex values with the same "value" (a member, an email) are one.
func sameValue(a, b any) bool {
	ma, ok1 := a.(map[string]any)
	mb, ok2 := b.(map[string]any)
	if !ok1 || !ok2 {
		return false
	}
	va, ok1 := ma["value"].(string)
	vb, ok2 := mb["value"].(string)
	return ok1 && ok2 && va == vb
}

// removeValues removes the given values (by their "value") from a multi-valued
// attribute: Entra ID removes group members this way.
func removeValues(a *scimAttr, c map[string]any, v any) error {
	have := asList(c[a.Name])
	var keep []any
	for _, h := range have {
		gone := false
		for _, x := range asList(v) {
			if reflect.DeepEqual(h, x) || sameValue(h, x) {
				gone = true
				break
			}
		}
		if !gone {
			keep = append(keep, h)
		}
	}
	if len(keep) == len(have) {
		return noTarget("none of the values given is in %s", a.Name)
	}
	c[a.Name] = keep
	return nil
}

// applyFiltered applies an operation to the values of a multi-valued attribute that a
// value filter selects (emails[type eq "work"], members[value eq "…"]), optionally to
// one sub-attribute of them.
func applyFiltered(a *scimAttr, c map[string]any, p filter.Path, op scimPatchOp) error {
	if !a.Multi || a.Type != "complex" {
		return invalidPath("path %q: %s is not multi-valued: no filter on it", op.path, a.Name)
	}
	if err := checkFilter(scimScope{attrs: a.Sub}, p.ValueExpression, 0); err != nil {
		return invalidPath("path %q: %s", op.path, strings.TrimPrefix(err.Error(), "filter: "))
	}
	var sub *scimAttr
	if p.SubAttribute != nil {
		if sub = a.sub(*p.SubAttribute); sub == nil {
			return invalidPath("path %q: %s has no sub-attribute %q", op.path, a.Name, *p.SubAttribute)
		}
		if sub.readOnly() {
			return mutability("%s is read-only", op.path)
		}
	}
	list := asList(c[a.Name])
	scope := scimScope{attrs: a.Sub}
	var hit []int
	for i, el := range list {
		if m, ok := el.(map[string]any); ok && matches(scope, p.ValueExpression, m) {
			hit = append(hit, i)
		}
	}
	if len(hit) == 0 {
		if op.op == "remove" {
			return noTarget("path %q selects no value", op.path)
		}
		// Entra ID and Okta add or replace emails[type eq "work"].value when the user
		// has no work email yet: the filter's equality becomes part of the new value.
		seed, ok := seedOf(p.ValueExpression)
		if !ok {
			return noTarget("path %q selects no value", op.path)
		}
		if sub != nil {
			seed[sub.Name] = op.value
		} else if m, ok := op.value.(map[string]any); ok {
			for k, v := range m {
				seed[k] = v
			}
		} else {
			return scimValueError("path %q: the value must be an object", op.path)
		}
		c[a.Name] = append(list, seed)
		return nil
	}
	switch op.op {
	case "remove":
		if sub != nil {
			for _, i := range hit {
				delete(list[i].(map[string]any), sub.Name)
			}
			return nil
		}
		keep := make([]any, 0, len(list))
		for i, el := range list {
			if !containsInt(hit, i) {
				keep = append(keep, el)
			}
		}
		c[a.Name] = keep
	default:
		for _, i := range hit {
			el := list[i].(map[string]any)
			if sub != nil {
				el[sub.Name] = op.value
				continue
			}
			m, ok := op.value.(map[string]any)
			if !ok {
				return scimValueError("path %q: the value must be an object", op.path)
			}
			if op.op == "replace" {
				list[i] = m
				continue
			}
			for k, v := range m {
				el[k] = v
			}
		}
	}
	return nil
}

func containsInt(list []int, i int) bool {
	for _, x := range list {
		if x == i {
			return true
		}
	}
	return false
}

// seedOf is the value a value filter of the form `x eq "v"` describes: {x: v}.
func seedOf(e filter.Expression) (map[string]any, bool) {
	x, ok := e.(*filter.AttributeExpression)
	if !ok || x.Operator != filter.EQ || x.AttributePath.SubAttribute != nil || x.AttributePath.URIPrefix != nil {
		return nil, false
	}
	v, ok := x.CompareValue.(string)
	if !ok {
		return nil, false
	}
	return map[string]any{x.AttributePath.AttributeName: v}, true
}
