package region

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/schema"
)

// caller is who made a call: the operator, or an identity of the call's tenant.
type caller struct {
	identityID string    // "" for the operator
	kind       string    // the identity's kind
	authTime   time.Time // when the identity last authenticated (its session's auth_time)
	amr        []string  // how it authenticated (its token's amr)
	// The session, the access token (jti) and the client or API key id of its token.
	sessionID, tokenID, clientID string
	breakGlass                   bool // the operator on a tenant-scoped call (authenticateCall)
	// state is the decision read that proved the caller's token live: its identity's
	// attributes and its tenant's policy revision, as fresh as the call. nil for the
	// operator and for callers not authenticated by a token read.
	state *schema.DecisionState
}

func (c caller) operator() bool { return c.identityID == "" }

// change is the audit actor of what c does: who, of what kind, through which session,
// token and client.
func (c caller) change(ctx context.Context) schema.Change {
	if c.operator() {
		return schema.Change{Actor: "operator", ActorKind: "operator", RequestID: requestID(ctx), BreakGlass: c.breakGlass}
	}
	return schema.Change{Actor: "identity:" + c.identityID, ActorKind: c.kind, RequestID: requestID(ctx),
		SessionID: c.sessionID, TokenID: c.tokenID, ClientID: c.clientID}
}

// authenticate reads the Authorization header of a call about tenantID: the operator
// secret, or an active access token of the tenant (fully validated, revocation
// included) minted for keyplane itself: its aud must hold the tenant's issuer or the
// node's configured API audience (Config.APIAudience). A token a client obtained for
// another resource server is refused, so a resource server that receives one cannot
// replay it against keyplane. It is the only place that turns a bearer credential into
// a caller.
//
// The authority interceptor authenticates every tenant-scoped call first; for the
// same tenant its caller is returned as it is.
func (n *Node) authenticate(ctx context.Context, header, tenantID string) (caller, error) {
	if a, ok := ctx.Value(callerKey{}).(authenticated); ok && a.tenantID == tenantID {
		return a.c, nil
	}
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return caller{}, connect.NewError(connect.CodeUnauthenticated, errors.New("missing credentials: send Authorization: Bearer <access token or operator secret>"))
	}
	if n.isOperator(raw) {
		if n.cfg.NoBreakGlass {
			return caller{}, connect.NewError(connect.CodePermissionDenied, errors.New("break-glass is off on this node: the operator secret is for cluster calls only"))
		}
		return caller{breakGlass: true}, nil
	}
	v, err := n.validate(ctx, tenantID, raw, "", false)
	if err != nil {
		return caller{}, err
	}
	return n.tokenCaller(tenantID, v)
}

// tokenCaller turns a validated bearer token into its caller, or refuses it: inactive,
// or minted for another API than keyplane's.
func (n *Node) tokenCaller(tenantID string, v validation) (caller, error) {
	if !v.Active {
		return caller{}, connect.NewError(connect.CodeUnauthenticated, errors.New("bearer token inactive: "+string(v.Reason)))
	}
	if !n.forKeyplane(tenantID, v.Claims.Audience) {
		return caller{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("bearer token audience %s is not keyplane's API: want aud %q", quoteAudience(v.Claims.Audience), n.Issuer(tenantID)))
	}
	return caller{identityID: v.Claims.Subject, kind: v.IdentityKind, authTime: v.AuthTime, amr: v.Claims.AMR,
		sessionID: v.Claims.SessionID, tokenID: v.Claims.ID, clientID: v.Claims.ClientID, state: v.State}, nil
}

// requirePermission refuses an identity that does not hold perm on resource "tenant"
// of t (fully consistent). The operator holds every permission.
func (n *Node) requirePermission(ctx context.Context, t schema.Tenant, c caller, perm string) error {
	if c.operator() {
		return nil
	}
	if c.state != nil && c.state.PolicyRevision > t.PolicyRevision {
		// Both were read after the call arrived; the newer revision is as good.
		t.PolicyRevision = c.state.PolicyRevision
	}
	snap, err := n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return err
	}
	return n.holdsOnTenant(ctx, t, snap, c, perm)
}

// holdsOnTenant decides whether identity caller c holds perm on resource "tenant" of
// t under snap, with every input a condition may read: the identity's kind and
// attributes (read now), its token's amr and auth_time, the region. The caller's
// address is not known here, so a condition reading request.ip fails closed. A
// refusal is a permission_denied error naming perm.
func (n *Node) holdsOnTenant(ctx context.Context, t schema.Tenant, snap *authz.Snapshot, c caller, perm string) error {
	var p principal
	var denied string
	var err error
	if c.state != nil {
		// The read that authenticated the caller read its identity too.
		p, denied, err = n.principalOf(c.identityID, c.state)
	} else {
		p, denied, err = n.readPrincipal(ctx, t, c.identityID)
	}
	if err != nil {
		return err
	}
	if denied != "" {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the caller lacks %s on the tenant: %s", perm, denied))
	}
	d := snap.Check(authz.Request{PrincipalID: p.id, PrincipalKind: authz.KindIdentity, IdentityKind: p.kind, PrincipalAttrs: p.attrs,
		Permission: perm, Resource: "tenant", Time: n.now(), Region: n.entryRegion(ctx), ServingRegion: n.cfg.Region, AMR: c.amr, AuthTime: c.authTime})
	if !d.Allowed {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the caller lacks %s on the tenant", perm))
	}
	return nil
}

// authorize authenticates the caller and requires perm of it (see requirePermission).
func (n *Node) authorize(ctx context.Context, header string, t schema.Tenant, perm string) error {
	c, err := n.authenticate(ctx, header, t.ID)
	if err != nil {
		return err
	}
	return n.requirePermission(ctx, t, c, perm)
}

// forKeyplane reports whether a token with audience aud was minted for keyplane's own
// APIs of tenantID: aud holds the tenant's issuer or the configured API audience.
func (n *Node) forKeyplane(tenantID string, aud []string) bool {
	return slices.Contains(aud, n.Issuer(tenantID)) || (n.cfg.APIAudience != "" && slices.Contains(aud, n.cfg.APIAudience))
}

// quoteAudience renders an untrusted aud claim for an error message, cut short.
func quoteAudience(aud []string) string {
	s := strings.Join(aud, " ")
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}
