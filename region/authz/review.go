package authz

import (
	"cmp"
	"slices"
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

// Holder is a principal that may hold a permission on a resource.
type Holder struct {
	Kind, ID   string   // Kind is "identity" or "group"
	BindingIDs []string // the principal's own allow bindings that grant it, policy order
	// Conditional reports that the access depends on a condition: every
	// granting allow binding is conditional, or a conditional deny binding of
	// the principal's own could apply.
	Conditional bool
}

// WhoCan lists the principals, identities and groups alike, with an allow
// binding of their own that is unexpired at at (zero: now) and grants
// permission on resource, minus principals with an unconditional, unexpired
// deny binding of their own covering it. Group membership is not expanded:
// a group is listed, not its members, and a group's deny does not remove its
// members. The result is sorted by Kind, then ID; it is nil when permission
// or resource is invalid.
func (s *Snapshot) WhoCan(permission, resource string, at time.Time) []Holder {
	if ValidatePermission(permission) != nil || ValidateResource(resource) != nil {
		return nil
	}
	if at.IsZero() {
		at = time.Now()
	}
	type key struct{ kind, id string }
	type state struct {
		allows          []string
		unconditional   bool
		deniedOutright  bool
		conditionalDeny bool
	}
	states := make(map[key]*state)
	for _, b := range s.all {
		if staticMatch(b, permission, resource, at) != hit {
			continue
		}
		k := key{b.PrincipalKind, b.PrincipalID}
		st := states[k]
		if st == nil {
			st = &state{}
			states[k] = st
		}
		switch {
		case b.Effect == Allow:
			st.allows = append(st.allows, b.ID)
			st.unconditional = st.unconditional || b.cond == nil
		case b.cond == nil:
			st.deniedOutright = true
		default:
			st.conditionalDeny = true
		}
	}
	var out []Holder
	for k, st := range states {
		if len(st.allows) == 0 || st.deniedOutright {
			continue
		}
		out = append(out, Holder{
			Kind:        k.kind,
			ID:          k.id,
			BindingIDs:  st.allows,
			Conditional: !st.unconditional || st.conditionalDeny,
		})
	}
	slices.SortFunc(out, func(a, b Holder) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func (b *binding) expiredAt(at time.Time) bool {
	return !b.ExpiresAt.IsZero() && !at.Before(b.ExpiresAt)
}
