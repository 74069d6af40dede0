package region

import (
	"context"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Offboarding and erasure (issue 15, items 3 to 5): docs/lifecycle.md and
// docs/decisions/0012-offboarding-and-erasure.md.
const (
	// PermIdentitiesOffboard lets the holder offboard identities (OffboardIdentity).
	PermIdentitiesOffboard = "iam.identities.offboard"
	// PermIdentitiesErase lets the holder erase the personal data of offboarded
	// identities (EraseIdentity).
	PermIdentitiesErase = "iam.identities.erase"
)

// eventTimeSkew is how far in the future a caller's event_time may lie (clocks
// differ); further is refused.
const eventTimeSkew = time.Minute

func (a *AdminService) OffboardIdentity(ctx context.Context, req *connect.Request[keyplanev1.OffboardIdentityRequest]) (*connect.Response[keyplanev1.OffboardIdentityResponse], error) {
	received := a.node.now()
	m := req.Msg
	if m.IdentityId == "" {
		return nil, fieldError("identity_id", "required")
	}
	start, err := timeFromProto("event_time", m.EventTime)
	if err != nil {
		return nil, err
	}
	if start.After(received.Add(eventTimeSkew)) {
		return nil, fieldError("event_time", "in the future")
	}
	if start.IsZero() {
		start = received
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	out, err := a.node.offboard(ctx, change(ctx), sc, m.IdentityId, m.Reason, start, "api")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.OffboardIdentityResponse{Identity: identityToProto(out.Identity),
		Report: offboardReportToProto(out.Report), AlreadyOffboarded: out.AlreadyOffboarded, PolicyRevision: out.Revision}), nil
}

// offboard offboards identity id of sc (schema.Store.OffboardIdentity) and, when it
// was not offboarded before, records the deprovisioning latency from start (the
// leaver's event) to the commit, labelled with source ("api"; SCIM deprovisioning
// passes its own). Every caller that offboards goes through here.
func (n *Node) offboard(ctx context.Context, c schema.Change, sc schema.Scope, id, reason string, start time.Time, source string) (schema.Offboarding, error) {
	out, err := n.store.OffboardIdentity(ctx, c, sc, id, reason)
	if err != nil {
		return out, err
	}
	n.deprovisioned(&out, start, source)
	return out, nil
}

// deprovisioned records a committed offboarding (nil: none happened) in
// keyplane_deprovision_seconds{source}, measured from start: from here on every token
// and credential of the leaver is inactive. A repeat offboarding is not counted.
func (n *Node) deprovisioned(o *schema.Offboarding, start time.Time, source string) {
	if o != nil && !o.AlreadyOffboarded {
		n.metrics.deprovision.WithLabelValues(source).Observe(max(n.now().Sub(start), 0).Seconds())
	}
}

func (a *AdminService) EraseIdentity(ctx context.Context, req *connect.Request[keyplanev1.EraseIdentityRequest]) (*connect.Response[keyplanev1.EraseIdentityResponse], error) {
	if req.Msg.IdentityId == "" {
		return nil, fieldError("identity_id", "required")
	}
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	out, err := a.node.store.EraseIdentity(ctx, change(ctx), sc, req.Msg.IdentityId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.EraseIdentityResponse{Identity: identityToProto(out.Identity), AlreadyErased: out.AlreadyErased,
		AuditEventsRedacted: int32(out.AuditEventsRedacted)}), nil
}

func offboardReportToProto(r schema.OffboardReport) *keyplanev1.OffboardReport {
	out := &keyplanev1.OffboardReport{GroupsLeft: r.GroupIDs, SessionsRevoked: int32(r.Sessions), ElevationsEnded: r.EndedElevations,
		ElevationsDenied: r.DeniedElevations, ChangeRequestsDenied: r.DeniedChangeRequests}
	for _, b := range r.Bindings {
		effect := keyplanev1.Effect_EFFECT_ALLOW
		if b.Effect == "deny" {
			effect = keyplanev1.Effect_EFFECT_DENY
		}
		out.BindingsRemoved = append(out.BindingsRemoved, &keyplanev1.OffboardedBinding{BindingId: b.ID, RoleId: b.RoleID, Scope: b.Scope, Effect: effect})
	}
	for _, c := range r.Credentials {
		out.CredentialsRevoked = append(out.CredentialsRevoked, &keyplanev1.OffboardedCredential{CredentialId: c.ID, IdentityId: c.IdentityID,
			Kind: credentialKinds[c.Kind]})
	}
	for _, h := range r.HandedOver {
		out.HandedOver = append(out.HandedOver, &keyplanev1.OwnedIdentity{IdentityId: h.IdentityID, NewOwnerId: h.NewOwnerID,
			Status: statusToProto(h.Status)})
	}
	for _, o := range r.Orphaned {
		out.Orphaned = append(out.Orphaned, &keyplanev1.OwnedIdentity{IdentityId: o.IdentityID, Status: statusToProto(o.Status)})
	}
	return out
}
