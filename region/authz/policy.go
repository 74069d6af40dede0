package authz

import (
	"fmt"
	"slices"
	"time"
)

// Effect is what a matching binding does to a request.
type Effect string

// Effects.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// Principal kinds a binding may name.
const (
	KindIdentity = "identity"
	KindGroup    = "group"
)

// Role is a named set of permission patterns (see ValidatePermissionPattern).
// A Sensitive role marks decisions it decides, so callers can audit or
// require step-up authentication.
type Role struct {
	ID, Name    string
	Permissions []string
	Sensitive   bool
	// Privileged: binding it needs a second person's approval (the region's
	// two-person change control); the engine itself does not read it.
	Privileged bool
}

// Binding grants (or, with Effect Deny, withholds) a role's permissions to a
// principal on the resources its scope covers, while unexpired and while its
// optional CEL condition holds.
type Binding struct {
	ID            string
	PrincipalKind string // KindIdentity or KindGroup
	PrincipalID   string
	RoleID        string // a binding to an unknown role never matches
	Scope         string // see ValidateScope
	Condition     string // CEL; empty means unconditional
	Effect        Effect
	ExpiresAt     time.Time // zero: never; otherwise valid while the request time is before it
}

// Policy is the input to Env.Compile.
type Policy struct {
	Revision int64
	Roles    []Role
	Bindings []Binding
	Members  map[string][]string // group id → identity ids
}

// role is a compiled Role.
type role struct {
	Role
}

// binding is a compiled Binding.
type binding struct {
	Binding
	role *role      // nil for an unknown role
	cond *condition // nil when unconditional
}

// Compile validates p and compiles it into an immutable Snapshot. It rejects
// empty or duplicate ids, invalid permission patterns, scopes, effects and
// principal kinds, and conditions CheckCondition rejects; errors name the
// offending role or binding id. Conditions are compiled through e's cache.
// The Snapshot does not share memory with p.
func (e *Env) Compile(p Policy) (*Snapshot, error) {
	s := &Snapshot{
		revision:   p.Revision,
		roles:      make(map[string]*role, len(p.Roles)),
		byIdentity: make(map[string][]*binding),
		byGroup:    make(map[string][]*binding),
		groupsOf:   make(map[string][]string),
	}
	for i, r := range p.Roles {
		if r.ID == "" {
			return nil, invalid("role #%d: id must not be empty", i)
		}
		if _, dup := s.roles[r.ID]; dup {
			return nil, invalid("role %q: duplicate id", r.ID)
		}
		for _, pat := range r.Permissions {
			if err := ValidatePermissionPattern(pat); err != nil {
				return nil, invalid("role %q: %s", r.ID, err)
			}
		}
		r.Permissions = slices.Clone(r.Permissions)
		s.roles[r.ID] = &role{Role: r}
	}
	seen := make(map[string]bool, len(p.Bindings))
	for i, b := range p.Bindings {
		if b.ID == "" {
			return nil, invalid("binding #%d: id must not be empty", i)
		}
		if seen[b.ID] {
			return nil, invalid("binding %q: duplicate id", b.ID)
		}
		seen[b.ID] = true
		if b.PrincipalKind != KindIdentity && b.PrincipalKind != KindGroup {
			return nil, invalid("binding %q: principal kind %q must be %q or %q", b.ID, b.PrincipalKind, KindIdentity, KindGroup)
		}
		if b.PrincipalID == "" {
			return nil, invalid("binding %q: principal id must not be empty", b.ID)
		}
		if b.Effect != Allow && b.Effect != Deny {
			return nil, invalid("binding %q: effect %q must be %q or %q", b.ID, b.Effect, Allow, Deny)
		}
		if err := ValidateScope(b.Scope); err != nil {
			return nil, invalid("binding %q: %s", b.ID, err)
		}
		cb := &binding{Binding: b, role: s.roles[b.RoleID]}
		if b.Condition != "" {
			c, err := e.condition(b.Condition)
			if err != nil {
				return nil, fmt.Errorf("binding %q: %w", b.ID, err)
			}
			cb.cond = c
		}
		s.all = append(s.all, cb)
		if b.PrincipalKind == KindIdentity {
			s.byIdentity[b.PrincipalID] = append(s.byIdentity[b.PrincipalID], cb)
		} else {
			s.byGroup[b.PrincipalID] = append(s.byGroup[b.PrincipalID], cb)
		}
	}
	for g, ids := range p.Members {
		for _, id := range ids {
			s.groupsOf[id] = append(s.groupsOf[id], g)
		}
	}
	for id, gs := range s.groupsOf {
		slices.Sort(gs)
		s.groupsOf[id] = slices.Compact(gs)
	}
	return s, nil
}
