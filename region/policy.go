package region

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/schema"
)

// consistency is what a check demands of the policy it is evaluated against.
type consistency struct {
	atLeast  int64 // at_least_as_fresh; 0 when not asked
	minimize bool  // minimize_latency
}

// policyCache keeps one compiled policy snapshot per tenant. A fully consistent check
// reads the tenant's current revision (one point read) and uses the snapshot if it is
// at that revision or newer; otherwise one reload per tenant runs at a time and
// concurrent checks wait for it. Cache hits take no lock. Safe for concurrent use.
type policyCache struct {
	env       *authz.Env
	store     *schema.Store
	staleness time.Duration
	m         *metrics

	tenants sync.Map // tenant id → *policyEntry
}

type policyEntry struct {
	mu        sync.Mutex // held while reloading
	snap      atomic.Pointer[authz.Snapshot]
	checkedAt atomic.Int64 // unix nanoseconds when snap was last known current
}

func (c *policyCache) entry(tenantID string) *policyEntry {
	if e, ok := c.tenants.Load(tenantID); ok {
		return e.(*policyEntry)
	}
	e, _ := c.tenants.LoadOrStore(tenantID, &policyEntry{})
	return e.(*policyEntry)
}

// snapshot returns a policy for t that satisfies cons. t must have been read from the
// database for this request (not from a cache): its PolicyRevision is the current
// revision that a fully consistent check compares with, so the tenant read doubles as
// the revision's point read. A snapshot newer than that revision is as good: it
// reflects every change acknowledged before the check began.
func (c *policyCache) snapshot(ctx context.Context, t schema.Tenant, cons consistency) (*authz.Snapshot, error) {
	if cons.atLeast > t.PolicyRevision {
		return nil, fieldError("consistency", fmt.Sprintf("at_least_as_fresh %d is ahead of the tenant's revision %d", cons.atLeast, t.PolicyRevision))
	}
	e := c.entry(t.ID)
	if snap, ok := c.usable(e, t, cons); ok {
		return snap, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if snap, ok := c.usable(e, t, cons); ok {
		return snap, nil // another check reloaded it while this one waited
	}
	p, err := c.store.LoadPolicy(ctx, t.Scope())
	if err != nil {
		return nil, err
	}
	snap, err := c.env.Compile(toAuthzPolicy(p))
	if err != nil {
		return nil, fmt.Errorf("compile policy of %s at revision %d: %w", t.ID, p.Revision, err)
	}
	c.m.policyReloads.Inc()
	e.snap.Store(snap)
	e.checkedAt.Store(time.Now().UnixNano())
	return snap, nil
}

// usable returns the cached snapshot when it satisfies cons.
func (c *policyCache) usable(e *policyEntry, t schema.Tenant, cons consistency) (*authz.Snapshot, bool) {
	snap := e.snap.Load()
	if snap == nil {
		return nil, false
	}
	switch {
	case cons.minimize && time.Since(time.Unix(0, e.checkedAt.Load())) <= c.staleness:
		return snap, true
	case cons.atLeast > 0 && snap.Revision() >= cons.atLeast:
		return snap, true
	case snap.Revision() >= t.PolicyRevision:
		// Only minimize_latency reads checkedAt, at a resolution of its staleness
		// window: refresh it at most every millisecond rather than writing the shared
		// cache line on every check.
		if now := time.Now().UnixNano(); now-e.checkedAt.Load() > int64(time.Millisecond) {
			e.checkedAt.Store(now)
		}
		return snap, true
	}
	return nil, false
}

// toAuthzPolicy converts a stored policy for compiling. The built-in roles
// (schema.BuiltinRoles) are merged in from code, whether or not their rows exist yet;
// a stored row with a built-in id is replaced by the code's definition.
func toAuthzPolicy(p schema.Policy) authz.Policy {
	out := authz.Policy{Revision: p.Revision, Members: p.Members}
	for _, r := range schema.BuiltinRoles() {
		out.Roles = append(out.Roles, authz.Role{ID: r.ID, Name: r.Name, Permissions: r.Permissions, Sensitive: r.Sensitive, Privileged: r.Privileged})
	}
	for _, r := range p.Roles {
		if _, builtin := schema.BuiltinRole(r.ID); builtin {
			continue
		}
		out.Roles = append(out.Roles, authz.Role{ID: r.ID, Name: r.Name, Permissions: r.Permissions, Sensitive: r.Sensitive, Privileged: r.Privileged})
	}
	for _, b := range p.Bindings {
		out.Bindings = append(out.Bindings, authz.Binding{ID: b.ID, Effect: authz.Effect(b.Effect), PrincipalKind: b.PrincipalKind,
			PrincipalID: b.PrincipalID, RoleID: b.RoleID, Scope: b.Scope, Condition: b.Condition, ExpiresAt: b.ExpiresAt})
	}
	return out
}
