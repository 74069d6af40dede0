package region

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/schema"
)

// The SCIM 2.0 service provider (RFC 7643, RFC 7644) of each tenant, at
// {issuer}/scim/v2: Users are the tenant's human identities a SCIM client provisioned,
// Groups the groups it created. Callers are tenant service accounts holding
// PermSCIMProvision on resource "tenant"; every write is one audited store
// transaction (docs/lifecycle.md, "SCIM provisioning").

// PermSCIMProvision lets a tenant's non-human identity act as the tenant's SCIM client.
const PermSCIMProvision = "iam.scim.provision"

const scimContentType = "application/scim+json"

// scimError is an error in the SCIM error schema (RFC 7644 §3.12).
type scimError struct {
	status   int
	scimType string
	detail   string
}

func (e *scimError) Error() string { return e.detail }

func (e *scimError) body() map[string]any {
	m := map[string]any{"schemas": []any{scimErrorSchema}, "status": strconv.Itoa(e.status), "detail": e.detail}
	if e.scimType != "" {
		m["scimType"] = e.scimType
	}
	return m
}

// scimCall is one authenticated SCIM request.
type scimCall struct {
	t    schema.Tenant
	c    caller
	base string // {issuer}/scim/v2
	r    *http.Request
	body map[string]any // the decoded JSON body of a POST, PUT or PATCH
	// start is when the request arrived (node clock): offboarding measures the
	// deprovisioning latency from it.
	start time.Time
}

type scimResult struct {
	status   int
	body     any
	version  string // the resource's version: the ETag header
	location string // the Location header of a created resource
}

type scimFunc func(ctx context.Context, call *scimCall) (scimResult, error)

func (n *Node) mountSCIM(mux *http.ServeMux) {
	const base = "/t/{tenant}/scim/v2"
	h := n.scimHandler
	mux.HandleFunc("GET "+base+"/ServiceProviderConfig", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		return scimResult{status: http.StatusOK, body: scimServiceProviderConfig(c.base)}, nil
	}))
	mux.HandleFunc("GET "+base+"/ResourceTypes", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		return listOf([]any{scimResourceTypeDoc(c.base, scimUsers), scimResourceTypeDoc(c.base, scimGroups)}), nil
	}))
	mux.HandleFunc("GET "+base+"/ResourceTypes/{id}", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		for _, r := range []*scimResource{scimUsers, scimGroups} {
			if r.name == c.r.PathValue("id") {
				return scimResult{status: http.StatusOK, body: scimResourceTypeDoc(c.base, r)}, nil
			}
		}
		return scimResult{}, &scimError{status: http.StatusNotFound, detail: "no resource type " + strconv.Quote(c.r.PathValue("id"))}
	}))
	mux.HandleFunc("GET "+base+"/Schemas", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		return listOf(scimSchemaDocs(c.base)), nil
	}))
	mux.HandleFunc("GET "+base+"/Schemas/{id}", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		for _, d := range scimSchemaDocs(c.base) {
			if d.(map[string]any)["id"] == c.r.PathValue("id") {
				return scimResult{status: http.StatusOK, body: d}, nil
			}
		}
		return scimResult{}, &scimError{status: http.StatusNotFound, detail: "no schema " + strconv.Quote(c.r.PathValue("id"))}
	}))
	mux.HandleFunc("GET "+base+"/Users", h(n.scimListUsers))
	mux.HandleFunc("POST "+base+"/Users", h(n.scimCreateUser))
	mux.HandleFunc("GET "+base+"/Users/{id}", h(n.scimGetUser))
	mux.HandleFunc("PUT "+base+"/Users/{id}", h(n.scimReplaceUser))
	mux.HandleFunc("PATCH "+base+"/Users/{id}", h(n.scimPatchUser))
	mux.HandleFunc("DELETE "+base+"/Users/{id}", h(n.scimDeleteUser))
	mux.HandleFunc("GET "+base+"/Groups", h(n.scimListGroups))
	mux.HandleFunc("POST "+base+"/Groups", h(n.scimCreateGroup))
	mux.HandleFunc("GET "+base+"/Groups/{id}", h(n.scimGetGroup))
	mux.HandleFunc("PUT "+base+"/Groups/{id}", h(n.scimReplaceGroup))
	mux.HandleFunc("PATCH "+base+"/Groups/{id}", h(n.scimPatchGroup))
	mux.HandleFunc("DELETE "+base+"/Groups/{id}", h(n.scimDeleteGroup))
	mux.HandleFunc(base+"/", h(func(_ context.Context, c *scimCall) (scimResult, error) {
		return scimResult{}, &scimError{status: http.StatusNotFound, detail: fmt.Sprintf("no SCIM endpoint %s %s (bulk and /.search are not supported)", c.r.Method, c.r.URL.Path)}
	}))
}

func listOf(rs []any) scimResult {
	return scimResult{status: http.StatusOK, body: map[string]any{"schemas": []any{scimListSchema}, "totalResults": len(rs),
		"startIndex": 1, "itemsPerPage": len(rs), "Resources": rs}}
}

// scimHandler resolves the tenant, authenticates and authorizes the caller, reads the
// body, runs f and writes its result or its error in the SCIM error schema. Store
// errors never leak (toSCIMError).
func (n *Node) scimHandler(f scimFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := context.WithValue(r.Context(), requestIDKey{}, incomingRequestID(r.Header.Get(RequestIDHeader)))
		w.Header().Set(RequestIDHeader, requestID(ctx))
		w.Header().Set("Cache-Control", "no-store")
		res, err := n.serveSCIM(ctx, w, r, f)
		route := r.Pattern
		if err != nil {
			se := n.toSCIMError(ctx, err)
			if se.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="keyplane"`)
			}
			writeSCIM(w, se.status, se.body())
			n.metrics.observeRPCIn(ctx, route, strconv.Itoa(se.status), time.Since(start))
			return
		}
		if res.version != "" {
			w.Header().Set("ETag", etag(res.version))
		}
		if res.location != "" {
			w.Header().Set("Location", res.location)
		}
		if res.body == nil {
			w.WriteHeader(res.status)
		} else {
			writeSCIM(w, res.status, res.body)
		}
		n.metrics.observeRPCIn(ctx, route, "ok", time.Since(start))
	}
}

func writeSCIM(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", scimContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (n *Node) serveSCIM(ctx context.Context, w http.ResponseWriter, r *http.Request, f scimFunc) (scimResult, error) {
	tenantID := r.PathValue("tenant")
	if !schema.ValidTenantID(tenantID) {
		return scimResult{}, &scimError{status: http.StatusNotFound, detail: "unknown tenant"}
	}
	t, err := n.store.GetTenant(ctx, tenantID)
	if errors.Is(err, schema.ErrNotFound) {
		return scimResult{}, &scimError{status: http.StatusNotFound, detail: "unknown tenant"}
	}
	if err != nil {
		return scimResult{}, err
	}
	c, err := n.scimCaller(ctx, r.Header.Get("Authorization"), t)
	if err != nil {
		return scimResult{}, err
	}
	call := &scimCall{t: t, c: c, base: n.Issuer(t.ID) + "/scim/v2", r: r, start: n.now()}
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		if call.body, err = readSCIMBody(w, r); err != nil {
			return scimResult{}, err
		}
	}
	return f(ctx, call)
}

// scimCaller authenticates a SCIM client: an active access token of one of the
// tenant's non-human identities that holds PermSCIMProvision. The operator secret is
// refused: provisioning is the tenant's own business, not break-glass.
func (n *Node) scimCaller(ctx context.Context, header string, t schema.Tenant) (caller, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if ok && n.isOperator(raw) {
		return caller{}, &scimError{status: http.StatusForbidden, detail: "SCIM clients are tenant service accounts holding " + PermSCIMProvision + ", not the operator"}
	}
	c, err := n.authenticate(ctx, header, t.ID)
	if err != nil {
		return caller{}, err
	}
	if c.kind == schema.KindHuman {
		return caller{}, &scimError{status: http.StatusForbidden, detail: "SCIM clients are non-human identities (a service account holding " + PermSCIMProvision + ")"}
	}
	if err := n.requirePermission(ctx, t, c, PermSCIMProvision); err != nil {
		return caller{}, err
	}
	return c, nil
}

// readSCIMBody decodes a request body: one JSON object of application/scim+json (or
// application/json), at most maxMessageBytes.
func readSCIMBody(w http.ResponseWriter, r *http.Request) (map[string]any, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != scimContentType && mt != "application/json") {
		return nil, &scimError{status: http.StatusUnsupportedMediaType, detail: "Content-Type must be " + scimContentType}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &scimError{status: http.StatusRequestEntityTooLarge, detail: fmt.Sprintf("the body exceeds %d bytes", maxMessageBytes)}
		}
		return nil, invalidSyntax("the body could not be read")
	}
	return decodeSCIMBody(b)
}

// decodeSCIMBody parses a body: exactly one JSON object, numbers kept as written.
func decodeSCIMBody(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, invalidSyntax("the body must be one JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalidSyntax("the body must be one JSON object, with nothing after it")
	}
	return m, nil
}

// toSCIMError maps any error to a SCIM error, through connectError so that store
// errors are classified (and logged) in one place.
func (n *Node) toSCIMError(ctx context.Context, err error) *scimError {
	var se *scimError
	if errors.As(err, &se) {
		return se
	}
	var conflict *schema.ConflictError
	if errors.As(err, &conflict) {
		return &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: conflict.Error()}
	}
	if errors.Is(err, schema.ErrTooMany) {
		return &scimError{status: http.StatusBadRequest, scimType: "tooMany",
			detail: err.Error() + "; narrow the filter with userName, externalId or id eq (displayName eq for Groups)"}
	}
	var fe *schema.FieldError
	if errors.As(err, &fe) {
		return &scimError{status: http.StatusBadRequest, scimType: "invalidValue", detail: fe.Error()}
	}
	ce := connectError(ctx, n.log, err)
	status := http.StatusInternalServerError
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		status = http.StatusUnauthorized
	case connect.CodePermissionDenied:
		status = http.StatusForbidden
	case connect.CodeInvalidArgument:
		return &scimError{status: http.StatusBadRequest, scimType: "invalidValue", detail: ce.Message()}
	case connect.CodeNotFound:
		status = http.StatusNotFound
	case connect.CodeAlreadyExists:
		return &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: ce.Message()}
	case connect.CodeFailedPrecondition:
		status = http.StatusConflict
	case connect.CodeResourceExhausted:
		status = http.StatusTooManyRequests
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeDeadlineExceeded:
		status = http.StatusServiceUnavailable
	}
	return &scimError{status: status, detail: ce.Message()}
}

// Preconditions (RFC 7644 §3.14).

// ifMatch checks an If-Match header against a resource's version: no header, "*",
// or a list holding the version (weak or strong). A mismatch is 412, built per call
// (applyPatch prefixes details in place).
func ifMatch(header, version string) error {
	if header == "" || matchesETag(header, version) {
		return nil
	}
	return &scimError{status: http.StatusPreconditionFailed, detail: "If-Match: the resource has changed; read it again"}
}

func matchesETag(header, version string) bool {
	for part := range strings.SplitSeq(header, ",") {
		part = strings.TrimPrefix(strings.TrimSpace(part), "W/")
		if part == "*" || part == `"`+version+`"` {
			return true
		}
	}
	return false
}

// notModified answers a GET whose If-None-Match holds the current version.
func notModified(r *http.Request, version string) bool {
	h := r.Header.Get("If-None-Match")
	return h != "" && matchesETag(h, version)
}

// Listing (RFC 7644 §3.4.2).

type scimQuery struct {
	filter     func(map[string]any) bool
	lookup     schema.SCIMLookup
	sort       *scimSort
	start      int // 1-based
	count      int
	projection *scimProjection
}

func parseSCIMQuery(r *scimResource, q map[string][]string) (scimQuery, error) {
	get := func(k string) (string, error) {
		for key, v := range q {
			if strings.EqualFold(key, k) {
				if len(v) > 1 {
					return "", scimValueError("%s: given %d times", k, len(v))
				}
				return v[0], nil
			}
		}
		return "", nil
	}
	var out scimQuery
	params := map[string]string{}
	for _, k := range []string{"filter", "sortBy", "sortOrder", "startIndex", "count", "attributes", "excludedAttributes"} {
		v, err := get(k)
		if err != nil {
			return out, err
		}
		params[k] = v
	}
	if raw := params["filter"]; raw != "" {
		e, err := parseSCIMFilter(r, raw)
		if err != nil {
			return out, err
		}
		out.filter = func(res map[string]any) bool { return matches(scimScope{r: r}, e, res) }
		out.lookup = lookupOf(r, e)
	}
	var err error
	if out.sort, err = parseSCIMSort(r, params["sortBy"], params["sortOrder"]); err != nil {
		return out, err
	}
	out.start, out.count = 1, 100
	if s := params["startIndex"]; s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			return out, scimValueError("startIndex: must be an integer")
		}
		out.start = max(v, 1) // RFC 7644 §3.4.2.4: less than 1 is 1
	}
	if s := params["count"]; s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			return out, scimValueError("count: must be an integer")
		}
		if v > scimMaxCount {
			return out, &scimError{status: http.StatusBadRequest, scimType: "tooMany", detail: fmt.Sprintf("count: at most %d per page", scimMaxCount)}
		}
		out.count = max(v, 0) // negative is 0
	}
	out.projection, err = parseSCIMProjection(r, params["attributes"], params["excludedAttributes"])
	return out, err
}

// page filters, sorts and pages rendered resources.
func (q scimQuery) page(r *scimResource, all []map[string]any) scimResult {
	matched := all[:0]
	for _, res := range all {
		if q.filter == nil || q.filter(res) {
			matched = append(matched, res)
		}
	}
	if q.sort != nil {
		slices.SortStableFunc(matched, q.sort.compare)
	}
	total := len(matched)
	from := min(q.start-1, total)
	to := min(from+q.count, total)
	out := make([]any, 0, to-from)
	for _, res := range matched[from:to] {
		out = append(out, q.projection.apply(r, res))
	}
	return scimResult{status: http.StatusOK, body: map[string]any{"schemas": []any{scimListSchema}, "totalResults": total,
		"startIndex": q.start, "itemsPerPage": len(out), "Resources": out}}
}

// projected renders one resource under the request's attributes/excludedAttributes.
func projected(r *scimResource, req *http.Request, res map[string]any) (map[string]any, error) {
	q := req.URL.Query()
	p, err := parseSCIMProjection(r, q.Get("attributes"), q.Get("excludedAttributes"))
	if err != nil {
		return nil, err
	}
	return p.apply(r, res), nil
}

// Users.

func (n *Node) scimListUsers(ctx context.Context, c *scimCall) (scimResult, error) {
	q, err := parseSCIMQuery(scimUsers, c.r.URL.Query())
	if err != nil {
		return scimResult{}, err
	}
	us, err := n.store.ListSCIMUsers(ctx, c.t.Scope(), q.lookup)
	if err != nil {
		return scimResult{}, err
	}
	all := make([]map[string]any, len(us))
	for i, u := range us {
		all[i] = renderUser(c.base, u)
	}
	return q.page(scimUsers, all), nil
}

func (n *Node) scimUserResult(c *scimCall, status int, u schema.SCIMUser) (scimResult, error) {
	body, err := projected(scimUsers, c.r, renderUser(c.base, u))
	if err != nil {
		return scimResult{}, err
	}
	return scimResult{status: status, body: body, version: u.Version()}, nil
}

func (n *Node) scimGetUser(ctx context.Context, c *scimCall) (scimResult, error) {
	u, err := n.store.GetSCIMUser(ctx, c.t.Scope(), c.r.PathValue("id"))
	if err != nil {
		return scimResult{}, err
	}
	if notModified(c.r, u.Version()) {
		return scimResult{status: http.StatusNotModified, version: u.Version()}, nil
	}
	return n.scimUserResult(c, http.StatusOK, u)
}

// userFromBody normalizes a POST or PUT body into the user to store.
func userFromBody(body map[string]any) (schema.SCIMUser, error) {
	m, err := scimUsers.normalize(body)
	if err != nil {
		return schema.SCIMUser{}, err
	}
	return userFromSCIM(m)
}

// checkManager refuses an enterprise manager that is no User of the tenant (or the
// user itself).
func (n *Node) checkManager(ctx context.Context, t schema.Tenant, u schema.SCIMUser) error {
	id := scimManagerID(u)
	if id == "" {
		return nil
	}
	if id == u.ID {
		return scimValueError("%s:manager: a User cannot be its own manager", scimEnterpriseSchema)
	}
	if _, err := n.store.GetSCIMUser(ctx, t.Scope(), id); errors.Is(err, schema.ErrNotFound) {
		return scimValueError("%s:manager: no User %s in this tenant", scimEnterpriseSchema, id)
	} else if err != nil {
		return err
	}
	return nil
}

func (n *Node) scimCreateUser(ctx context.Context, c *scimCall) (scimResult, error) {
	u, err := userFromBody(c.body)
	if err != nil {
		return scimResult{}, err
	}
	if err := n.checkManager(ctx, c.t, u); err != nil {
		return scimResult{}, err
	}
	out, err := n.store.CreateSCIMUser(ctx, c.c.change(ctx), c.t.Scope(), u)
	if err != nil {
		return scimResult{}, err
	}
	res, err := n.scimUserResult(c, http.StatusCreated, out)
	res.location = c.base + "/Users/" + out.ID
	return res, err
}

// updateUser changes a User in one transaction (edit gets the locked current user,
// after its If-Match check), offboarding it in that transaction when the client says
// active false and it is not offboarded yet (see scimDeleteUser), and enables it again
// afterwards when the client set active true (a rehire). The change is first tried on
// a read of the user, so a bad request (or manager) is refused before anything is
// written.
func (n *Node) updateUser(ctx context.Context, c *scimCall, edit func(schema.SCIMUser) (schema.SCIMUser, error)) (scimResult, error) {
	id, match := c.r.PathValue("id"), c.r.Header.Get("If-Match")
	pre, err := n.store.GetSCIMUser(ctx, c.t.Scope(), id)
	if err != nil {
		return scimResult{}, err
	}
	if err := ifMatch(match, pre.Version()); err != nil {
		return scimResult{}, err
	}
	tried, err := edit(pre)
	if err != nil {
		return scimResult{}, err
	}
	if tried.ID = id; scimManagerID(tried) != scimManagerID(pre) {
		if err := n.checkManager(ctx, c.t, tried); err != nil {
			return scimResult{}, err
		}
	}
	var active bool
	// active false offboards in the same transaction (schema.UpdateSCIMUser): a refused
	// offboarding refuses the whole write.
	_, after, off, err := n.store.UpdateSCIMUser(ctx, c.c.change(ctx), c.t.Scope(), id, func(before schema.SCIMUser) (schema.SCIMUser, error) {
		if err := ifMatch(match, before.Version()); err != nil {
			return schema.SCIMUser{}, err
		}
		want, err := edit(before)
		if err != nil {
			return schema.SCIMUser{}, err
		}
		active = want.Active
		return want, nil
	}, "SCIM: active set to false")
	if err != nil {
		return scimResult{}, err
	}
	n.deprovisioned(off, c.start, "scim")
	if active && !after.Active {
		if err = n.scimReactivate(ctx, c.t, c.c, id); err != nil {
			return scimResult{}, err
		}
		if after, err = n.store.GetSCIMUser(ctx, c.t.Scope(), id); err != nil {
			return scimResult{}, err
		}
	}
	return n.scimUserResult(c, http.StatusOK, after)
}

// scimReplaceUser replaces a User (PUT). A body without active keeps the user's
// status: a leaver is never re-enabled by a PUT that merely left active out.
func (n *Node) scimReplaceUser(ctx context.Context, c *scimCall) (scimResult, error) {
	want, err := userFromBody(c.body)
	if err != nil {
		return scimResult{}, err
	}
	_, hasActive := scimUsers.normalizeKey(c.body, "active")
	return n.updateUser(ctx, c, func(before schema.SCIMUser) (schema.SCIMUser, error) {
		if !hasActive {
			want.Active = before.Active
		}
		return want, nil
	})
}

func (n *Node) scimPatchUser(ctx context.Context, c *scimCall) (scimResult, error) {
	ops, err := decodePatch(c.body)
	if err != nil {
		return scimResult{}, err
	}
	return n.updateUser(ctx, c, func(before schema.SCIMUser) (schema.SCIMUser, error) {
		res := userEditable(before)
		if err := applyPatch(scimUsers, res, ops); err != nil {
			return schema.SCIMUser{}, err
		}
		return userFromBody(res)
	})
}

// scimDeleteUser offboards the User and ends it in SCIM, in one transaction
// (schema.DeleteSCIMUser, which also checks If-Match there): a later GET is 404, and
// its userName and externalId may be provisioned again. The identity stays, disabled,
// for audit. Offboarding (docs/lifecycle.md) disables it, revokes every session and
// credential (its tokens are inactive everywhere once this returns), removes its
// bindings and memberships, ends its elevations and hands the NHIs it owns to its
// manager or freezes them; keyplane_deprovision_seconds{source="scim"} measures it from
// the request's arrival. active false (PUT, PATCH) offboards the same way (updateUser).
func (n *Node) scimDeleteUser(ctx context.Context, c *scimCall) (scimResult, error) {
	id, match := c.r.PathValue("id"), c.r.Header.Get("If-Match")
	off, err := n.store.DeleteSCIMUser(ctx, c.c.change(ctx), c.t.Scope(), id, func(u schema.SCIMUser) error {
		return ifMatch(match, u.Version())
	}, "SCIM: User deleted")
	if err != nil {
		return scimResult{}, err
	}
	n.deprovisioned(off, c.start, "scim")
	return scimResult{status: http.StatusNoContent}, nil
}

// scimReactivate enables a User the client set active again (a rehire).
func (n *Node) scimReactivate(ctx context.Context, t schema.Tenant, c caller, id string) error {
	_, err := n.store.SetIdentityStatus(ctx, c.change(ctx), t.Scope(), id, schema.StatusActive)
	return err
}

// Groups.

func (n *Node) scimListGroups(ctx context.Context, c *scimCall) (scimResult, error) {
	q, err := parseSCIMQuery(scimGroups, c.r.URL.Query())
	if err != nil {
		return scimResult{}, err
	}
	gs, err := n.store.ListSCIMGroups(ctx, c.t.Scope(), q.lookup, true)
	if err != nil {
		return scimResult{}, err
	}
	all := make([]map[string]any, len(gs))
	for i, g := range gs {
		all[i] = renderGroup(c.base, g)
	}
	return q.page(scimGroups, all), nil
}

func (n *Node) scimGroupResult(c *scimCall, status int, g schema.SCIMGroup) (scimResult, error) {
	body, err := projected(scimGroups, c.r, renderGroup(c.base, g))
	if err != nil {
		return scimResult{}, err
	}
	return scimResult{status: status, body: body, version: g.Version()}, nil
}

func (n *Node) scimGetGroup(ctx context.Context, c *scimCall) (scimResult, error) {
	g, err := n.store.GetSCIMGroup(ctx, c.t.Scope(), c.r.PathValue("id"))
	if err != nil {
		return scimResult{}, err
	}
	if notModified(c.r, g.Version()) {
		return scimResult{status: http.StatusNotModified, version: g.Version()}, nil
	}
	return n.scimGroupResult(c, http.StatusOK, g)
}

func groupFromBody(body map[string]any) (schema.SCIMGroup, error) {
	m, err := scimGroups.normalize(body)
	if err != nil {
		return schema.SCIMGroup{}, err
	}
	return groupFromSCIM(m)
}

func (n *Node) scimCreateGroup(ctx context.Context, c *scimCall) (scimResult, error) {
	g, err := groupFromBody(c.body)
	if err != nil {
		return scimResult{}, err
	}
	out, _, err := n.store.CreateSCIMGroup(ctx, c.c.change(ctx), c.t.Scope(), g)
	if err != nil {
		return scimResult{}, err
	}
	res, err := n.scimGroupResult(c, http.StatusCreated, out)
	res.location = c.base + "/Groups/" + out.ID
	return res, err
}

// errPrivilegedGroup refuses a SCIM membership change to a group bound to a
// privileged role: such changes need a second person's approval (two-person change
// control), which a provisioning client cannot give.
func errPrivilegedGroup(id string) error {
	return &scimError{status: http.StatusForbidden, detail: fmt.Sprintf(
		"group %s is bound to a privileged role: change its members through an approved change request (docs/administration.md)", id)}
}

// updateGroup changes a Group in one transaction; a membership change of a group
// bound to a privileged role is refused (errPrivilegedGroup).
func (n *Node) updateGroup(ctx context.Context, c *scimCall, edit func(schema.SCIMGroup) (schema.SCIMGroup, error)) (scimResult, error) {
	id, match := c.r.PathValue("id"), c.r.Header.Get("If-Match")
	sc := c.t.Scope()
	guardAdd, err := n.groupNeedsApproval(ctx, c.c, sc, id, true)
	if err != nil {
		return scimResult{}, err
	}
	guardRemove, err := n.groupNeedsApproval(ctx, c.c, sc, id, false)
	if err != nil {
		return scimResult{}, err
	}
	out, _, err := n.store.UpdateSCIMGroup(ctx, c.c.change(ctx), sc, id, func(before schema.SCIMGroup) (schema.SCIMGroup, error) {
		if err := ifMatch(match, before.Version()); err != nil {
			return schema.SCIMGroup{}, err
		}
		want, err := edit(before)
		if err != nil {
			return schema.SCIMGroup{}, err
		}
		added, removed := membersDiff(before.Members, want.Members)
		if (added && guardAdd) || (removed && guardRemove) {
			return schema.SCIMGroup{}, errPrivilegedGroup(id)
		}
		return want, nil
	})
	if err != nil {
		return scimResult{}, err
	}
	return n.scimGroupResult(c, http.StatusOK, out)
}

// membersDiff reports whether want adds to have and whether it removes from it.
func membersDiff(have, want []string) (added, removed bool) {
	h := map[string]bool{}
	for _, id := range have {
		h[id] = true
	}
	w := map[string]bool{}
	for _, id := range want {
		w[id] = true
		added = added || !h[id]
	}
	for _, id := range have {
		removed = removed || !w[id]
	}
	return added, removed
}

func (n *Node) scimReplaceGroup(ctx context.Context, c *scimCall) (scimResult, error) {
	want, err := groupFromBody(c.body)
	if err != nil {
		return scimResult{}, err
	}
	return n.updateGroup(ctx, c, func(schema.SCIMGroup) (schema.SCIMGroup, error) { return want, nil })
}

func (n *Node) scimPatchGroup(ctx context.Context, c *scimCall) (scimResult, error) {
	ops, err := decodePatch(c.body)
	if err != nil {
		return scimResult{}, err
	}
	return n.updateGroup(ctx, c, func(before schema.SCIMGroup) (schema.SCIMGroup, error) {
		res := groupEditable(before)
		if err := applyPatch(scimGroups, res, ops); err != nil {
			return schema.SCIMGroup{}, err
		}
		return groupFromBody(res)
	})
}

func (n *Node) scimDeleteGroup(ctx context.Context, c *scimCall) (scimResult, error) {
	id, match := c.r.PathValue("id"), c.r.Header.Get("If-Match")
	g, err := n.store.GetSCIMGroup(ctx, c.t.Scope(), id)
	if err != nil {
		return scimResult{}, err
	}
	if guard, err := n.groupNeedsApproval(ctx, c.c, c.t.Scope(), id, false); err != nil {
		return scimResult{}, err
	} else if guard && len(g.Members) > 0 {
		return scimResult{}, errPrivilegedGroup(id)
	}
	_, err = n.store.DeleteSCIMGroup(ctx, c.c.change(ctx), c.t.Scope(), id, func(g schema.SCIMGroup) error { return ifMatch(match, g.Version()) })
	if err != nil {
		return scimResult{}, err
	}
	return scimResult{status: http.StatusNoContent}, nil
}
