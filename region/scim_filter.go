package region

import (
	"cmp"
	"fmt"
	"net/http"
	"strings"
	"time"

	filter "github.com/scim2/filter-parser/v2"

	"github.com/keyplane/keyplane/schema"
)

// SCIM filters (RFC 7644 §3.4.2.2), parsed by github.com/scim2/filter-parser and
// evaluated here over the resource as a client reads it. A listing reads the tenant's
// Users or Groups from the store, narrowed by one indexed equality of the filter when
// it has one at its top level (lookupOf), and evaluates the whole filter in memory; the
// store refuses (tooMany) a listing that would read more than schema.MaxSCIMScan rows.

const (
	scimMaxFilter = 4096 // bytes of a filter
	scimMaxDepth  = 32   // nesting of and/or/not/[]
	scimMaxCount  = 1000 // resources in one page
)

func invalidFilter(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "invalidFilter", detail: fmt.Sprintf(format, args...)}
}

// scimScope is what names in a (sub-)filter resolve against: a resource, or the
// sub-attributes of a multi-valued attribute inside a value filter.
type scimScope struct {
	r     *scimResource // nil inside a value filter
	attrs []*scimAttr   // the sub-attributes, inside a value filter
}

// resolve finds the attribute an attribute path names, and the sub-attribute.
func (s scimScope) resolve(p filter.AttributePath) (a *scimAttr, ext string, sub *scimAttr, ok bool) {
	if s.r != nil {
		a, ext, ok = s.r.lookup(p.URI(), p.AttributeName)
	} else if p.URIPrefix == nil {
		a = findAttr(s.attrs, p.AttributeName)
		ok = a != nil
	}
	if !ok {
		return nil, "", nil, false
	}
	if p.SubAttribute != nil {
		if sub = a.sub(*p.SubAttribute); sub == nil {
			return nil, "", nil, false
		}
	}
	return a, ext, sub, true
}

// parseSCIMFilter parses a filter and checks every attribute it names against r.
func parseSCIMFilter(r *scimResource, raw string) (filter.Expression, error) {
	if len(raw) > scimMaxFilter {
		return nil, invalidFilter("filter: at most %d bytes", scimMaxFilter)
	}
	if strings.Count(raw, "(")+strings.Count(raw, "[")+strings.Count(strings.ToLower(raw), "not") > scimMaxDepth*4 {
		return nil, invalidFilter("filter: nested too deeply")
	}
	e, err := filter.ParseFilter([]byte(raw))
	if err != nil {
		return nil, invalidFilter("filter: %q is not a SCIM filter (RFC 7644 §3.4.2.2)", truncate(raw, 200))
	}
	if err := checkFilter(scimScope{r: r}, e, 0); err != nil {
		return nil, err
	}
	return e, nil
}

func checkFilter(s scimScope, e filter.Expression, depth int) error {
	if depth > scimMaxDepth {
		return invalidFilter("filter: nested too deeply")
	}
	switch x := e.(type) {
	case *filter.LogicalExpression:
		if err := checkFilter(s, x.Left, depth+1); err != nil {
			return err
		}
		return checkFilter(s, x.Right, depth+1)
	case *filter.NotExpression:
		return checkFilter(s, x.Expression, depth+1)
	case *filter.ValuePath:
		a, _, sub, ok := s.resolve(x.AttributePath)
		if !ok || sub != nil {
			return invalidFilter("filter: unknown attribute %q", x.AttributePath.String())
		}
		if !a.Multi || a.Type != "complex" {
			return invalidFilter("filter: %s is not a multi-valued complex attribute: no [...] filter on it", a.Name)
		}
		return checkFilter(scimScope{attrs: a.Sub}, x.ValueFilter, depth+1)
	case *filter.AttributeExpression:
		a, _, sub, ok := s.resolve(x.AttributePath)
		if !ok {
			return invalidFilter("filter: unknown attribute %q", x.AttributePath.String())
		}
		target := compared(a, sub)
		if target == nil {
			return invalidFilter("filter: %s is complex: compare one of its sub-attributes", x.AttributePath.String())
		}
		if a.Mutability == "writeOnly" {
			return invalidFilter("filter: %s cannot be filtered on", a.Name)
		}
		switch x.Operator {
		case filter.PR, filter.EQ, filter.NE:
		case filter.CO, filter.SW, filter.EW:
			if target.Type == "boolean" || target.Type == "integer" {
				return invalidFilter("filter: %s is %s: %s applies to strings", x.AttributePath.String(), target.Type, x.Operator)
			}
		case filter.GT, filter.GE, filter.LT, filter.LE:
			if target.Type == "boolean" {
				return invalidFilter("filter: %s is boolean: %s does not apply", x.AttributePath.String(), x.Operator)
			}
		default:
			return invalidFilter("filter: unknown operator %q", x.Operator)
		}
		return nil
	}
	return invalidFilter("filter: unsupported expression")
}

// compared is the attribute whose values an expression on a (sub) compares: the
// sub-attribute, or the value sub-attribute of a multi-valued complex attribute;
// nil for a complex attribute without one.
func compared(a, sub *scimAttr) *scimAttr {
	if sub != nil {
		return sub
	}
	if a.Type != "complex" {
		return a
	}
	if a.Multi {
		return a.sub("value")
	}
	return nil
}

// matches evaluates a checked filter over a resource (or an element of a
// multi-valued attribute, inside a value filter).
func matches(s scimScope, e filter.Expression, res map[string]any) bool {
	switch x := e.(type) {
	case *filter.LogicalExpression:
		if x.Operator == filter.AND {
			return matches(s, x.Left, res) && matches(s, x.Right, res)
		}
		return matches(s, x.Left, res) || matches(s, x.Right, res)
	case *filter.NotExpression:
		return !matches(s, x.Expression, res)
	case *filter.ValuePath:
		a, ext, _, _ := s.resolve(x.AttributePath)
		for _, el := range asList(container(res, ext)[a.Name]) {
			if m, ok := el.(map[string]any); ok && matches(scimScope{attrs: a.Sub}, x.ValueFilter, m) {
				return true
			}
		}
		return false
	case *filter.AttributeExpression:
		a, ext, sub, _ := s.resolve(x.AttributePath)
		target := compared(a, sub)
		values := valuesOf(a, sub, container(res, ext)[a.Name])
		if x.Operator == filter.NE {
			return !anyMatch(target, filter.EQ, values, x.CompareValue)
		}
		return anyMatch(target, x.Operator, values, x.CompareValue)
	}
	return false
}

// container is res, or the extension object ext inside it.
func container(res map[string]any, ext string) map[string]any {
	if ext == "" {
		return res
	}
	m, _ := res[ext].(map[string]any)
	return m
}

func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	if v == nil {
		return nil
	}
	return []any{v}
}

// valuesOf lists the values an expression on attribute a (sub-attribute sub) compares.
func valuesOf(a, sub *scimAttr, v any) []any {
	var out []any
	for _, el := range asList(v) {
		if a.Type != "complex" {
			out = append(out, el)
			continue
		}
		m, _ := el.(map[string]any)
		name := "value"
		if sub != nil {
			name = sub.Name
		}
		if x, ok := m[name]; ok && x != nil {
			out = append(out, x)
		}
	}
	return out
}

func anyMatch(a *scimAttr, op filter.CompareOperator, values []any, want any) bool {
	if op == filter.PR {
		for _, v := range values {
			if s, ok := v.(string); !ok || s != "" {
				return true
			}
		}
		return false
	}
	if want == nil { // eq null: unassigned
		return op == filter.EQ && len(values) == 0
	}
	for _, v := range values {
		if compareOne(a, op, v, want) {
			return true
		}
	}
	return false
}

func compareOne(a *scimAttr, op filter.CompareOperator, have, want any) bool {
	switch h := have.(type) {
	case bool:
		w, ok := want.(bool)
		return ok && op == filter.EQ && h == w
	case string:
		w, ok := want.(string)
		if !ok {
			return false
		}
		if a.Type == "dateTime" && op != filter.CO && op != filter.SW && op != filter.EW {
			ht, err1 := time.Parse(time.RFC3339Nano, h)
			wt, err2 := time.Parse(time.RFC3339Nano, w)
			if err1 != nil || err2 != nil {
				return false
			}
			return ordered(op, ht.Compare(wt))
		}
		if !a.CaseExact {
			h, w = strings.ToLower(h), strings.ToLower(w)
		}
		switch op {
		case filter.CO:
			return strings.Contains(h, w)
		case filter.SW:
			return strings.HasPrefix(h, w)
		case filter.EW:
			return strings.HasSuffix(h, w)
		}
		return ordered(op, strings.Compare(h, w))
	case int64:
		var w float64
		switch x := want.(type) {
		case int:
			w = float64(x)
		case float64:
			w = x
		default:
			return false
		}
		return ordered(op, cmp.Compare(float64(h), w))
	}
	return false
}

func ordered(op filter.CompareOperator, c int) bool {
	switch op {
	case filter.EQ:
		return c == 0
	case filter.GT:
		return c > 0
	case filter.GE:
		return c >= 0
	case filter.LT:
		return c < 0
	case filter.LE:
		return c <= 0
	}
	return false
}

// lookupOf finds, among the top-level conjuncts of e, an equality the store can
// answer from an index (see schema.SCIMLookup).
func lookupOf(r *scimResource, e filter.Expression) schema.SCIMLookup {
	switch x := e.(type) {
	case *filter.LogicalExpression:
		if x.Operator != filter.AND {
			return schema.SCIMLookup{}
		}
		if l := lookupOf(r, x.Left); l.Attr != "" {
			return l
		}
		return lookupOf(r, x.Right)
	case *filter.AttributeExpression:
		v, ok := x.CompareValue.(string)
		if !ok || x.Operator != filter.EQ || x.AttributePath.SubAttribute != nil {
			return schema.SCIMLookup{}
		}
		a, ext, ok := r.lookup(x.AttributePath.URI(), x.AttributePath.AttributeName)
		if !ok || ext != "" {
			return schema.SCIMLookup{}
		}
		indexed := []string{"id", "externalId", "userName"}
		if r == scimGroups {
			indexed = []string{"id", "externalId", "displayName"}
		}
		if containsFold(indexed, a.Name) {
			return schema.SCIMLookup{Attr: a.Name, Value: v}
		}
	}
	return schema.SCIMLookup{}
}

// Sorting (RFC 7644 §3.4.2.3).

type scimSort struct {
	attr, sub *scimAttr
	ext       string
	desc      bool
}

func parseSCIMSort(r *scimResource, by, order string) (*scimSort, error) {
	desc := false
	switch strings.ToLower(order) {
	case "", "ascending":
	case "descending":
		desc = true
	default:
		return nil, scimValueError(`sortOrder: must be "ascending" or "descending"`)
	}
	if by == "" {
		if order != "" {
			return nil, scimValueError("sortOrder: given without sortBy")
		}
		return nil, nil
	}
	p, err := filter.ParseAttrPath([]byte(by))
	if err != nil {
		return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidPath", detail: fmt.Sprintf("sortBy: %q is not an attribute path", by)}
	}
	a, ext, sub, ok := scimScope{r: r}.resolve(p)
	if !ok || compared(a, sub) == nil || a.Mutability == "writeOnly" {
		return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidPath", detail: fmt.Sprintf("sortBy: %q is no sortable attribute of a %s", by, r.name)}
	}
	return &scimSort{attr: a, sub: sub, ext: ext, desc: desc}, nil
}

// key is the value a resource sorts by: for a multi-valued attribute, its primary
// value or else its first.
func (s *scimSort) key(res map[string]any) any {
	v := container(res, s.ext)[s.attr.Name]
	if s.attr.Multi {
		list := asList(v)
		for _, el := range list {
			if m, ok := el.(map[string]any); ok && m["primary"] == true {
				v = el
				break
			}
		}
		if l := asList(v); len(l) > 0 {
			v = l[0]
		}
	}
	vals := valuesOf(s.attr, s.sub, v)
	if len(vals) == 0 {
		return nil
	}
	return vals[0]
}

// compare orders two resources; unassigned values sort last.
func (s *scimSort) compare(a, b map[string]any) int {
	ka, kb := s.key(a), s.key(b)
	switch {
	case ka == nil && kb == nil:
		return 0
	case ka == nil:
		return 1
	case kb == nil:
		return -1
	}
	c := 0
	target := compared(s.attr, s.sub)
	switch x := ka.(type) {
	case string:
		y, _ := kb.(string)
		if !target.CaseExact {
			x, y = strings.ToLower(x), strings.ToLower(y)
		}
		c = strings.Compare(x, y)
	case bool:
		y, _ := kb.(bool)
		c = cmp.Compare(btoi(x), btoi(y))
	case int64:
		y, _ := kb.(int64)
		c = cmp.Compare(x, y)
	}
	if s.desc {
		return -c
	}
	return c
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Projection (RFC 7644 §3.4.2.5, §3.9).

type scimProjection struct {
	include bool
	paths   []filter.AttributePath
}

func parseSCIMProjection(r *scimResource, attributes, excluded string) (*scimProjection, error) {
	if attributes != "" && excluded != "" {
		return nil, scimValueError("attributes and excludedAttributes: give one or the other")
	}
	raw, param := attributes, "attributes"
	if excluded != "" {
		raw, param = excluded, "excludedAttributes"
	}
	if raw == "" {
		return nil, nil
	}
	p := &scimProjection{include: attributes != ""}
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		ap, err := filter.ParseAttrPath([]byte(part))
		if err != nil {
			return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidPath", detail: fmt.Sprintf("%s: %q is not an attribute path", param, part)}
		}
		if _, _, _, ok := (scimScope{r: r}).resolve(ap); !ok {
			return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidPath", detail: fmt.Sprintf("%s: %q is no attribute of a %s", param, part, r.name)}
		}
		p.paths = append(p.paths, ap)
	}
	return p, nil
}

// apply returns res with only (or without) the projection's attributes; id and
// schemas are always returned.
func (p *scimProjection) apply(r *scimResource, res map[string]any) map[string]any {
	if p == nil {
		return res
	}
	if !p.include {
		out := deepCopy(res).(map[string]any)
		for _, ap := range p.paths {
			a, ext, sub, _ := scimScope{r: r}.resolve(ap)
			if a.Returned == "always" {
				continue
			}
			c := container(out, ext)
			if sub == nil {
				delete(c, a.Name)
				continue
			}
			for _, el := range asList(c[a.Name]) {
				if m, ok := el.(map[string]any); ok {
					delete(m, sub.Name)
				}
			}
		}
		return out
	}
	out := map[string]any{"schemas": res["schemas"], "id": res["id"]}
	for _, ap := range p.paths {
		a, ext, sub, _ := scimScope{r: r}.resolve(ap)
		src := container(res, ext)
		v, ok := src[a.Name]
		if !ok {
			continue
		}
		dst := out
		if ext != "" {
			m, _ := out[ext].(map[string]any)
			if m == nil {
				m = map[string]any{}
				out[ext] = m
			}
			dst = m
		}
		if sub == nil {
			dst[a.Name] = deepCopy(v)
			continue
		}
		if !a.Multi {
			m, _ := v.(map[string]any)
			if x, ok := m[sub.Name]; ok {
				d, _ := dst[a.Name].(map[string]any)
				if d == nil {
					d = map[string]any{}
					dst[a.Name] = d
				}
				d[sub.Name] = deepCopy(x)
			}
			continue
		}
		var list []any
		for _, el := range asList(v) {
			if m, ok := el.(map[string]any); ok {
				if x, ok := m[sub.Name]; ok {
					list = append(list, map[string]any{sub.Name: deepCopy(x)})
				}
			}
		}
		if len(list) > 0 {
			dst[a.Name] = list
		}
	}
	return out
}
