package region

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/authz"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// Membership rules ("birthright" rules, docs/lifecycle.md): the store applies them in
// the transaction of every identity change and rule change; the node judges their CEL
// conditions (matchRule) and authorizes who may write them (mayTargetGroups).

// matchRule is the store's RuleMatcher: condition judged by the node's rule
// environment over identity i.
func (n *Node) matchRule(condition string, i schema.Identity) (bool, error) {
	return n.ruleEnv.Match(condition, authz.IdentityFacts{ID: i.ID, Kind: i.Kind, DisplayName: i.DisplayName, Email: i.Email,
		Purpose: i.Purpose, Attributes: i.Attributes})
}

// mayTargetGroups authorizes caller c's rule change that makes a rule give groups
// added and stop giving groups removed. A rule hands on what a group grants to
// everyone it matches, now and later, so a tenant identity needs for every added group
// what AddGroupMember needs (mayChangeMembership), and for every removed group what
// RemoveGroupMember needs; and no group whose membership needs a second person's
// approval (a group bound to a privileged role, or to tenant-admin) may be a rule's
// target at all: rules cannot wait for approvals. It returns the revision judged at.
func (n *Node) mayTargetGroups(ctx context.Context, c caller, sc schema.Scope, added, removed []string) (int64, error) {
	if c.operator() {
		return 0, nil
	}
	var judged []int64
	for _, change := range []struct {
		groups []string
		add    bool
	}{{added, true}, {removed, false}} {
		for _, g := range change.groups {
			wait, err := n.groupNeedsApproval(ctx, c, sc, g, change.add)
			if err != nil {
				return 0, err
			}
			if wait {
				return 0, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
					"group_ids: group %s is bound to a privileged role: its members change only through approved change requests, never by a rule", g))
			}
			rev, err := n.mayChangeMembership(ctx, c, sc, g, change.add)
			if err != nil {
				return 0, err
			}
			judged = append(judged, rev)
		}
	}
	if len(judged) == 0 {
		return 0, nil
	}
	if slices.Min(judged) != slices.Max(judged) {
		return 0, connect.NewError(connect.CodeAborted, fmt.Errorf("the tenant's policy changed while this rule change was authorized; retry"))
	}
	return judged[0], nil
}

// guardRuleMemberships returns sc guarded so that a change of an identity by caller c
// (its creation, its attributes, re-enabling it, a SCIM write) that membership rules
// would turn into new group memberships is judged like c adding those members by hand
// (mayTargetGroups): whoever decides an identity's attributes otherwise decides its
// groups. The operator is not judged, and neither is a SCIM client: the directory is
// the source of truth for the attributes rules read (granting iam.scim.provision is
// trusting it with them), and it can give no credential to the Users it provisions.
func (n *Node) guardRuleMemberships(ctx context.Context, c caller, sc schema.Scope) schema.Scope {
	if c.operator() {
		return sc
	}
	return sc.GuardMemberships(func(gctx context.Context, added []schema.Membership) (int64, error) {
		var groups []string
		for _, m := range added {
			if !slices.Contains(groups, m.GroupID) {
				groups = append(groups, m.GroupID)
			}
		}
		judged, err := n.mayTargetGroups(gctx, c, sc, groups, nil)
		var ce *connect.Error
		if errors.As(err, &ce) {
			return 0, connect.NewError(ce.Code(), fmt.Errorf("this change makes the identity a member of groups %v by membership rule, which the caller may not do: %s",
				groups, ce.Message()))
		}
		return judged, err
	})
}

func (a *AdminService) checkRuleCondition(expr string) error {
	if err := a.node.ruleEnv.CheckRuleCondition(expr); err != nil {
		return fieldError("condition", err.Error())
	}
	return nil
}

func (a *AdminService) CreateMembershipRule(ctx context.Context, req *connect.Request[keyplanev1.CreateMembershipRuleRequest]) (*connect.Response[keyplanev1.CreateMembershipRuleResponse], error) {
	m := req.Msg
	if err := a.checkRuleCondition(m.Condition); err != nil {
		return nil, err
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	rule := schema.MembershipRule{Name: m.Name, Description: m.Description, Condition: m.Condition, GroupIDs: m.GroupIds}
	judged, err := a.node.mayTargetGroups(ctx, callerOf(ctx), sc, m.GroupIds, nil)
	if err != nil {
		return nil, err
	}
	r, ch, rev, err := a.node.store.CreateMembershipRule(ctx, change(ctx), sc.JudgedAt(judged), rule)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateMembershipRuleResponse{Rule: ruleToProto(r), MembershipsAdded: membershipsToProto(ch.Added),
		MembershipsRemoved: membershipsToProto(ch.Removed), PolicyRevision: rev}), nil
}

func (a *AdminService) GetMembershipRule(ctx context.Context, req *connect.Request[keyplanev1.GetMembershipRuleRequest]) (*connect.Response[keyplanev1.GetMembershipRuleResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	r, err := a.node.store.GetMembershipRule(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetMembershipRuleResponse{Rule: ruleToProto(r)}), nil
}

func (a *AdminService) ListMembershipRules(ctx context.Context, req *connect.Request[keyplanev1.ListMembershipRulesRequest]) (*connect.Response[keyplanev1.ListMembershipRulesResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	rs, next, err := a.node.store.ListMembershipRules(ctx, sc, schema.Page{Size: int(req.Msg.PageSize), Token: req.Msg.PageToken})
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListMembershipRulesResponse{NextPageToken: next}
	for _, r := range rs {
		out.Rules = append(out.Rules, ruleToProto(r))
	}
	return connect.NewResponse(out), nil
}

func (a *AdminService) UpdateMembershipRule(ctx context.Context, req *connect.Request[keyplanev1.UpdateMembershipRuleRequest]) (*connect.Response[keyplanev1.UpdateMembershipRuleResponse], error) {
	m := req.Msg
	if m.Condition != nil {
		if err := a.checkRuleCondition(*m.Condition); err != nil {
			return nil, err
		}
	}
	if !m.SetGroupIds && len(m.GroupIds) > 0 {
		return nil, fieldError("set_group_ids", "must be true to replace the groups with group_ids")
	}
	sc, err := a.scope(ctx, m.TenantId)
	if err != nil {
		return nil, err
	}
	before, err := a.node.store.GetMembershipRule(ctx, sc, m.Id)
	if err != nil {
		return nil, err
	}
	u := schema.MembershipRuleUpdate{Name: m.Name, Description: m.Description, Condition: m.Condition}
	// A changed condition may give any of the rule's groups to new identities and take
	// them from others: judged as if every group were added and removed.
	added, removed := before.GroupIDs, before.GroupIDs
	if m.SetGroupIds {
		u.GroupIDs = m.GroupIds
		if u.GroupIDs == nil {
			u.GroupIDs = []string{} // refused by the store, naming group_ids
		}
		if m.Condition == nil {
			added = without(m.GroupIds, before.GroupIDs)
			removed = without(before.GroupIDs, m.GroupIds)
		} else {
			added, removed = m.GroupIds, before.GroupIDs
		}
	} else if m.Condition == nil {
		added, removed = nil, nil
	}
	judged, err := a.node.mayTargetGroups(ctx, callerOf(ctx), sc, added, removed)
	if err != nil {
		return nil, err
	}
	r, ch, rev, err := a.node.store.UpdateMembershipRule(ctx, change(ctx), sc.JudgedAt(judged), m.Id, u)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.UpdateMembershipRuleResponse{Rule: ruleToProto(r), MembershipsAdded: membershipsToProto(ch.Added),
		MembershipsRemoved: membershipsToProto(ch.Removed), PolicyRevision: rev}), nil
}

func (a *AdminService) DeleteMembershipRule(ctx context.Context, req *connect.Request[keyplanev1.DeleteMembershipRuleRequest]) (*connect.Response[keyplanev1.DeleteMembershipRuleResponse], error) {
	sc, err := a.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	before, err := a.node.store.GetMembershipRule(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	judged, err := a.node.mayTargetGroups(ctx, callerOf(ctx), sc, nil, before.GroupIDs)
	if err != nil {
		return nil, err
	}
	ch, rev, err := a.node.store.DeleteMembershipRule(ctx, change(ctx), sc.JudgedAt(judged), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteMembershipRuleResponse{MembershipsRemoved: membershipsToProto(ch.Removed), PolicyRevision: rev}), nil
}

// without returns the elements of a not in b.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func ruleToProto(r schema.MembershipRule) *keyplanev1.MembershipRule {
	return &keyplanev1.MembershipRule{Id: r.ID, Name: r.Name, Description: r.Description, Condition: r.Condition, GroupIds: r.GroupIDs,
		CreateTime: timeToProto(r.CreatedAt), UpdateTime: timeToProto(r.UpdatedAt)}
}

func membershipsToProto(ms []schema.Membership) []*keyplanev1.Membership {
	out := make([]*keyplanev1.Membership, len(ms))
	for i, m := range ms {
		out[i] = &keyplanev1.Membership{IdentityId: m.IdentityID, GroupId: m.GroupID}
	}
	return out
}
