package region

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Governance permissions (docs/governance.md), held on resource "tenant".
const (
	// PermGovernanceRead lets the holder read the NHI inventory, least privilege and
	// the governance policy (GovernanceService).
	PermGovernanceRead = "iam.governance.read"
	// PermGovernanceWrite lets the holder change the tenant's governance policy.
	PermGovernanceWrite = "iam.governance.write"
)

// GovernanceService implements keyplane.v1.GovernanceService. The authority
// interceptor has checked its permission on the tenant before a handler runs.
type GovernanceService struct {
	node *Node
}

var _ keyplanev1connect.GovernanceServiceHandler = (*GovernanceService)(nil)

// maxInventoryReads bounds the store pages one filtered ListInventory call reads.
const maxInventoryReads = 10

// findingNames are the findings' names in docs and the CLI.
var findingNames = map[keyplanev1.RiskFinding]string{
	keyplanev1.RiskFinding_RISK_FINDING_ORPHANED:         "orphaned",
	keyplanev1.RiskFinding_RISK_FINDING_EXPIRED:          "expired",
	keyplanev1.RiskFinding_RISK_FINDING_EXPIRING:         "expiring",
	keyplanev1.RiskFinding_RISK_FINDING_ROTATION_OVERDUE: "rotation_overdue",
	keyplanev1.RiskFinding_RISK_FINDING_UNUSED:           "unused",
	keyplanev1.RiskFinding_RISK_FINDING_STATIC_SECRET:    "static_secret",
	keyplanev1.RiskFinding_RISK_FINDING_OVER_PRIVILEGED:  "over_privileged",
}

// FindingName is a finding's short name ("orphaned", …), "" for an unknown one.
func FindingName(f keyplanev1.RiskFinding) string { return findingNames[f] }

// ParseFinding is the finding named name (short, "orphaned", or the enum's name,
// "RISK_FINDING_ORPHANED").
func ParseFinding(name string) (keyplanev1.RiskFinding, bool) {
	for f, n := range findingNames {
		if n == name || keyplanev1.RiskFinding_name[int32(f)] == name {
			return f, true
		}
	}
	return 0, false
}

func (s *GovernanceService) ListInventory(ctx context.Context, req *connect.Request[keyplanev1.ListInventoryRequest]) (*connect.Response[keyplanev1.ListInventoryResponse], error) {
	m := req.Msg
	n := s.node
	f := schema.InventoryFilter{OwnerID: m.OwnerId}
	if m.Kind != keyplanev1.IdentityKind_IDENTITY_KIND_UNSPECIFIED {
		k, err := kindFromProto(m.Kind)
		if err != nil {
			return nil, err
		}
		f.Kind = k
	}
	var finding keyplanev1.RiskFinding
	if m.Finding != "" {
		var ok bool
		if finding, ok = ParseFinding(m.Finding); !ok {
			return nil, fieldError("finding", fmt.Sprintf("unknown finding %q: one of orphaned, expired, expiring, rotation_overdue, unused, static_secret, over_privileged", m.Finding))
		}
	}
	t, err := n.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	sc := t.Scope()
	pol, err := n.store.GetGovernancePolicy(ctx, sc)
	if err != nil {
		return nil, err
	}
	snap, err := n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return nil, err
	}
	size := int(m.PageSize)
	if size == 0 {
		size = schema.DefaultPageSize
	}
	out := &keyplanev1.ListInventoryResponse{Policy: governancePolicyToProto(pol)}
	page := schema.Page{Size: int(m.PageSize), Token: m.PageToken}
	for reads := 0; ; reads++ {
		inv, err := n.store.ListInventory(ctx, sc, f, page)
		if err != nil {
			return nil, err
		}
		out.EvaluateTime = timestamppb.New(inv.Now)
		entries, err := n.judgeInventory(ctx, t, pol, snap, inv)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if finding == keyplanev1.RiskFinding_RISK_FINDING_UNSPECIFIED || slices.Contains(e.Findings, finding) {
				out.Entries = append(out.Entries, e)
			}
		}
		out.NextPageToken = inv.Next
		if inv.Next == "" || len(out.Entries) >= size || reads+1 >= maxInventoryReads {
			break
		}
		// The next read asks for no more than the page has room for, so a page never
		// holds more than page_size entries and the token resumes right after it.
		page = schema.Page{Size: size - len(out.Entries), Token: inv.Next}
	}
	return connect.NewResponse(out), nil
}

// judgeInventory turns a page of the store's inventory into entries with their
// permissions, use and findings, judged at the database's clock inv.Now.
func (n *Node) judgeInventory(ctx context.Context, t schema.Tenant, pol schema.GovernancePolicy, snap *authz.Snapshot, inv schema.Inventory) ([]*keyplanev1.InventoryEntry, error) {
	sc, now := t.Scope(), inv.Now
	ids := make([]string, len(inv.Entries))
	for k, e := range inv.Entries {
		ids[k] = e.Identity.ID
	}
	horizon := now.Add(-t.DecisionRetention)
	usage, err := n.store.GrantUsageOf(ctx, sc, ids, later(now.AddDate(0, 0, -pol.LeastPrivilegeDays), horizon))
	if err != nil {
		return nil, err
	}
	lastDecision, err := n.store.LastDecisions(ctx, sc, ids, horizon)
	if err != nil {
		return nil, err
	}
	out := make([]*keyplanev1.InventoryEntry, 0, len(inv.Entries))
	for _, e := range inv.Entries {
		i := e.Identity
		grants := snap.EffectivePermissions(i.ID, now)
		lp := leastPrivilegeOf(grants, usage[i.ID])
		pe := &keyplanev1.InventoryEntry{IdentityId: i.ID, Kind: kindToProto(i.Kind), DisplayName: i.DisplayName, Status: statusToProto(i.Status),
			Purpose: i.Purpose, OwnerId: i.OwnerID, OwnerState: ownerStateToProto(e.OwnerState), CreateTime: timeToProto(i.CreatedAt),
			ExpireTime: timeToProto(i.ExpiresAt), RiskTier: tierToProto(e.RiskTier), RiskTierSource: e.TierSource, Federated: e.Federated,
			LeastPrivilegeRatio: lp.ratio()}
		for _, g := range grants {
			pe.Permissions = append(pe.Permissions, grantToProto(g))
		}
		lastUse := lastDecision[i.ID]
		var oldest time.Time
		rotationOverdue, staticSecret := false, false
		for _, c := range e.Credentials {
			if !slices.Contains(pe.CredentialKinds, c.Kind) {
				pe.CredentialKinds = append(pe.CredentialKinds, c.Kind)
			}
			lastUse = later(lastUse, c.LastUsedAt)
			ic := &keyplanev1.InventoryCredential{Id: c.ID, Kind: c.Kind, KeyId: c.KeyID, Name: c.Name, CreateTime: timeToProto(c.CreatedAt),
				ExpireTime: timeToProto(c.ExpiresAt), LastUsedTime: timeToProto(c.LastUsedAt), RotateTime: timeToProto(c.RotatedAt),
				Age: durationpb.New(now.Sub(c.CreatedAt))}
			if isStaticSecret(c.Kind) {
				deadline := c.CreatedAt.AddDate(0, 0, pol.RotationDays(e.RiskTier == schema.TierHigh))
				ic.RotationDeadline = timestamppb.New(deadline)
				if c.Usable(now) {
					if oldest.IsZero() || c.CreatedAt.Before(oldest) {
						oldest = c.CreatedAt
					}
					staticSecret = true
					if c.RotatedAt.IsZero() && !now.Before(deadline) {
						rotationOverdue = true
					}
				}
			}
			pe.Credentials = append(pe.Credentials, ic)
		}
		slices.Sort(pe.CredentialKinds)
		if !oldest.IsZero() {
			pe.OldestSecretAge = durationpb.New(now.Sub(oldest))
		}
		pe.LastUseTime = timeToProto(lastUse)
		unusedSince := now.AddDate(0, 0, -pol.UnusedDays)
		expired := !i.ExpiresAt.IsZero() && !now.Before(i.ExpiresAt)
		for _, f := range []struct {
			finding keyplanev1.RiskFinding
			holds   bool
		}{
			{keyplanev1.RiskFinding_RISK_FINDING_ORPHANED, e.OwnerState != schema.OwnerActive},
			{keyplanev1.RiskFinding_RISK_FINDING_EXPIRED, expired},
			{keyplanev1.RiskFinding_RISK_FINDING_EXPIRING, !expired && !i.ExpiresAt.IsZero() && !i.ExpiresAt.After(now.AddDate(0, 0, pol.ExpiringDays))},
			{keyplanev1.RiskFinding_RISK_FINDING_ROTATION_OVERDUE, rotationOverdue},
			{keyplanev1.RiskFinding_RISK_FINDING_UNUSED, i.CreatedAt.Before(unusedSince) && lastUse.Before(unusedSince)},
			{keyplanev1.RiskFinding_RISK_FINDING_STATIC_SECRET, staticSecret && (i.Kind == schema.KindWorkload || e.Federated)},
			{keyplanev1.RiskFinding_RISK_FINDING_OVER_PRIVILEGED, lp.granted > 0 && lp.used*100 < lp.granted*pol.MinLeastPrivilegePercent},
		} {
			if f.holds {
				pe.Findings = append(pe.Findings, f.finding)
			}
		}
		out = append(out, pe)
	}
	return out, nil
}

func isStaticSecret(kind string) bool {
	return kind == schema.CredAPIKey || kind == schema.CredClientSecret
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// leastPrivilege is the comparison of an identity's allow grants with its uses.
type leastPrivilege struct {
	granted, used int
	grants        []*keyplanev1.GrantUse
	bindings      []*keyplanev1.BindingLastUse
	suggestions   []*keyplanev1.RemovalSuggestion
}

// ratio is used / granted, 1 when nothing is granted (nothing to trim).
func (lp leastPrivilege) ratio() float64 {
	if lp.granted == 0 {
		return 1
	}
	return float64(lp.used) / float64(lp.granted)
}

// leastPrivilegeOf matches grants (EffectivePermissions) with uses (the decision
// log's allowed decisions by binding and permission): an allow grant is used when a
// decision through its binding allowed a permission its pattern matches.
func leastPrivilegeOf(grants []authz.Grant, uses []schema.BindingUse) leastPrivilege {
	var lp leastPrivilege
	seen := map[string]bool{}
	for _, g := range grants {
		if !seen[g.BindingID] {
			seen[g.BindingID] = true
			b := &keyplanev1.BindingLastUse{BindingId: g.BindingID, RoleId: g.RoleID, Scope: g.Scope, Via: g.Via}
			var last time.Time
			for _, u := range uses {
				if u.BindingID == g.BindingID {
					last = later(last, u.LastUsed)
				}
			}
			b.LastUsedTime = timeToProto(last)
			lp.bindings = append(lp.bindings, b)
		}
		if g.Effect != authz.Allow {
			continue
		}
		lp.granted++
		gu := &keyplanev1.GrantUse{Grant: grantToProto(g)}
		var last time.Time
		for _, u := range uses {
			if u.BindingID == g.BindingID && authz.MatchPermission(g.Permission, u.Permission) {
				last = later(last, u.LastUsed)
				gu.Decisions += int64(u.Count)
				if !slices.Contains(gu.UsedPermissions, u.Permission) {
					gu.UsedPermissions = append(gu.UsedPermissions, u.Permission)
				}
			}
		}
		slices.Sort(gu.UsedPermissions)
		gu.Used = gu.Decisions > 0
		gu.LastUsedTime = timeToProto(last)
		if gu.Used {
			lp.used++
		} else {
			lp.suggestions = append(lp.suggestions, &keyplanev1.RemovalSuggestion{BindingId: g.BindingID, RoleId: g.RoleID, Permission: g.Permission,
				Scope: g.Scope, Via: g.Via, Reason: "no allowed decision used it in the window"})
		}
		lp.grants = append(lp.grants, gu)
	}
	slices.SortFunc(lp.bindings, func(a, b *keyplanev1.BindingLastUse) int { return cmp.Compare(a.BindingId, b.BindingId) })
	return lp
}

func grantToProto(g authz.Grant) *keyplanev1.Grant {
	return &keyplanev1.Grant{BindingId: g.BindingID, RoleId: g.RoleID, Permission: g.Permission, Scope: g.Scope,
		Effect: string(g.Effect), Conditional: g.Conditional, ExpireTime: timeToProto(g.ExpiresAt), Via: g.Via}
}

func (s *GovernanceService) GetLeastPrivilege(ctx context.Context, req *connect.Request[keyplanev1.GetLeastPrivilegeRequest]) (*connect.Response[keyplanev1.GetLeastPrivilegeResponse], error) {
	m := req.Msg
	n := s.node
	if m.IdentityId == "" {
		return nil, fieldError("identity_id", "required")
	}
	if m.Days < 0 || m.Days > schema.MaxGovernanceDays {
		return nil, fieldError("days", fmt.Sprintf("must be between 1 and %d (0: the policy's least_privilege_days), got %d", schema.MaxGovernanceDays, m.Days))
	}
	t, err := n.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	sc := t.Scope()
	days := int(m.Days)
	if days == 0 {
		pol, err := n.store.GetGovernancePolicy(ctx, sc)
		if err != nil {
			return nil, err
		}
		days = pol.LeastPrivilegeDays
	}
	now, err := n.store.DatabaseNow(ctx)
	if err != nil {
		return nil, err
	}
	start := later(now.AddDate(0, 0, -days), now.Add(-t.DecisionRetention))
	uses, err := n.store.GrantUsage(ctx, sc, m.IdentityId, start)
	if err != nil {
		return nil, err
	}
	if _, err := n.store.GetIdentity(ctx, sc, m.IdentityId); err != nil {
		return nil, err
	}
	snap, err := n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return nil, err
	}
	lp := leastPrivilegeOf(snap.EffectivePermissions(m.IdentityId, now), uses)
	return connect.NewResponse(&keyplanev1.GetLeastPrivilegeResponse{IdentityId: m.IdentityId, WindowStart: timestamppb.New(start),
		Granted: int32(lp.granted), Used: int32(lp.used), LeastPrivilegeRatio: lp.ratio(), Grants: lp.grants, Bindings: lp.bindings,
		Suggestions: lp.suggestions, PolicyRevision: snap.Revision()}), nil
}

func (s *GovernanceService) GetGovernancePolicy(ctx context.Context, req *connect.Request[keyplanev1.GetGovernancePolicyRequest]) (*connect.Response[keyplanev1.GetGovernancePolicyResponse], error) {
	t, err := s.node.activeTenant(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	p, err := s.node.store.GetGovernancePolicy(ctx, t.Scope())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetGovernancePolicyResponse{Policy: governancePolicyToProto(p)}), nil
}

func (s *GovernanceService) UpdateGovernancePolicy(ctx context.Context, req *connect.Request[keyplanev1.UpdateGovernancePolicyRequest]) (*connect.Response[keyplanev1.UpdateGovernancePolicyResponse], error) {
	m := req.Msg
	t, err := s.node.activeTenant(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	sc := t.Scope()
	p, err := s.node.store.GetGovernancePolicy(ctx, sc)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		v    *int32
		into *int
	}{{m.ExpiringDays, &p.ExpiringDays}, {m.UnusedDays, &p.UnusedDays}, {m.RotationDaysHigh, &p.RotationDaysHigh},
		{m.RotationDaysNormal, &p.RotationDaysNormal}, {m.RotationNoticeDays, &p.RotationNoticeDays}, {m.LeastPrivilegeDays, &p.LeastPrivilegeDays},
		{m.MinLeastPrivilegePercent, &p.MinLeastPrivilegePercent}} {
		if f.v != nil {
			*f.into = int(*f.v)
		}
	}
	out, err := s.node.store.UpdateGovernancePolicy(ctx, change(ctx), sc, p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateGovernancePolicyResponse{Policy: governancePolicyToProto(out)}), nil
}

func governancePolicyToProto(p schema.GovernancePolicy) *keyplanev1.GovernancePolicy {
	return &keyplanev1.GovernancePolicy{ExpiringDays: int32(p.ExpiringDays), UnusedDays: int32(p.UnusedDays), RotationDaysHigh: int32(p.RotationDaysHigh),
		RotationDaysNormal: int32(p.RotationDaysNormal), RotationNoticeDays: int32(p.RotationNoticeDays), LeastPrivilegeDays: int32(p.LeastPrivilegeDays),
		MinLeastPrivilegePercent: int32(p.MinLeastPrivilegePercent), UpdateTime: timeToProto(p.UpdatedAt)}
}

func ownerStateToProto(s string) keyplanev1.OwnerState {
	switch s {
	case schema.OwnerActive:
		return keyplanev1.OwnerState_OWNER_STATE_ACTIVE
	case schema.OwnerDisabled:
		return keyplanev1.OwnerState_OWNER_STATE_DISABLED
	case schema.OwnerFrozen:
		return keyplanev1.OwnerState_OWNER_STATE_FROZEN
	case schema.OwnerOffboarded:
		return keyplanev1.OwnerState_OWNER_STATE_OFFBOARDED
	case schema.OwnerErased:
		return keyplanev1.OwnerState_OWNER_STATE_ERASED
	case schema.OwnerExpired:
		return keyplanev1.OwnerState_OWNER_STATE_EXPIRED
	case schema.OwnerMissing:
		return keyplanev1.OwnerState_OWNER_STATE_MISSING
	}
	return keyplanev1.OwnerState_OWNER_STATE_UNSPECIFIED
}

func tierToProto(s string) keyplanev1.RiskTier {
	if s == schema.TierHigh {
		return keyplanev1.RiskTier_RISK_TIER_HIGH
	}
	return keyplanev1.RiskTier_RISK_TIER_NORMAL
}
