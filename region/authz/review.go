package authz

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Grant is one permission pattern a binding gives (or, with Effect Deny,
// withholds from) an identity.
type Grant struct {
	BindingID, RoleID string
	Permission        string // a permission pattern from the role
	Scope             string
	Effect            Effect
	Conditional       bool
	ExpiresAt         time.Time // zero: never
	Via               string    // "direct" or "group:<id>"
}

// EffectivePermissions lists, for access review, every binding of identityID
// and of the groups it belongs to that is unexpired at at (zero: now), one
// Grant per (binding, permission pattern). Deny bindings are included with
// Effect Deny; bindings to unknown roles yield nothing. The result is sorted
// by Permission, Scope, Effect, BindingID.
func (s *Snapshot) EffectivePermissions(identityID string, at time.Time) []Grant {
	if at.IsZero() {
		at = time.Now()
	}
	var out []Grant
	add := func(bs []*binding, via string) {
		for _, b := range bs {
			if b.role == nil || b.expiredAt(at) {
				continue
			}
			for _, p := range b.role.Permissions {
				out = append(out, Grant{
					BindingID:   b.ID,
					RoleID:      b.RoleID,
					Permission:  p,
					Scope:       b.Scope,
					Effect:      b.Effect,
					Conditional: b.cond != nil,
					ExpiresAt:   b.ExpiresAt,
					Via:         via,
				})
			}
		}
	}
	add(s.byIdentity[identityID], "direct")
	for _, g := range s.groupsOf[identityID] {
		add(s.byGroup[g], "group:"+g)
	}
	slices.SortFunc(out, func(a, b Grant) int {
		return cmp.Or(
			cmp.Compare(a.Permission, b.Permission),
			cmp.Compare(a.Scope, b.Scope),
			cmp.Compare(a.Effect, b.Effect),
			cmp.Compare(a.BindingID, b.BindingID),
		)
	})
	return out
}

// Role returns the role id of the Snapshot's policy (a copy), and whether it exists.
func (s *Snapshot) Role(id string) (Role, bool) {
	r, ok := s.roles[id]
	if !ok {
		return Role{}, false
	}
	out := r.Role
	out.Permissions = slices.Clone(r.Permissions)
	return out, true
}

// Holder is a principal that holds, or may hold, a permission on a resource.
type Holder struct {
	Kind, ID string // Kind is "identity" or "group"
	// BindingIDs are the allow bindings that grant it: for an identity its own and
	// those of its groups, in the order Check considers them.
	BindingIDs []string
	// Via names where the granting allow bindings come from, each once: "direct" (the
	// principal's own) or "group:<id>" (a group the identity is a member of).
	Via []string
	// Conditional reports that the answer depends on a condition: every granting allow
	// binding is conditional, or a conditional deny binding could apply. Check allows
	// an unconditional holder whatever the request's other inputs.
	Conditional bool
}

// WhoCan lists the principals Check would allow permission on resource at at (zero:
// now), identities and groups alike, by the same rules: an identity's candidates are
// its own bindings and those of every group it is a member of; a group's are its own.
// A principal is listed when an unexpired allow binding among its candidates grants
// permission on resource and no unconditional, unexpired deny binding among them
// covers it; it is Conditional when the outcome depends on a condition (see Holder).
// So, for a policy without conditions, a principal is listed exactly when Check allows
// it; with conditions, Check allows an unconditional holder for every request and
// denies every principal not listed. WhoCan knows nothing of identity state: a
// disabled identity is listed if its bindings allow it (the region filters those).
// The result is sorted by Kind, then ID; it is nil when permission or resource is
// invalid.
func (s *Snapshot) WhoCan(permission, resource string, at time.Time) []Holder {
	if ValidatePermission(permission) != nil || ValidateResource(resource) != nil {
		return nil
	}
	if at.IsZero() {
		at = time.Now()
	}
	// One pass over the bindings finds what each principal's own bindings contribute;
	// an identity then combines its own with its groups'.
	type own struct {
		allows                      []string
		unconditionalAllow          bool
		denied, conditionallyDenied bool
	}
	mine := make(map[string]*own) // kind + "/" + id
	for _, b := range s.all {
		if staticMatch(b, permission, resource, at) != hit {
			continue
		}
		k := b.PrincipalKind + "/" + b.PrincipalID
		o := mine[k]
		if o == nil {
			o = &own{}
			mine[k] = o
		}
		switch {
		case b.Effect == Allow:
			o.allows = append(o.allows, b.ID)
			o.unconditionalAllow = o.unconditionalAllow || b.cond == nil
		case b.cond == nil:
			o.denied = true
		default:
			o.conditionallyDenied = true
		}
	}
	var out []Holder
	holder := func(kind, id string, sources []string) {
		var h Holder
		var unconditionalAllow, conditionallyDenied bool
		for _, src := range sources {
			o := mine[src]
			if o == nil {
				continue
			}
			if o.denied {
				return
			}
			conditionallyDenied = conditionallyDenied || o.conditionallyDenied
			if len(o.allows) == 0 {
				continue
			}
			unconditionalAllow = unconditionalAllow || o.unconditionalAllow
			h.BindingIDs = append(h.BindingIDs, o.allows...)
			if kind == KindGroup || src == KindIdentity+"/"+id {
				h.Via = append(h.Via, "direct")
			} else {
				h.Via = append(h.Via, "group:"+strings.TrimPrefix(src, KindGroup+"/"))
			}
		}
		if len(h.BindingIDs) == 0 {
			return
		}
		h.Kind, h.ID, h.Conditional = kind, id, !unconditionalAllow || conditionallyDenied
		out = append(out, h)
	}
	for id := range s.principalIdentities() {
		sources := []string{KindIdentity + "/" + id}
		for _, g := range s.groupsOf[id] {
			sources = append(sources, KindGroup+"/"+g)
		}
		holder(KindIdentity, id, sources)
	}
	for g := range s.byGroup {
		holder(KindGroup, g, []string{KindGroup + "/" + g})
	}
	slices.SortFunc(out, func(a, b Holder) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// principalIdentities is every identity some binding could apply to: those with
// bindings of their own and the members of groups.
func (s *Snapshot) principalIdentities() map[string]struct{} {
	ids := make(map[string]struct{}, len(s.byIdentity)+len(s.groupsOf))
	for id := range s.byIdentity {
		ids[id] = struct{}{}
	}
	for id := range s.groupsOf {
		ids[id] = struct{}{}
	}
	return ids
}

func (b *binding) expiredAt(at time.Time) bool {
	return !b.ExpiresAt.IsZero() && !at.Before(b.ExpiresAt)
}
