package authz

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Snapshot is a compiled, immutable Policy. It is safe for concurrent use by
// multiple goroutines.
type Snapshot struct {
	revision   int64
	roles      map[string]*role
	all        []*binding            // policy order
	byIdentity map[string][]*binding // identity id → its bindings, policy order
	byGroup    map[string][]*binding // group id → its bindings, policy order
	groupsOf   map[string][]string   // identity id → sorted group ids
}

// Revision returns the Policy revision the Snapshot was compiled from.
func (s *Snapshot) Revision() int64 { return s.revision }

// Request is one access check. Time is the evaluation instant used for
// expiry and exposed to conditions as request.time; when zero, the current
// time is used.
type Request struct {
	PrincipalID, PrincipalKind string // kind "identity" (or empty) or "group"
	// IdentityKind is what conditions see as principal.kind ("human", "service_account",
	// ...); when empty they see PrincipalKind.
	IdentityKind         string
	PrincipalAttrs       map[string]any
	Permission, Resource string
	ResourceAttrs        map[string]any
	Time                 time.Time
	// IP is the caller's address; "" means unknown: a condition that reads request.ip
	// then counts as failing to evaluate (an allow does not apply, a deny does).
	IP string
	// Region is where the request entered keyplane (request.region); ServingRegion the
	// region of the node evaluating it (request.serving_region). They differ when the
	// request was forwarded to the tenant's home region.
	Region, ServingRegion string
	// Country is the ISO 3166-1 alpha-2 code of IP's country from an IP → country
	// database; "" means unknown (no database, no IP, or the IP is not in it): a
	// condition that reads request.country then counts as failing to evaluate.
	Country string
	// Device is the posture of the caller's device as the calling application asserts
	// it; nil means none: a condition that reads device then counts as failing to
	// evaluate (and one that reads device.attested_time, when that is zero).
	Device *Device
	// AMR and AuthTime describe the principal's token; AuthTime zero means there is
	// none: a condition that reads token then counts as failing to evaluate.
	AMR      []string
	AuthTime time.Time
	Context  map[string]any
	Explain  bool // fill Decision.Trace
}

// Decision is the result of Check.
type Decision struct {
	Allowed bool
	// Reason is one human-readable sentence, such as "allowed by binding b1
	// (role editor on projects/alpha/)", "denied by deny binding b9" or "no
	// binding grants docs.document.read on projects/alpha/x".
	Reason string
	// BindingIDs are the deciding bindings: every matching deny binding when
	// denied by a deny, otherwise every matching allow binding.
	BindingIDs []string
	// Sensitive reports that a deciding binding's role is sensitive.
	Sensitive bool
	// Trace, filled only when Request.Explain is set, has one line per
	// candidate binding saying whether it matched or why not.
	Trace []string
}

// outcome is the evaluation state of one candidate binding.
type outcome int

const (
	noMatch outcome = iota
	matched
	condFalse
	condError
)

// Check decides r. Candidates are the bindings of the identity and of every
// group it is a member of (or, for PrincipalKind "group", of that group). A
// binding matches when it is unexpired at r.Time, its scope covers
// r.Resource, its role has a pattern matching r.Permission and its condition,
// if any, is true. Any matching deny denies; otherwise any matching allow
// allows; otherwise the request is denied. A condition that fails to
// evaluate does not match an allow binding but does match a deny binding.
// Check never panics.
func (s *Snapshot) Check(r Request) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			d = Decision{Reason: fmt.Sprintf("internal error: %v", p)}
		}
	}()
	if err := ValidatePermission(r.Permission); err != nil {
		return Decision{Reason: "invalid permission: " + err.Error()}
	}
	if err := ValidateResource(r.Resource); err != nil {
		return Decision{Reason: "invalid resource: " + err.Error()}
	}
	if r.PrincipalID == "" {
		return Decision{Reason: "invalid principal: id must not be empty"}
	}
	var cands []*binding
	switch r.PrincipalKind {
	case "", KindIdentity:
		r.PrincipalKind = KindIdentity
		cands = append(cands, s.byIdentity[r.PrincipalID]...)
		for _, g := range s.groupsOf[r.PrincipalID] {
			cands = append(cands, s.byGroup[g]...)
		}
	case KindGroup:
		cands = s.byGroup[r.PrincipalID]
	default:
		return Decision{Reason: fmt.Sprintf("invalid principal: kind %q must be %q or %q", r.PrincipalKind, KindIdentity, KindGroup)}
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}

	var (
		notes    []string
		outcomes = make([]outcome, len(cands))
		vars     map[string]any
		errs     []error
	)
	if r.Explain {
		notes = make([]string, len(cands))
		errs = make([]error, len(cands))
	}
	// Static filters first; conditions are evaluated only for survivors, and
	// allow conditions only when no deny matched (or when explaining).
	var pending []int
	scopeNotes, elided := 0, 0 // scope misses noted, and those past maxScopeNotes (one line for all)
	for i, b := range cands {
		if m := staticMatch(b, r.Permission, r.Resource, r.Time); m != hit {
			switch {
			case notes == nil:
			case m == missScope && scopeNotes == maxScopeNotes:
				elided++
			default:
				if m == missScope {
					scopeNotes++
				}
				notes[i] = m.note(b, r.Permission, r.Resource)
			}
			continue
		}
		if b.cond == nil {
			outcomes[i] = matched
			continue
		}
		pending = append(pending, i)
	}
	evalCond := func(i int) {
		if vars == nil {
			vars = activation(&r)
		}
		var ok bool
		var err error
		switch c := cands[i].cond; {
		case c.readIP && r.IP == "":
			err = errUnknownIP
		case c.readCountry && r.Country == "":
			err = errUnknownCountry
		case c.readToken && r.AuthTime.IsZero():
			err = errNoToken
		case c.readDevice && r.Device == nil:
			err = errNoDevice
		case c.readAttested && r.Device.AttestedTime.IsZero(): // readAttested implies readDevice: r.Device is set
			err = errNotAttested
		default:
			ok, err = c.eval(vars)
		}
		switch {
		case err != nil:
			outcomes[i] = condError
			if errs != nil {
				errs[i] = err
			}
		case ok:
			outcomes[i] = matched
		default:
			outcomes[i] = condFalse
		}
	}
	denied := false
	for i, b := range cands {
		if b.Effect == Deny && outcomes[i] == matched {
			denied = true
		}
	}
	for _, i := range pending {
		if cands[i].Effect == Deny {
			evalCond(i)
			if outcomes[i] != condFalse {
				denied = true
			}
		}
	}
	if !denied || r.Explain {
		for _, i := range pending {
			if cands[i].Effect == Allow {
				evalCond(i)
			}
		}
	}

	want := Allow
	if denied {
		want = Deny
	}
	for i, b := range cands {
		o := outcomes[i]
		if b.Effect == want && (o == matched || o == condError && b.Effect == Deny) {
			d.BindingIDs = append(d.BindingIDs, b.ID)
			d.Sensitive = d.Sensitive || b.role.Sensitive
		}
		if notes == nil {
			continue
		}
		switch o {
		case matched:
			notes[i] = fmt.Sprintf("%s: matched (%s, role %s on %s)", b.ID, b.Effect, b.RoleID, b.Scope)
		case condFalse:
			notes[i] = fmt.Sprintf("%s: condition false", b.ID)
		case condError:
			if b.Effect == Deny {
				notes[i] = fmt.Sprintf("%s: condition error, deny applies (fail closed): %v", b.ID, errs[i])
			} else {
				notes[i] = fmt.Sprintf("%s: condition error, allow does not apply (fail closed): %v", b.ID, errs[i])
			}
		}
	}
	if elided > 0 {
		notes = slices.DeleteFunc(notes, func(n string) bool { return n == "" })
		notes = append(notes, fmt.Sprintf("and %d more bindings whose scope does not cover %s", elided, r.Resource))
	}
	d.Trace = notes
	switch {
	case denied:
		d.Reason = "denied by deny binding " + d.BindingIDs[0]
	case len(d.BindingIDs) > 0:
		first := d.BindingIDs[0]
		for _, b := range cands {
			if b.ID == first {
				d.Reason = fmt.Sprintf("allowed by binding %s (role %s on %s)", b.ID, b.RoleID, b.Scope)
				break
			}
		}
		d.Allowed = true
	default:
		d.Reason = fmt.Sprintf("no binding grants %s on %s", r.Permission, r.Resource)
	}
	return d
}

// miss says why a binding failed the tests other than its condition.
type miss int

const (
	hit miss = iota
	missExpired
	missScope
	missRole
	missPermission
)

// staticMatch applies every test but the condition.
func staticMatch(b *binding, permission, resource string, at time.Time) miss {
	switch {
	case b.expiredAt(at):
		return missExpired
	case !scopeCovers(b.Scope, resource):
		return missScope
	case b.role == nil:
		return missRole
	case !b.role.grants(permission):
		return missPermission
	}
	return hit
}

// maxScopeNotes bounds the trace lines of bindings whose scope does not cover the
// resource: a principal holding a role on thousands of resources would otherwise get a
// line for each (and the decision log would store them with every denied check).
const maxScopeNotes = 10

// note is the trace line for a binding that failed with m.
func (m miss) note(b *binding, permission, resource string) string {
	switch m {
	case missExpired:
		return fmt.Sprintf("%s: expired at %s", b.ID, b.ExpiresAt.UTC().Format(time.RFC3339Nano))
	case missScope:
		return fmt.Sprintf("%s: scope %s does not cover %s", b.ID, b.Scope, resource)
	case missRole:
		return fmt.Sprintf("%s: unknown role %s", b.ID, b.RoleID)
	default:
		return fmt.Sprintf("%s: role %s has no permission matching %s", b.ID, b.RoleID, permission)
	}
}

func (r *role) grants(permission string) bool {
	for _, p := range r.Permissions {
		if matchPermission(p, permission) {
			return true
		}
	}
	return false
}

var epoch = time.Unix(0, 0).UTC()

// Evaluation errors of conditions reading inputs a request does not have.
var (
	errUnknownIP = errors.New("request.ip is unknown for this request")
	errNoToken   = errors.New("token is unknown: the principal was not given as a token")
	// Without a database, an address or an entry for it.
	errUnknownCountry = errors.New("request.country is unknown for this request")
	errNoDevice       = errors.New("device is unknown: the check carries no device")
	errNotAttested    = errors.New("device.attested_time is unknown: the device carries no attestation time")
)

// activation builds the CEL variables for r.
func activation(r *Request) map[string]any {
	auth := r.AuthTime
	if auth.IsZero() {
		auth = epoch
	}
	amr := r.AMR
	if amr == nil {
		amr = []string{}
	}
	var dev deviceVar
	if d := r.Device; d != nil {
		dev = deviceVar{ID: d.ID, Platform: d.Platform, OSVersion: d.OSVersion, Managed: d.Managed, Compliant: d.Compliant,
			DiskEncrypted: d.DiskEncrypted, ScreenLock: d.ScreenLock, Jailbroken: d.Jailbroken, AttestedTime: d.AttestedTime, AssertedBy: d.AssertedBy}
	}
	if dev.AttestedTime.IsZero() {
		dev.AttestedTime = epoch
	}
	return map[string]any{
		"request":   requestVar{Time: r.Time, IP: r.IP, Region: r.Region, ServingRegion: r.ServingRegion, Country: r.Country},
		"principal": map[string]any{"id": r.PrincipalID, "kind": cmp.Or(r.IdentityKind, r.PrincipalKind), "attributes": nonNil(r.PrincipalAttrs)},
		"resource":  map[string]any{"path": r.Resource, "attributes": nonNil(r.ResourceAttrs)},
		"token":     tokenVar{AMR: amr, AuthTime: auth},
		"device":    dev,
		"context":   nonNil(r.Context),
	}
}

func nonNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
