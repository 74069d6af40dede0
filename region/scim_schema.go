package region

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// The SCIM schemas keyplane serves (RFC 7643): what a User and a Group may hold, how
// each attribute compares, and which a client may write. Input is normalized against
// them (attribute names to their canonical case, types checked, read-only values
// dropped), filters and PATCH paths are resolved through them, and /Schemas publishes
// them.

const (
	scimUserSchema       = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimGroupSchema      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	scimEnterpriseSchema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	scimListSchema       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	scimPatchSchema      = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	scimErrorSchema      = "urn:ietf:params:scim:api:messages:2.0:Error"
)

// scimAttr is one attribute definition (RFC 7643 §7).
type scimAttr struct {
	Name        string      `json:"name"`
	Type        string      `json:"type"` // string, boolean, complex, reference, dateTime, integer
	Multi       bool        `json:"multiValued"`
	Description string      `json:"description,omitempty"`
	Required    bool        `json:"required"`
	CaseExact   bool        `json:"caseExact"`
	Mutability  string      `json:"mutability"` // readWrite, readOnly, immutable, writeOnly
	Returned    string      `json:"returned"`
	Uniqueness  string      `json:"uniqueness"`
	Sub         []*scimAttr `json:"subAttributes,omitempty"`
}

func (a *scimAttr) readOnly() bool { return a.Mutability == "readOnly" }

// sub finds a sub-attribute by name, without regard to case.
func (a *scimAttr) sub(name string) *scimAttr { return findAttr(a.Sub, name) }

func findAttr(as []*scimAttr, name string) *scimAttr {
	for _, a := range as {
		if strings.EqualFold(a.Name, name) {
			return a
		}
	}
	return nil
}

func attr(name, typ string, opts ...func(*scimAttr)) *scimAttr {
	a := &scimAttr{Name: name, Type: typ, Mutability: "readWrite", Returned: "default", Uniqueness: "none"}
	for _, o := range opts {
		o(a)
	}
	return a
}

func multi(a *scimAttr)     { a.Multi = true }
func readOnly(a *scimAttr)  { a.Mutability = "readOnly" }
func required(a *scimAttr)  { a.Required = true }
func caseExact(a *scimAttr) { a.CaseExact = true }
func writeOnly(a *scimAttr) { a.Mutability, a.Returned = "writeOnly", "never" }
func immutable(a *scimAttr) { a.Mutability = "immutable" }
func always(a *scimAttr)    { a.Returned = "always" }
func serverUnique(a *scimAttr) {
	a.Uniqueness = "server"
}
func subs(s ...*scimAttr) func(*scimAttr) { return func(a *scimAttr) { a.Type, a.Sub = "complex", s } }

// plural is a multi-valued complex attribute of the usual shape (emails, phoneNumbers…).
func plural(name string) *scimAttr {
	return attr(name, "complex", multi, subs(attr("value", "string"), attr("display", "string"), attr("type", "string"),
		attr("primary", "boolean")))
}

// scimCommon are the attributes every resource has (RFC 7643 §3.1).
func scimCommon() []*scimAttr {
	return []*scimAttr{
		attr("id", "string", readOnly, caseExact, always, serverUnique),
		attr("externalId", "string", caseExact),
		attr("meta", "complex", readOnly, subs(attr("resourceType", "string", readOnly, caseExact), attr("created", "dateTime", readOnly),
			attr("lastModified", "dateTime", readOnly), attr("location", "reference", readOnly, caseExact), attr("version", "string", readOnly, caseExact))),
	}
}

// scimResource is a resource type: its endpoint, core schema and extensions.
type scimResource struct {
	name, endpoint, schema string
	attrs                  []*scimAttr            // core attributes, common ones included
	exts                   map[string][]*scimAttr // extension URN → its attributes
	description            string
}

var scimUsers = &scimResource{name: "User", endpoint: "/Users", schema: scimUserSchema, description: "A keyplane human identity",
	attrs: append(scimCommon(),
		attr("userName", "string", required, serverUnique),
		attr("name", "complex", subs(attr("formatted", "string"), attr("familyName", "string"), attr("givenName", "string"),
			attr("middleName", "string"), attr("honorificPrefix", "string"), attr("honorificSuffix", "string"))),
		attr("displayName", "string"), attr("nickName", "string"), attr("profileUrl", "reference"), attr("title", "string"),
		attr("userType", "string"), attr("preferredLanguage", "string"), attr("locale", "string"), attr("timezone", "string"),
		attr("active", "boolean"),
		attr("password", "string", writeOnly),
		plural("emails"), plural("phoneNumbers"), plural("ims"), plural("photos"), plural("entitlements"), plural("roles"),
		attr("addresses", "complex", multi, subs(attr("formatted", "string"), attr("streetAddress", "string"), attr("locality", "string"),
			attr("region", "string"), attr("postalCode", "string"), attr("country", "string"), attr("type", "string"), attr("primary", "boolean"))),
		attr("groups", "complex", multi, readOnly, subs(attr("value", "string", readOnly), attr("$ref", "reference", readOnly),
			attr("display", "string", readOnly), attr("type", "string", readOnly))),
	),
	exts: map[string][]*scimAttr{scimEnterpriseSchema: {
		attr("employeeNumber", "string"), attr("costCenter", "string"), attr("organization", "string"), attr("division", "string"),
		attr("department", "string"),
		attr("manager", "complex", subs(attr("value", "string"), attr("$ref", "reference"), attr("displayName", "string", readOnly))),
	}},
}

var scimGroups = &scimResource{name: "Group", endpoint: "/Groups", schema: scimGroupSchema, description: "A keyplane group",
	attrs: append(scimCommon(),
		attr("displayName", "string", required, serverUnique),
		attr("members", "complex", multi, subs(attr("value", "string", immutable, caseExact), attr("$ref", "reference", immutable),
			attr("display", "string", readOnly), attr("type", "string", immutable))),
	),
}

// extension returns the canonical URN of an extension of r named without regard to case.
func (r *scimResource) extension(uri string) (string, bool) {
	for u := range r.exts {
		if strings.EqualFold(u, uri) {
			return u, true
		}
	}
	return "", false
}

// lookup resolves an attribute named with an optional schema URN: the attribute and
// the extension URN it lives under ("" for the core schema).
func (r *scimResource) lookup(uri, name string) (*scimAttr, string, bool) {
	if uri == "" || strings.EqualFold(uri, r.schema) {
		if a := findAttr(r.attrs, name); a != nil {
			return a, "", true
		}
		if uri == "" { // an extension's attribute named without its URN (Entra ID's "manager")
			for ext, as := range r.exts {
				if a := findAttr(as, name); a != nil {
					return a, ext, true
				}
			}
		}
		return nil, "", false
	}
	ext, ok := r.extension(uri)
	if !ok {
		return nil, "", false
	}
	a := findAttr(r.exts[ext], name)
	return a, ext, a != nil
}

// normalizeKey finds a top-level member of body by attribute name, without regard to case.
func (r *scimResource) normalizeKey(body map[string]any, name string) (any, bool) {
	for k, v := range body {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// scimValueError is a 400 invalidValue.
func scimValueError(format string, args ...any) *scimError {
	return &scimError{status: http.StatusBadRequest, scimType: "invalidValue", detail: fmt.Sprintf(format, args...)}
}

// normalize checks a resource body against r and returns it with canonical attribute
// names: unknown attributes and schemas are refused, read-only values are dropped (RFC
// 7644 §3.3, §3.5.1: they are ignored), nulls and empty lists mean unassigned.
func (r *scimResource) normalize(in map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range in {
		if strings.EqualFold(k, "schemas") {
			if err := r.checkSchemas(v); err != nil {
				return nil, err
			}
			continue
		}
		if ext, ok := r.extension(k); ok {
			m, ok := v.(map[string]any)
			if !ok {
				if v == nil {
					continue
				}
				return nil, scimValueError("%s: must be an object", ext)
			}
			norm, err := normalizeAttrs(r.exts[ext], m, ext+":")
			if err != nil {
				return nil, err
			}
			if _, dup := out[ext]; dup {
				return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidSyntax", detail: ext + ": given twice"}
			}
			if len(norm) > 0 {
				out[ext] = norm
			}
			continue
		}
		a := findAttr(r.attrs, k)
		if a == nil {
			return nil, scimValueError("unknown attribute %q of a %s", k, r.name)
		}
		if a.readOnly() {
			continue
		}
		if _, dup := out[a.Name]; dup {
			return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidSyntax", detail: a.Name + ": given twice (attribute names ignore case)"}
		}
		nv, err := normalizeValue(a, v, a.Name)
		if err != nil {
			return nil, err
		}
		if nv != nil {
			out[a.Name] = nv
		}
	}
	return out, nil
}

// checkSchemas requires the resource's core schema among the body's schemas.
func (r *scimResource) checkSchemas(v any) error {
	list, ok := v.([]any)
	if !ok {
		return scimValueError("schemas: must be a list of schema URNs")
	}
	core := false
	for _, s := range list {
		u, ok := s.(string)
		if !ok {
			return scimValueError("schemas: must be a list of schema URNs")
		}
		if strings.EqualFold(u, r.schema) {
			core = true
			continue
		}
		// Other URNs are ignored (Entra ID lists a Microsoft schema of its own): an
		// attribute under one is still refused as unknown.
	}
	if !core {
		return scimValueError("schemas: must include %s", r.schema)
	}
	return nil
}

func normalizeAttrs(as []*scimAttr, in map[string]any, prefix string) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range in {
		a := findAttr(as, k)
		if a == nil {
			return nil, scimValueError("unknown attribute %q", prefix+k)
		}
		if a.readOnly() {
			continue
		}
		if _, dup := out[a.Name]; dup {
			return nil, &scimError{status: http.StatusBadRequest, scimType: "invalidSyntax", detail: prefix + a.Name + ": given twice (attribute names ignore case)"}
		}
		nv, err := normalizeValue(a, v, prefix+a.Name)
		if err != nil {
			return nil, err
		}
		if nv != nil {
			out[a.Name] = nv
		}
	}
	return out, nil
}

const maxSCIMString = 2048

// normalizeValue checks one attribute's value; nil means unassigned.
func normalizeValue(a *scimAttr, v any, name string) (any, error) {
	if v == nil {
		return nil, nil
	}
	if a.Multi {
		list, ok := v.([]any)
		if !ok {
			return nil, scimValueError("%s: must be a list", name)
		}
		out := make([]any, 0, len(list))
		primaries := 0
		for _, e := range list {
			nv, err := normalizeSingle(a, e, name)
			if err != nil {
				return nil, err
			}
			if nv == nil {
				continue
			}
			if m, ok := nv.(map[string]any); ok {
				if len(m) == 0 {
					continue
				}
				if m["primary"] == true {
					primaries++
				}
			}
			out = append(out, nv)
		}
		if primaries > 1 {
			return nil, scimValueError("%s: at most one value may be primary", name)
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	}
	return normalizeSingle(a, v, name)
}

func normalizeSingle(a *scimAttr, v any, name string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch a.Type {
	case "complex":
		if l, isList := v.([]any); isList && len(l) == 1 && !a.Multi {
			v = l[0] // Entra ID has sent the manager as a list of one
		}
		m, ok := v.(map[string]any)
		if !ok {
			// A bare value for a complex attribute with a value sub-attribute: Entra ID
			// sends the enterprise manager as the manager's id.
			if s, isStr := v.(string); isStr && a.sub("value") != nil && !a.Multi {
				m = map[string]any{"value": s}
			} else {
				return nil, scimValueError("%s: must be an object", name)
			}
		}
		norm, err := normalizeAttrs(a.Sub, m, name+".")
		if err != nil {
			return nil, err
		}
		if len(norm) == 0 {
			return nil, nil
		}
		return norm, nil
	case "boolean":
		switch b := v.(type) {
		case bool:
			return b, nil
		case string: // Entra ID sends "True" and "False"
			switch strings.ToLower(b) {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
		}
		return nil, scimValueError("%s: must be true or false", name)
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return nil, scimValueError("%s: must be an integer", name)
		}
		i, err := n.Int64()
		if err != nil {
			return nil, scimValueError("%s: must be an integer", name)
		}
		return i, nil
	case "dateTime":
		s, ok := v.(string)
		if !ok {
			return nil, scimValueError("%s: must be an RFC 3339 date and time", name)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, scimValueError("%s: must be an RFC 3339 date and time", name)
		}
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, scimValueError("%s: must be a string", name)
	}
	if len(s) > maxSCIMString {
		return nil, scimValueError("%s: at most %d bytes", name, maxSCIMString)
	}
	if s == "" {
		return nil, nil
	}
	return s, nil
}

// User ↔ identity.

// scimUserData are the attributes kept in their own columns, not in SCIMUser.Data.
var scimUserColumns = []string{"id", "meta", "schemas", "userName", "externalId", "active", "displayName", "password", "groups"}

// userFromSCIM turns a normalized User into the identity to store. A password (Okta
// sends one when password sync is on) is discarded: keyplane takes no passwords by
// provisioning, people set their own (ServiceProviderConfig says changePassword is
// not supported).
func userFromSCIM(m map[string]any) (schema.SCIMUser, error) {
	u := schema.SCIMUser{Active: true, Data: map[string]any{}}
	var ok bool
	if u.UserName, ok = m["userName"].(string); !ok || u.UserName == "" {
		return schema.SCIMUser{}, scimValueError("userName: required")
	}
	u.ExternalID, _ = m["externalId"].(string)
	if a, isSet := m["active"].(bool); isSet {
		u.Active = a
	}
	u.DisplayName, _ = m["displayName"].(string)
	for k, v := range m {
		if !containsFold(scimUserColumns, k) {
			u.Data[k] = v
		}
	}
	if u.DisplayName == "" {
		u.DisplayName = derivedDisplayName(u.Data, u.UserName)
	}
	u.Email = primaryEmail(u.Data)
	u.Attributes = scimDerivedAttributes(u.Data)
	u.ManagerID = scimManagerID(u)
	return u, nil
}

// scimDerivedAttributes are the identity attributes a User's SCIM payload decides
// (schema.SCIMAttributeKeys), for conditions and membership rules: the core title and
// userType and the enterprise extension's department, division, organization,
// costCenter and employeeNumber, where set to a non-empty string.
func scimDerivedAttributes(data map[string]any) map[string]any {
	out := map[string]any{}
	set := func(key string, v any) {
		if s, ok := v.(string); ok && s != "" {
			out[key] = s
		}
	}
	set("title", data["title"])
	set("user_type", data["userType"])
	ext, _ := data[scimEnterpriseSchema].(map[string]any)
	for key, attr := range map[string]string{"department": "department", "division": "division", "organization": "organization",
		"cost_center": "costCenter", "employee_number": "employeeNumber"} {
		set(key, ext[attr])
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// derivedDisplayName is a User's display name when the client sent none: its
// formatted name, its given and family names, or its userName.
func derivedDisplayName(data map[string]any, userName string) string {
	name, _ := data["name"].(map[string]any)
	if f, _ := name["formatted"].(string); f != "" {
		return truncate(f, 200)
	}
	given, _ := name["givenName"].(string)
	family, _ := name["familyName"].(string)
	if s := strings.TrimSpace(given + " " + family); s != "" {
		return truncate(s, 200)
	}
	return truncate(userName, 200)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}

// primaryEmail is the User's primary email, else its first work email, else its first.
func primaryEmail(data map[string]any) string {
	list, _ := data["emails"].([]any)
	first, work := "", ""
	for _, e := range list {
		m, _ := e.(map[string]any)
		v, _ := m["value"].(string)
		t, _ := m["type"].(string)
		switch {
		case v == "":
		case m["primary"] == true:
			return v
		case work == "" && strings.EqualFold(t, "work"):
			work = v
		}
		if first == "" {
			first = v
		}
	}
	if work != "" {
		return work
	}
	return first
}

// scimManagerID is the SCIM id of the User's manager (enterprise extension
// manager.value), "" when none: a SCIM User's id is its identity id, so it is stored as
// identities.manager_id, and offboarding hands a leaver's NHIs to this manager.
func scimManagerID(u schema.SCIMUser) string {
	ext, _ := u.Data[scimEnterpriseSchema].(map[string]any)
	mgr, _ := ext["manager"].(map[string]any)
	id, _ := mgr["value"].(string)
	return id
}

// editable is u as a client would PUT it: what PATCH operates on.
func userEditable(u schema.SCIMUser) map[string]any {
	m := deepCopy(u.Data).(map[string]any)
	m["id"], m["userName"], m["displayName"], m["active"] = u.ID, u.UserName, u.DisplayName, u.Active
	if u.ExternalID != "" {
		m["externalId"] = u.ExternalID
	}
	return m
}

// deepCopy copies JSON-shaped values, so a PATCH never edits the stored value in place.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func scimMeta(resourceType, location, version string, created, modified time.Time) map[string]any {
	return map[string]any{"resourceType": resourceType, "location": location, "version": etag(version),
		"created": created.UTC().Format(time.RFC3339Nano), "lastModified": modified.UTC().Format(time.RFC3339Nano)}
}

func etag(version string) string { return `W/"` + version + `"` }

// renderUser is the User a client reads.
func renderUser(base string, u schema.SCIMUser) map[string]any {
	m := deepCopy(u.Data).(map[string]any)
	schemas := []any{scimUserSchema}
	if _, ok := m[scimEnterpriseSchema]; ok {
		schemas = append(schemas, scimEnterpriseSchema)
	}
	m["schemas"], m["id"], m["userName"], m["displayName"], m["active"] = schemas, u.ID, u.UserName, u.DisplayName, u.Active
	if u.ExternalID != "" {
		m["externalId"] = u.ExternalID
	}
	m["meta"] = scimMeta("User", base+"/Users/"+u.ID, u.Version(), u.CreatedAt, u.UpdatedAt)
	return m
}

// Group ↔ group.

func groupFromSCIM(m map[string]any) (schema.SCIMGroup, error) {
	g := schema.SCIMGroup{Members: []string{}}
	var ok bool
	if g.DisplayName, ok = m["displayName"].(string); !ok || g.DisplayName == "" {
		return schema.SCIMGroup{}, scimValueError("displayName: required")
	}
	g.ExternalID, _ = m["externalId"].(string)
	list, _ := m["members"].([]any)
	for _, e := range list {
		mm, _ := e.(map[string]any)
		v, _ := mm["value"].(string)
		if v == "" {
			return schema.SCIMGroup{}, scimValueError("members: every member needs a value (a User id)")
		}
		if t, _ := mm["type"].(string); t != "" && !strings.EqualFold(t, "User") {
			return schema.SCIMGroup{}, scimValueError("members: %s is a %s; keyplane groups hold Users only", v, t)
		}
		g.Members = append(g.Members, v)
	}
	return g, nil
}

func groupEditable(g schema.SCIMGroup) map[string]any {
	m := map[string]any{"id": g.ID, "displayName": g.DisplayName}
	if g.ExternalID != "" {
		m["externalId"] = g.ExternalID
	}
	if len(g.Members) > 0 {
		ms := make([]any, len(g.Members))
		for i, id := range g.Members {
			ms[i] = map[string]any{"value": id, "type": "User"}
		}
		m["members"] = ms
	}
	return m
}

func renderGroup(base string, g schema.SCIMGroup) map[string]any {
	m := map[string]any{"schemas": []any{scimGroupSchema}, "id": g.ID, "displayName": g.DisplayName}
	if g.ExternalID != "" {
		m["externalId"] = g.ExternalID
	}
	ms := make([]any, len(g.Members))
	for i, id := range g.Members {
		ms[i] = map[string]any{"value": id, "$ref": base + "/Users/" + id, "type": "User"}
	}
	m["members"] = ms
	m["meta"] = scimMeta("Group", base+"/Groups/"+g.ID, g.Version(), g.CreatedAt, g.UpdatedAt)
	return m
}

// Discovery (RFC 7644 §4).

func scimSchemaDoc(base, id, name, description string, attrs []*scimAttr) map[string]any {
	return map[string]any{"schemas": []any{"urn:ietf:params:scim:schemas:core:2.0:Schema"}, "id": id, "name": name, "description": description,
		"attributes": attrs, "meta": map[string]any{"resourceType": "Schema", "location": base + "/Schemas/" + id}}
}

func scimSchemaDocs(base string) []any {
	return []any{
		scimSchemaDoc(base, scimUserSchema, "User", "User Account", scimUsers.attrs),
		scimSchemaDoc(base, scimGroupSchema, "Group", "Group", scimGroups.attrs),
		scimSchemaDoc(base, scimEnterpriseSchema, "EnterpriseUser", "Enterprise User", scimUsers.exts[scimEnterpriseSchema]),
	}
}

func scimResourceTypeDoc(base string, r *scimResource) map[string]any {
	doc := map[string]any{"schemas": []any{"urn:ietf:params:scim:schemas:core:2.0:ResourceType"}, "id": r.name, "name": r.name,
		"endpoint": r.endpoint, "description": r.description, "schema": r.schema,
		"meta": map[string]any{"resourceType": "ResourceType", "location": base + "/ResourceTypes/" + r.name}}
	exts := []any{}
	for u := range r.exts {
		exts = append(exts, map[string]any{"schema": u, "required": false})
	}
	if len(exts) > 0 {
		doc["schemaExtensions"] = exts
	}
	return doc
}

func scimServiceProviderConfig(base string) map[string]any {
	return map[string]any{
		"schemas":          []any{"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"},
		"documentationUri": "https://github.com/keyplane/keyplane/blob/main/docs/lifecycle.md",
		"patch":            map[string]any{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": scimMaxCount},
		"changePassword":   map[string]any{"supported": false},
		"sort":             map[string]any{"supported": true},
		"etag":             map[string]any{"supported": true},
		"authenticationSchemes": []any{map[string]any{"type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": true,
			"description": "An access token of a tenant service account holding " + PermSCIMProvision + " (client_credentials at {issuer}/oauth2/token)"}},
		"meta": map[string]any{"resourceType": "ServiceProviderConfig", "location": base + "/ServiceProviderConfig"},
	}
}
