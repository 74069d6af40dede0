package region

import (
	"context"
	"fmt"
	"sync"
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
// reads the tenant's current revision (one point read) and uses the snapshot only if
// it has that revision; otherwise one reload per tenant runs at a time and concurrent
// checks wait for it. Safe for concurrent use.
type policyCache struct {
	env       *authz.Env
	store     *schema.Store
	staleness time.Duration
	m         *metrics

	mu      sync.Mutex
	tenants map[string]*policyEntry
}

type policyEntry struct {
	mu        sync.Mutex // held while reloading
	snap      *authz.Snapshot
	checkedAt time.Time // when snap was last known current
}

func (c *policyCache) entry(tenantID string) *policyEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tenants == nil {
		c.tenants = map[string]*policyEntry{}
	}
	e := c.tenants[tenantID]
	if e == nil {
		e = &policyEntry{}
		c.tenants[tenantID] = e
	}
	return e
}

// snapshot returns a policy for t that satisfies cons. t must have been read from the
// database for this request (not from a cache): its PolicyRevision is the current
// revision that a fully consistent check compares with, so the tenant read doubles as
// the revision's point read.
func (c *policyCache) snapshot(ctx context.Context, t schema.Tenant, cons consistency) (*authz.Snapshot, error) {
	e := c.entry(t.ID)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case cons.minimize && e.snap != nil && time.Since(e.checkedAt) <= c.staleness:
		return e.snap, nil
	case cons.atLeast > 0 && e.snap != nil && e.snap.Revision() >= cons.atLeast:
		return e.snap, nil
	}
	rev := t.PolicyRevision
	if cons.atLeast > rev {
		return nil, fieldError("consistency", fmt.Sprintf("at_least_as_fresh %d is ahead of the tenant's revision %d", cons.atLeast, rev))
	}
	if e.snap != nil && e.snap.Revision() == rev {
		e.checkedAt = time.Now()
		return e.snap, nil
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
	e.snap, e.checkedAt = snap, time.Now()
	return snap, nil
}

func toAuthzPolicy(p schema.Policy) authz.Policy {
	out := authz.Policy{Revision: p.Revision, Members: p.Members}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, authz.Role{ID: r.ID, Name: r.Name, Permissions: r.Permissions, Sensitive: r.Sensitive})
	}
	for _, b := range p.Bindings {
		out.Bindings = append(out.Bindings, authz.Binding{ID: b.ID, Effect: authz.Effect(b.Effect), PrincipalKind: b.PrincipalKind,
			PrincipalID: b.PrincipalID, RoleID: b.RoleID, Scope: b.Scope, Condition: b.Condition, ExpiresAt: b.ExpiresAt})
	}
	return out
}
