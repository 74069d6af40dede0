package region

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/schema"
)

// The checks of tenant-plane procedures whose permission depends on what the request
// touches (authority targets onScope and onIdentity), and the no-escalation rule
// (issue 13, item 3): a caller grants (by binding, by group membership, by removing
// a deny, by minting a credential) only what it holds itself, unconditionally, on the
// whole scope concerned — the rule ApproveElevation applies (holdsEverywhere). The
// operator (break-glass) is not limited by them.

// adminPolicy is what a handler needs to judge an identity caller: the tenant as read
// now and its fully consistent policy.
type adminPolicy struct {
	t    schema.Tenant
	snap *authz.Snapshot
	c    caller
}

// policyFor reads tenantID and its current policy for judging caller c.
func (n *Node) policyFor(ctx context.Context, tenantID string, c caller) (adminPolicy, error) {
	t, err := n.store.GetTenant(ctx, tenantID)
	if err != nil {
		return adminPolicy{}, err
	}
	snap, err := n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return adminPolicy{}, err
	}
	return adminPolicy{t: t, snap: snap, c: c}, nil
}

// allows runs a fully consistent Check of perm on resource for the caller (see
// holdsOnTenant for the inputs conditions see).
func (n *Node) allows(ctx context.Context, p adminPolicy, perm, resource string, attrs map[string]any) (bool, error) {
	pr, denied, err := n.readPrincipal(ctx, p.t, p.c.identityID)
	if err != nil || denied != "" {
		return false, err
	}
	d := p.snap.Check(authz.Request{PrincipalID: pr.id, PrincipalKind: authz.KindIdentity, IdentityKind: pr.kind, PrincipalAttrs: pr.attrs,
		Permission: perm, Resource: resource, ResourceAttrs: attrs, Time: n.now(), Region: n.entryRegion(ctx), ServingRegion: n.cfg.Region, AMR: p.c.amr, AuthTime: p.c.authTime})
	return d.Allowed, nil
}

// requireOnScope refuses a caller that holds perm neither on resource "tenant" (the
// whole tenant) nor unconditionally on every resource scope covers.
func (n *Node) requireOnScope(ctx context.Context, p adminPolicy, perm, scope string) error {
	ok, err := n.allows(ctx, p, perm, "tenant", nil)
	if err != nil {
		return err
	}
	if ok || holdsEverywhere(p.snap.EffectivePermissions(p.c.identityID, n.now()), perm, scope, false) {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the caller lacks %s on %s", perm, scope))
}

// requireRoleOn refuses a caller that does not hold every permission of role on
// scope: granting (or un-denying) the role there would give away what it lacks.
func (n *Node) requireRoleOn(p adminPolicy, role authz.Role, scope, what string) error {
	grants := p.snap.EffectivePermissions(p.c.identityID, n.now())
	for _, perm := range role.Permissions {
		if !holdsEverywhere(grants, perm, scope, false) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
				"the caller lacks %s on %s: %s role %q needs every permission it grants, held unconditionally on the whole scope (no privilege escalation)",
				perm, scope, what, role.Name))
		}
	}
	return nil
}

// mayWriteBinding authorizes creating (or, with deleting, removing) a binding of
// roleID on scope: PermBindingsWrite on scope, and for a binding created (allow or
// deny) or a deny binding removed, every permission of the role on scope. It returns the policy
// revision it judged at (0 for the operator), for schema.Scope.JudgedAt.
func (n *Node) mayWriteBinding(ctx context.Context, c caller, tenantID, roleID, scope string, effect authz.Effect, deleting bool) (int64, error) {
	if c.operator() {
		return 0, nil
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return 0, err
	}
	if err := n.requireOnScope(ctx, p, PermBindingsWrite, scope); err != nil {
		return 0, err
	}
	role, ok := p.snap.Role(roleID)
	if !ok {
		return 0, fieldError("role_id", fmt.Sprintf("no role %s in tenant %q", roleID, tenantID))
	}
	switch {
	case !deleting && effect == authz.Allow:
		err = n.requireRoleOn(p, role, scope, "binding")
	case !deleting:
		// Deny only what you could grant: a deny of permissions the caller does not
		// hold could lock out those who administer it (a tenant admin denied `*`),
		// and only they could remove it.
		err = n.requireRoleOn(p, role, scope, "denying")
	case effect == authz.Deny:
		err = n.requireRoleOn(p, role, scope, "removing a deny of")
	}
	return p.snap.Revision(), err
}

// mayDeleteBinding authorizes DeleteBinding of bindingID (mayWriteBinding on its
// role and scope) and returns the revision it judged at.
func (n *Node) mayDeleteBinding(ctx context.Context, c caller, sc schema.Scope, bindingID string) (int64, error) {
	if c.operator() {
		return 0, nil
	}
	bs, err := n.store.ListBindings(ctx, sc)
	if err != nil {
		return 0, err
	}
	for _, b := range bs {
		if b.ID == bindingID {
			return n.mayWriteBinding(ctx, c, sc.TenantID, b.RoleID, b.Scope, authz.Effect(b.Effect), true)
		}
	}
	return 0, connect.NewError(connect.CodeNotFound, fmt.Errorf("binding_id: no binding %s in tenant %q", bindingID, sc.TenantID))
}

// mayChangeMembership authorizes adding an identity to groupID (every permission the
// group's bindings, allow and deny, name, on their scopes) or removing one from it
// (likewise for its deny bindings), besides PermGroupsWrite on the tenant. It returns the revision
// it judged at.
func (n *Node) mayChangeMembership(ctx context.Context, c caller, sc schema.Scope, groupID string, add bool) (int64, error) {
	if c.operator() {
		return 0, nil
	}
	p, err := n.policyFor(ctx, sc.TenantID, c)
	if err != nil {
		return 0, err
	}
	if err := n.requireOnScope(ctx, p, PermGroupsWrite, "tenant"); err != nil {
		return 0, err
	}
	bs, err := n.store.ListBindings(ctx, sc)
	if err != nil {
		return 0, err
	}
	for _, b := range bs {
		// Adding a member hands on the group's allows and its denies (deny only what
		// you could grant, see mayWriteBinding); removing one lifts its denies.
		if b.PrincipalKind != "group" || b.PrincipalID != groupID || (!add && b.Effect == string(authz.Allow)) {
			continue
		}
		role, ok := p.snap.Role(b.RoleID)
		if !ok {
			continue
		}
		what := "adding a member to a group bound to"
		if !add {
			what = "removing a member from a group denied"
		}
		if err := n.requireRoleOn(p, role, b.Scope, what); err != nil {
			return 0, err
		}
	}
	return p.snap.Revision(), nil
}

// mayManageIdentity authorizes touching the credentials of identityID: the caller
// holds PermCredentialsManage on resource identities/<id>, or
// PermCredentialsManageOwned there and the identity is non-human and owned by the
// caller. When minting (a new key, client secret or password), the caller must also
// hold every permission the identity holds, on its scopes: a credential of the
// identity carries all of them. An identity minting for itself passes that part.
func (n *Node) mayManageIdentity(ctx context.Context, c caller, tenantID, identityID string, minting bool) error {
	if c.operator() {
		return nil
	}
	if identityID == "" {
		return fieldError("identity_id", "required")
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return err
	}
	target, err := n.store.GetIdentity(ctx, p.t.Scope(), identityID)
	if err != nil {
		return err
	}
	resource := "identities/" + target.ID
	attrs := map[string]any{"owner_id": target.OwnerID, "kind": target.Kind}
	ok, err := n.allows(ctx, p, PermCredentialsManage, resource, attrs)
	if err != nil {
		return err
	}
	if !ok && !target.IsHuman() && target.OwnerID == c.identityID {
		if ok, err = n.allows(ctx, p, PermCredentialsManageOwned, resource, attrs); err != nil {
			return err
		}
	}
	if !ok {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"the caller lacks %s on %s (or %s on a non-human identity it owns)", PermCredentialsManage, resource, PermCredentialsManageOwned))
	}
	if !minting || target.ID == c.identityID {
		return nil
	}
	return n.holdsAllOf(p, c, target.ID, "a credential for it would carry that permission")
}

// holdsAllOf refuses caller c unless it holds, unconditionally and on the whole scope,
// every permission identity targetID is allowed (why says what the caller would hand
// on otherwise).
func (n *Node) holdsAllOf(p adminPolicy, c caller, targetID, why string) error {
	mine := p.snap.EffectivePermissions(c.identityID, n.now())
	for _, g := range p.snap.EffectivePermissions(targetID, n.now()) {
		if g.Effect == authz.Allow && !holdsEverywhere(mine, g.Permission, g.Scope, false) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
				"the caller lacks %s on %s, which identity %s holds: %s (no privilege escalation)", g.Permission, g.Scope, targetID, why))
		}
	}
	return nil
}

// mayRewriteIdentity authorizes changing the attributes or owner of identityID, which
// conditions read (principal.attributes) and nhi-owner rights follow (owner_id): never
// one's own, and for another identity only by a caller holding everything it holds —
// otherwise an identity manager could make a conditional grant apply to someone, or
// take over an NHI's credentials.
func (n *Node) mayRewriteIdentity(ctx context.Context, c caller, tenantID, identityID string) error {
	if c.operator() {
		return nil
	}
	if identityID == c.identityID {
		return connect.NewError(connect.CodePermissionDenied, errors.New(
			"id: an identity cannot change its own attributes or owner (conditions and ownership read them)"))
	}
	p, err := n.policyFor(ctx, tenantID, c)
	if err != nil {
		return err
	}
	return n.holdsAllOf(p, c, identityID, "changing its attributes or owner could widen what conditions allow it")
}

// credentialIdentity returns the identity a credential belongs to.
func (n *Node) credentialIdentity(ctx context.Context, sc schema.Scope, credentialID string) (string, error) {
	cred, err := n.store.GetCredential(ctx, sc, credentialID)
	if err != nil {
		return "", err
	}
	return cred.IdentityID, nil
}

// clientIdentity returns the identity an OAuth client (its client id) belongs to.
func (n *Node) clientIdentity(ctx context.Context, sc schema.Scope, clientID string) (string, error) {
	if clientID == "" {
		return "", fieldError("client_id", "required")
	}
	cs, err := n.store.KeyCredentials(ctx, sc, schema.CredClientSecret, clientID)
	if err != nil {
		return "", err
	}
	if len(cs) == 0 {
		return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("client_id: no client %s in tenant %q", clientID, sc.TenantID))
	}
	return cs[0].IdentityID, nil
}
