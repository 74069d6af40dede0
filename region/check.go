package region

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// CheckService implements keyplane.v1.CheckService.
type CheckService struct {
	node *Node
}

var _ keyplanev1connect.CheckServiceHandler = (*CheckService)(nil)

// Permissions that authorize callers of the CheckService (on resource "tenant").
const (
	PermPerformChecks = "iam.checks.perform"
	PermReviewAccess  = "iam.access.review"
	maxContextBytes   = 8 << 10
	maxBulkItems      = 100
)

func consistencyFromProto(c *keyplanev1.Consistency) (consistency, error) {
	switch r := c.GetRequirement().(type) {
	case nil, *keyplanev1.Consistency_FullyConsistent:
		return consistency{}, nil
	case *keyplanev1.Consistency_AtLeastAsFresh:
		if r.AtLeastAsFresh <= 0 {
			return consistency{}, fieldError("consistency.at_least_as_fresh", "must be a revision returned by a policy write (> 0)")
		}
		return consistency{atLeast: r.AtLeastAsFresh}, nil
	case *keyplanev1.Consistency_MinimizeLatency:
		return consistency{minimize: r.MinimizeLatency}, nil
	}
	return consistency{}, fieldError("consistency", "unknown requirement")
}

// principal is who a check is about.
type principal struct {
	id       string
	kind     string
	attrs    map[string]any
	amr      []string
	authTime time.Time
	// session and client are the checked token's session and client ("" for a check
	// by identity id).
	session, client string
}

// readPrincipal reads identity id of t for a decision about it (a decision read, shared
// with concurrent decisions).
func (n *Node) readPrincipal(ctx context.Context, t schema.Tenant, id string) (principal, string, error) {
	id, err := canonicalID("identity_id", id)
	if err != nil {
		return principal{}, "", err
	}
	st, err := n.states.read(ctx, t.HomeRegion, schema.StateKey{TenantID: t.ID, IdentityID: id})
	if err != nil {
		return principal{}, "", err
	}
	return n.principalOf(id, &st[0])
}

// canonicalID returns an identity id in the canonical lowercase form ids are stored and
// bound in, or refuses one that is not a UUID, naming field.
func canonicalID(field, id string) (string, error) {
	if id == "" {
		return "", fieldError(field, "required")
	}
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", fieldError(field, "must be a UUID like 0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b")
	}
	return u.String(), nil
}

// principalOf is identity id as a decision read returned it, or why every check about
// it is denied.
func (n *Node) principalOf(id string, st *schema.DecisionState) (principal, string, error) {
	if !st.IdentityFound {
		return principal{}, "", fmt.Errorf("%w: identity %s", schema.ErrNotFound, id)
	}
	if reason := n.inactive(st.IdentityStatus, st.IdentityExpiry); reason != "" {
		return principal{}, reason, nil
	}
	attrs, err := st.Attributes()
	if err != nil {
		return principal{}, "", err
	}
	return principal{id: id, kind: st.IdentityKind, attrs: attrs}, "", nil
}

// inactiveReason says why Check denies identity i everything whatever its bindings, or
// is "" when it does not.
func (n *Node) inactiveReason(i schema.Identity) string {
	return n.inactive(i.Status, i.ExpiresAt)
}

// inactive is inactiveReason of an identity with status and expiry (zero: never).
func (n *Node) inactive(status string, expiry time.Time) string {
	switch {
	case status != schema.StatusActive:
		return "identity disabled"
	case !expiry.IsZero() && !n.now().Before(expiry):
		return "identity expired"
	}
	return ""
}

func checkItem(permission, resource string) error {
	if err := authz.ValidatePermission(permission); err != nil {
		return fieldError("permission", err.Error())
	}
	if err := authz.ValidateResource(resource); err != nil {
		return fieldError("resource", err.Error())
	}
	return nil
}

func contextMap(s *structpb.Struct) (map[string]any, error) {
	if s == nil {
		return map[string]any{}, nil
	}
	m := s.AsMap()
	b, err := json.Marshal(m)
	if err != nil {
		// AsMap's values always marshal (it turns NaN and infinities into strings); were
		// one not to, the size would be unknown, so it is refused, not let past the bound.
		return nil, fieldError("context", "must be representable as JSON: "+err.Error())
	}
	if len(b) > maxContextBytes {
		return nil, fieldError("context", fmt.Sprintf("at most %d bytes as JSON, got %d", maxContextBytes, len(b)))
	}
	return m, nil
}

// checkOne decides one item and logs the decision (synchronously for sensitive roles).
// The log keeps the explain trace of every check that asked for it and of every
// denied decision (denies are what people investigate; GetDecision shows why): a
// denied check that did not ask is evaluated a second time, explained, for the log.
// Allowed checks without explain cost what they did before.
func (n *Node) checkOne(ctx context.Context, t schema.Tenant, snap *authz.Snapshot, p principal, denied string,
	perm, resource string, resAttrs, cctx map[string]any, explain bool, from origin) (*keyplanev1.CheckResponse, error) {
	start, now := time.Now(), n.now()
	entry := n.entryRegion(ctx)
	var d authz.Decision
	var trace []string
	var took time.Duration // the decision's own latency, without the trace for the log
	if denied != "" {
		d = authz.Decision{Reason: denied}
		took = time.Since(start)
	} else {
		r := authz.Request{PrincipalID: p.id, PrincipalKind: authz.KindIdentity, IdentityKind: p.kind, PrincipalAttrs: p.attrs, Permission: perm, Resource: resource,
			ResourceAttrs: resAttrs, Time: now, IP: from.ip, Country: from.country, Device: from.device, Region: entry, ServingRegion: n.cfg.Region,
			AMR: p.amr, AuthTime: p.authTime, Context: cctx, Explain: explain}
		d = snap.Check(r)
		took, trace = time.Since(start), d.Trace
		if !d.Allowed && !explain {
			// The same request at the same instant against the same snapshot: the
			// same answer, now with its trace.
			r.Explain = true
			trace = snap.Check(r).Trace
		}
	}
	out := &keyplanev1.CheckResponse{Allowed: d.Allowed, Decision: decisionOf(d.Allowed), Reason: d.Reason, BindingIds: d.BindingIDs, PolicyRevision: snap.Revision(),
		DecisionId: uuid.NewString(), Trace: d.Trace}
	rec := schema.Decision{ID: out.DecisionId, TenantID: t.ID, Region: t.HomeRegion, At: now, PrincipalID: p.id, Permission: perm,
		Resource: resource, Allowed: d.Allowed, Reason: d.Reason, BindingIDs: d.BindingIDs, Revision: snap.Revision(), Latency: took, Trace: trace,
		SourceNetwork: networkOf(from.ip), ClientID: p.client, EntryRegion: entry, SessionID: p.session}
	if d.Sensitive {
		if err := n.store.WriteDecisions(ctx, []schema.Decision{rec}); err != nil {
			return nil, fmt.Errorf("log sensitive decision: %w", err)
		}
		n.metrics.decisionsWritten.Inc()
	} else if err := n.decisions.record(ctx, rec); err != nil {
		return nil, err
	}
	result := "denied"
	if d.Allowed {
		result = "allowed"
	}
	n.metrics.checks.WithLabelValues(result).Inc()
	if p.id != "" {
		// Never waits: a full analytics buffer drops the event (analytics.go).
		n.analytics.observe(accessEvent{tenant: t.Scope(), identity: p.id, identityKind: p.kind, at: now, region: entry, network: rec.SourceNetwork,
			client: p.client, session: p.session, permission: perm, resource: resource, allowed: d.Allowed, sensitive: d.Sensitive})
	}
	return out, nil
}

// entryRegion is the region where the request entered keyplane (request.region in
// conditions): the forwarding node's when a trusted hop says the request was
// forwarded, otherwise this node's.
func (n *Node) entryRegion(ctx context.Context) string {
	return cmp.Or(routing.EntryRegion(ctx), n.cfg.Region)
}

func decisionOf(allowed bool) keyplanev1.Decision {
	if allowed {
		return keyplanev1.Decision_DECISION_ALLOW
	}
	return keyplanev1.Decision_DECISION_DENY
}

// peerIP is the caller's IP address as a check's request.ip sees it, from the
// request's remote address: the TCP peer of a direct call, or the client address an
// authenticated hop carried (routing sets it; a hop it cannot trust leaves the address
// empty, never the forwarding node's). Anything that is not host:port with an IP host
// is unknown: "" (a condition on request.ip then fails closed).
func peerIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return ""
	}
	return ip.Unmap().String()
}

// origin is where the request a check decides comes from: the caller's address
// (request.ip, "" when unknown), its country (request.country, "" when unknown) and
// the device the calling application asserted (device, nil when none).
type origin struct {
	ip, country string
	device      *authz.Device
}

// origin is the origin of a request from the remote address addr with device dev.
func (n *Node) origin(addr string, dev *authz.Device) origin {
	o := origin{ip: peerIP(addr), device: dev}
	if n.geo != nil && o.ip != "" {
		if a, err := netip.ParseAddr(o.ip); err == nil {
			o.country = n.geo.Country(a)
		}
	}
	return o
}

// deviceFromProto validates the device a check carries; nil without one.
func deviceFromProto(d *keyplanev1.Device) (*authz.Device, error) {
	if d == nil {
		return nil, nil
	}
	out := &authz.Device{ID: d.Id, Platform: d.Platform, OSVersion: d.OsVersion, Managed: d.Managed, Compliant: d.Compliant,
		DiskEncrypted: d.DiskEncrypted, ScreenLock: d.ScreenLock, Jailbroken: d.Jailbroken}
	if d.AttestedTime != nil {
		if err := d.AttestedTime.CheckValid(); err != nil {
			return nil, fieldError("device.attested_time", "must be a valid timestamp")
		}
		out.AttestedTime = d.AttestedTime.AsTime()
	}
	if err := authz.ValidateDevice(out); err != nil {
		var fe *authz.DeviceFieldError
		if errors.As(err, &fe) {
			return nil, fieldError("device."+fe.Field, fe.Reason)
		}
		return nil, fieldError("device", err.Error())
	}
	return out, nil
}

// preparedCheck is what every check of a request shares.
type preparedCheck struct {
	tenant    schema.Tenant
	snap      *authz.Snapshot
	principal principal
	denied    string // non-empty: the principal cannot be allowed anything (why)
	context   map[string]any
	device    *authz.Device // asserted by the caller; nil without one
}

// prepareCheck validates the shared fields of Check and CheckBulk, authenticates and
// authorizes the caller, resolves the principal and picks the policy snapshot. Every
// state it depends on — the tenant's status and policy revision, the caller's token,
// the principal's identity and token — comes from one decision read, shared with
// concurrent decisions; signatures are checked on the CPU before it.
func (n *Node) prepareCheck(ctx context.Context, header, proc, tenantID string, c *keyplanev1.Consistency, cs *structpb.Struct,
	dev *keyplanev1.Device, identityID, token string) (preparedCheck, error) {
	cons, err := consistencyFromProto(c)
	if err != nil {
		return preparedCheck{}, err
	}
	cctx, err := contextMap(cs)
	if err != nil {
		return preparedCheck{}, err
	}
	device, err := deviceFromProto(dev)
	if err != nil {
		return preparedCheck{}, err
	}
	if tenantID == "" {
		return preparedCheck{}, fieldError("tenant_id", "required")
	}
	// The cached placement says where to read; the read says whether the tenant is
	// active and at which revision.
	t, err := n.tenants.Tenant(ctx, tenantID, 0)
	if err != nil {
		return preparedCheck{}, err
	}
	cl, cv, ckey, err := n.verifyCaller(ctx, header, t.ID, proc)
	if err != nil {
		return preparedCheck{}, err
	}
	pkey := schema.StateKey{TenantID: t.ID} // the tenant's row alone, for a token refused on the CPU
	var pv validation
	var denied string
	switch {
	case token != "":
		var k *schema.StateKey
		if pv, k, err = n.verifyToken(ctx, t.ID, token, ""); err != nil {
			return preparedCheck{}, err
		}
		if k != nil {
			pkey = *k
		} else {
			denied = "token inactive: " + string(pv.Reason)
		}
	case identityID == "":
		return preparedCheck{}, fieldError("identity_id", "an identity_id or a token is required")
	default:
		if identityID, err = canonicalID("identity_id", identityID); err != nil {
			return preparedCheck{}, err
		}
		pkey.IdentityID = identityID
	}
	keys := []schema.StateKey{pkey}
	if ckey != nil {
		keys = append(keys, *ckey)
	}
	sts, err := n.states.read(ctx, t.HomeRegion, keys...)
	if err != nil {
		return preparedCheck{}, err
	}
	pst := &sts[0]
	if !pst.TenantFound {
		return preparedCheck{}, fmt.Errorf("%w: tenant %q", schema.ErrNotFound, t.ID)
	}
	if pst.TenantStatus != schema.StatusActive {
		return preparedCheck{}, connect.NewError(connect.CodeFailedPrecondition, errors.New("tenant_id: tenant "+t.ID+" is disabled"))
	}
	t.Status, t.PolicyRevision = pst.TenantStatus, pst.PolicyRevision
	if ckey != nil {
		n.judgeToken(cv, &sts[1])
		if cl, err = n.tokenCaller(t.ID, *cv); err != nil {
			return preparedCheck{}, err
		}
	}
	if err := n.requirePermission(ctx, t, cl, PermPerformChecks); err != nil {
		return preparedCheck{}, err
	}
	if device != nil {
		// Who vouches for the posture: conditions can require a particular caller.
		device.AssertedBy = cmp.Or(cl.identityID, "operator")
	}
	var p principal
	switch {
	case denied != "":
	case token != "":
		n.judgeToken(&pv, pst)
		if !pv.Active {
			denied = "token inactive: " + string(pv.Reason)
			break
		}
		if p, denied, err = n.principalOf(pv.Claims.Subject, pst); err != nil {
			return preparedCheck{}, err
		}
		// auth_time comes from the same read that proved the session live.
		p.amr, p.authTime = pv.Claims.AMR, pv.AuthTime
		p.session, p.client = pv.Claims.SessionID, pv.Claims.ClientID
	default:
		if p, denied, err = n.principalOf(identityID, pst); err != nil {
			return preparedCheck{}, err
		}
	}
	snap, err := n.policies.snapshot(ctx, t, cons)
	if err != nil {
		return preparedCheck{}, err
	}
	return preparedCheck{tenant: t, snap: snap, principal: p, denied: denied, context: cctx, device: device}, nil
}

func (c *CheckService) Check(ctx context.Context, req *connect.Request[keyplanev1.CheckRequest]) (*connect.Response[keyplanev1.CheckResponse], error) {
	m := req.Msg
	n := c.node
	if err := checkItem(m.Permission, m.Resource); err != nil {
		return nil, err
	}
	ck, err := n.prepareCheck(ctx, req.Header().Get("Authorization"), req.Spec().Procedure, m.TenantId, m.Consistency, m.Context, m.Device, m.GetIdentityId(), m.GetToken())
	if err != nil {
		return nil, err
	}
	t, snap, p, denied, cctx := ck.tenant, ck.snap, ck.principal, ck.denied, ck.context
	out, err := n.checkOne(ctx, t, snap, p, denied, m.Permission, m.Resource, m.ResourceAttributes.AsMap(), cctx, m.Explain, n.origin(req.Peer().Addr, ck.device))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (c *CheckService) CheckBulk(ctx context.Context, req *connect.Request[keyplanev1.CheckBulkRequest]) (*connect.Response[keyplanev1.CheckBulkResponse], error) {
	m := req.Msg
	n := c.node
	if len(m.Items) == 0 || len(m.Items) > maxBulkItems {
		return nil, fieldError("items", fmt.Sprintf("between 1 and %d items, got %d", maxBulkItems, len(m.Items)))
	}
	for i, it := range m.Items {
		if err := checkItem(it.Permission, it.Resource); err != nil {
			var ce *connect.Error
			errors.As(err, &ce)
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("items[%d].%s", i, ce.Message()))
		}
	}
	ck, err := n.prepareCheck(ctx, req.Header().Get("Authorization"), req.Spec().Procedure, m.TenantId, m.Consistency, m.Context, m.Device, m.GetIdentityId(), m.GetToken())
	if err != nil {
		return nil, err
	}
	t, snap, p, denied, cctx := ck.tenant, ck.snap, ck.principal, ck.denied, ck.context
	out := &keyplanev1.CheckBulkResponse{PolicyRevision: snap.Revision()}
	from := n.origin(req.Peer().Addr, ck.device)
	for _, it := range m.Items {
		r, err := n.checkOne(ctx, t, snap, p, denied, it.Permission, it.Resource, it.ResourceAttributes.AsMap(), cctx, m.Explain, from)
		if err != nil {
			return nil, err
		}
		out.Results = append(out.Results, r)
	}
	return connect.NewResponse(out), nil
}

func (c *CheckService) WhoCan(ctx context.Context, req *connect.Request[keyplanev1.WhoCanRequest]) (*connect.Response[keyplanev1.WhoCanResponse], error) {
	m := req.Msg
	n := c.node
	if err := checkItem(m.Permission, m.Resource); err != nil {
		return nil, err
	}
	limit, after, err := holderPage(m.PageSize, m.PageToken)
	if err != nil {
		return nil, err
	}
	t, snap, _, err := n.reviewSnapshot(ctx, req.Header().Get("Authorization"), m.TenantId, m.Consistency, "")
	if err != nil {
		return nil, err
	}
	all := snap.WhoCan(m.Permission, m.Resource, n.now())
	start, _ := slices.BinarySearchFunc(all, after, func(h authz.Holder, k [2]string) int {
		return cmp.Or(cmp.Compare(h.Kind, k[0]), cmp.Compare(h.ID, k[1]))
	})
	if start < len(all) && all[start].Kind == after[0] && all[start].ID == after[1] {
		start++
	}
	out := &keyplanev1.WhoCanResponse{PolicyRevision: snap.Revision()}
	// Check denies disabled and expired identities whatever their bindings: leave them
	// out, reading the identities of one chunk of candidates at a time until the page
	// is full.
	for rest := all[start:]; len(rest) > 0 && len(out.Holders) <= limit; {
		chunk := rest[:min(len(rest), max(limit+1, 100))]
		rest = rest[len(chunk):]
		var ids []string
		for _, h := range chunk {
			if h.Kind == authz.KindIdentity {
				ids = append(ids, h.ID)
			}
		}
		identities, err := n.store.GetIdentities(ctx, t.Scope(), ids)
		if err != nil {
			return nil, err
		}
		for _, h := range chunk {
			if i, ok := identities[h.ID]; h.Kind == authz.KindIdentity && (!ok || n.inactiveReason(i) != "") {
				continue
			}
			out.Holders = append(out.Holders, &keyplanev1.Holder{Kind: h.Kind, Id: h.ID, BindingIds: h.BindingIDs, Conditional: h.Conditional, Via: h.Via})
		}
	}
	if len(out.Holders) > limit {
		out.Holders = out.Holders[:limit]
		last := out.Holders[limit-1]
		out.NextPageToken = last.Kind + "/" + last.Id
	}
	return connect.NewResponse(out), nil
}

// holderPage reads WhoCan's page size and position (the last holder's kind/id, which
// the page-token interceptor has already unsealed).
func holderPage(size int32, token string) (int, [2]string, error) {
	limit := int(size)
	switch {
	case size == 0:
		limit = schema.DefaultPageSize
	case size < 0 || size > schema.MaxPageSize:
		return 0, [2]string{}, fieldError("page_size", fmt.Sprintf("must be between 1 and %d, got %d", schema.MaxPageSize, size))
	}
	if token == "" {
		return limit, [2]string{}, nil
	}
	kind, id, ok := strings.Cut(token, "/")
	if !ok || (kind != authz.KindIdentity && kind != authz.KindGroup) || id == "" {
		return 0, [2]string{}, fieldError("page_token", "not a token returned by this listing")
	}
	return limit, [2]string{kind, id}, nil
}

func (c *CheckService) EffectivePermissions(ctx context.Context, req *connect.Request[keyplanev1.EffectivePermissionsRequest]) (*connect.Response[keyplanev1.EffectivePermissionsResponse], error) {
	m := req.Msg
	n := c.node
	if m.IdentityId == "" {
		return nil, fieldError("identity_id", "required")
	}
	_, snap, i, err := n.reviewSnapshot(ctx, req.Header().Get("Authorization"), m.TenantId, m.Consistency, m.IdentityId)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.EffectivePermissionsResponse{PolicyRevision: snap.Revision(), InactiveReason: n.inactiveReason(i)}
	for _, g := range snap.EffectivePermissions(m.IdentityId, n.now()) {
		out.Grants = append(out.Grants, &keyplanev1.Grant{BindingId: g.BindingID, RoleId: g.RoleID, Permission: g.Permission, Scope: g.Scope,
			Effect: string(g.Effect), Conditional: g.Conditional, ExpireTime: timeToProto(g.ExpiresAt), Via: g.Via})
	}
	return connect.NewResponse(out), nil
}

// reviewSnapshot is what the access-review RPCs share: the consistency option, the
// active tenant, a caller holding iam.access.review, the identity reviewed (when the
// RPC names one: it must exist) and the policy snapshot to answer from.
func (n *Node) reviewSnapshot(ctx context.Context, header, tenantID string, c *keyplanev1.Consistency, identityID string) (schema.Tenant, *authz.Snapshot, schema.Identity, error) {
	var i schema.Identity
	cons, err := consistencyFromProto(c)
	if err != nil {
		return schema.Tenant{}, nil, i, err
	}
	t, err := n.activeTenant(ctx, tenantID)
	if err != nil {
		return t, nil, i, err
	}
	if err := n.authorize(ctx, header, t, PermReviewAccess); err != nil {
		return t, nil, i, err
	}
	if identityID != "" {
		if i, err = n.store.GetIdentity(ctx, t.Scope(), identityID); err != nil {
			return t, nil, i, err
		}
	}
	snap, err := n.policies.snapshot(ctx, t, cons)
	return t, snap, i, err
}
