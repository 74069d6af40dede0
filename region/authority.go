package region

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// Permissions keyplane checks on its own tenant-scoped APIs (issue 13). They are
// ordinary permissions of the tenant's policy: a role granting them, bound to an
// identity, lets that identity's access tokens make the calls. The built-in roles
// (schema.BuiltinRoles) bundle them. docs/administration.md has the table.
const (
	PermIdentitiesCreate  = "iam.identities.create"
	PermIdentitiesRead    = "iam.identities.read"
	PermIdentitiesUpdate  = "iam.identities.update"
	PermIdentitiesDisable = "iam.identities.disable"
	// PermCredentialsManage, held on resource identities/<id> (a binding on scope "*",
	// "identities/" or the one identity), lets the holder create, rotate and revoke
	// that identity's credentials and set its password.
	PermCredentialsManage = "iam.credentials.manage"
	// PermCredentialsManageOwned is PermCredentialsManage limited to the non-human
	// identities whose owner_id is the holder (the built-in role nhi-owner).
	PermCredentialsManageOwned = "iam.credentials.manage_owned"
	PermCredentialsRead        = "iam.credentials.read"
	PermSessionsRead           = "iam.sessions.read"
	// PermSessionsRevoke lets the holder revoke other identities' sessions and tokens;
	// every identity may revoke its own.
	PermSessionsRevoke = "iam.sessions.revoke"
	PermRolesWrite     = "iam.roles.write"
	PermRolesRead      = "iam.roles.read"
	PermGroupsWrite    = "iam.groups.write"
	PermGroupsRead     = "iam.groups.read"
	// PermBindingsWrite, held on a scope, lets the holder create and delete bindings on
	// that scope (and narrower ones) of roles whose every permission it holds there.
	PermBindingsWrite = "iam.bindings.write"
	PermBindingsRead  = "iam.bindings.read"
	PermAuditRead     = "iam.audit.read"
)

// plane is the kind of authority a procedure needs.
type plane int

const (
	// planePublic: no caller credentials; the request authenticates itself (an API
	// key, a password, a refresh token, the token being validated or revoked).
	planePublic plane = iota
	// planeCluster: the operator secret only (tenants, regions, rehoming).
	planeCluster
	// planeTenant: a tenant identity's access token, or the operator secret as
	// break-glass (Config.NoBreakGlass refuses it).
	planeTenant
)

// target is where a tenant-plane procedure's permission is checked, and by whom.
type target int

const (
	// onTenant: perm on resource "tenant", checked by the authority interceptor
	// before the handler runs.
	onTenant target = iota
	// onScope: perm on the scope the request names or the binding it deletes has,
	// plus the no-escalation rule; checked by the handler (admin_policy.go).
	onScope
	// onIdentity: perm (or PermCredentialsManageOwned) on resource identities/<id> of
	// the identity whose credential the call touches, plus, when it mints one, the
	// no-escalation rule; checked by the handler (admin_credentials.go).
	onIdentity
	// inHandler: perm on resource "tenant", checked by the handler itself, which has
	// done so since before issue 13 (checks, access reviews, elevation decisions).
	inHandler
	// self: an identity acting on itself needs no permission; acting on another
	// identity needs perm (when perm is set; otherwise it is refused). Checked by the
	// handler.
	self
)

// authority says who may call one procedure.
type authority struct {
	plane plane
	perm  string
	on    target
	// sensitive marks a procedure a human may call only with a recent second factor
	// (requireStepUp): binding roles and adding group members, minting, rotating or
	// revoking credentials of another identity (revoking a TOTP resets MFA), setting
	// passwords, widening a client's allow-lists, approving elevations and change
	// requests.
	sensitive bool
	// deferred leaves authentication to the handler, which reads the caller's token
	// state in the same decision read as the rest of its decision (prepareCheck); the
	// handler must call verifyCaller. Only for inHandler procedures.
	deferred bool
}

func procedure(service, method string) string { return "/" + service + "/" + method }

// authorities maps every Connect procedure of keyplane to the authority it needs. A
// procedure missing here is refused (TestAuthorityTableCoversEveryProcedure keeps it
// complete). docs/administration.md renders it.
var authorities = func() map[string]authority {
	admin := func(m string) string { return procedure(keyplanev1connect.AdminServiceName, m) }
	auth := func(m string) string { return procedure(keyplanev1connect.AuthServiceName, m) }
	check := func(m string) string { return procedure(keyplanev1connect.CheckServiceName, m) }
	elev := func(m string) string { return procedure(keyplanev1connect.ElevationServiceName, m) }
	decision := func(m string) string { return procedure(keyplanev1connect.DecisionServiceName, m) }
	federation := func(m string) string { return procedure(keyplanev1connect.FederationServiceName, m) }
	upstream := func(m string) string { return procedure(keyplanev1connect.UpstreamServiceName, m) }
	samlSvc := func(m string) string { return procedure(keyplanev1connect.SAMLServiceName, m) }
	governance := func(m string) string { return procedure(keyplanev1connect.GovernanceServiceName, m) }
	review := func(m string) string { return procedure(keyplanev1connect.ReviewServiceName, m) }
	analyticsSvc := func(m string) string { return procedure(keyplanev1connect.AnalyticsServiceName, m) }
	cluster := authority{plane: planeCluster}
	public := authority{plane: planePublic}
	tenant := func(perm string, on target, sensitive bool) authority {
		return authority{plane: planeTenant, perm: perm, on: on, sensitive: sensitive}
	}
	deferred := func(a authority) authority {
		a.deferred = true
		return a
	}
	return map[string]authority{
		admin("ListRegions"):     cluster,
		admin("CreateTenant"):    cluster,
		admin("GetTenant"):       cluster,
		admin("ListTenants"):     cluster,
		admin("UpdateTenant"):    cluster,
		admin("DisableTenant"):   cluster,
		admin("EnableTenant"):    cluster,
		admin("RehomeTenant"):    cluster,
		admin("SetTenantLimits"): cluster,

		admin("CreateIdentity"):     tenant(PermIdentitiesCreate, onTenant, false),
		admin("GetIdentity"):        tenant(PermIdentitiesRead, onTenant, false),
		admin("ListIdentities"):     tenant(PermIdentitiesRead, onTenant, false),
		admin("UpdateIdentity"):     tenant(PermIdentitiesUpdate, onTenant, false),
		admin("DisableIdentity"):    tenant(PermIdentitiesDisable, onTenant, false),
		admin("EnableIdentity"):     tenant(PermIdentitiesDisable, onTenant, false),
		admin("OffboardIdentity"):   tenant(PermIdentitiesOffboard, onTenant, true), // removes every way in at once: step-up
		admin("EraseIdentity"):      tenant(PermIdentitiesErase, onTenant, true),    // removes personal data for good: step-up
		admin("CreateAPIKey"):       tenant(PermCredentialsManage, onIdentity, true),
		admin("RotateAPIKey"):       tenant(PermCredentialsManage, onIdentity, true),
		admin("CreateClient"):       tenant(PermCredentialsManage, onIdentity, true),
		admin("UpdateClient"):       tenant(PermCredentialsManage, onIdentity, true),
		admin("RotateClientSecret"): tenant(PermCredentialsManage, onIdentity, true),
		admin("RevokeCredential"):   tenant(PermCredentialsManage, onIdentity, true),
		admin("SetPassword"):        tenant(PermCredentialsManage, onIdentity, true),
		admin("ListCredentials"):    tenant(PermCredentialsRead, onTenant, false),
		admin("ListSessions"):       tenant(PermSessionsRead, onTenant, false),
		admin("CreateRole"):         tenant(PermRolesWrite, onTenant, false),
		admin("GetRole"):            tenant(PermRolesRead, onTenant, false),
		admin("ListRoles"):          tenant(PermRolesRead, onTenant, false),
		// UpdateRole changes what every principal bound to the role holds, like a
		// binding: a human steps up, and the handler applies the no-escalation rule on
		// the role's bound scopes (mayUpdateRole). A cascading DeleteRole or
		// DeleteGroup deletes bindings: the handler checks each like DeleteBinding.
		admin("UpdateRole"):        tenant(PermRolesWrite, onTenant, true),
		admin("DeleteRole"):        tenant(PermRolesWrite, onTenant, false),
		admin("CreateGroup"):       tenant(PermGroupsWrite, onTenant, false),
		admin("GetGroup"):          tenant(PermGroupsRead, onTenant, false),
		admin("ListGroups"):        tenant(PermGroupsRead, onTenant, false),
		admin("ListGroupMembers"):  tenant(PermGroupsRead, onTenant, false),
		admin("UpdateGroup"):       tenant(PermGroupsWrite, onTenant, false),
		admin("DeleteGroup"):       tenant(PermGroupsWrite, onTenant, false),
		admin("AddGroupMember"):    tenant(PermGroupsWrite, onScope, true),
		admin("RemoveGroupMember"): tenant(PermGroupsWrite, onScope, false),
		admin("CreateBinding"):     tenant(PermBindingsWrite, onScope, true),
		admin("DeleteBinding"):     tenant(PermBindingsWrite, onScope, false),
		admin("ListBindings"):      tenant(PermBindingsRead, onTenant, false),
		admin("ListAuditEvents"):   tenant(PermAuditRead, onTenant, false),
		// Two-person change control: approving applies a privileged change, so a
		// human approver steps up; the approver must also pass the no-escalation
		// rule for the change (checked by the handler).
		admin("GetChangeRequest"):     tenant(PermChangesApprove, onTenant, false),
		admin("ListChangeRequests"):   tenant(PermChangesApprove, onTenant, false),
		admin("ApproveChangeRequest"): tenant(PermChangesApprove, onTenant, true),
		admin("DenyChangeRequest"):    tenant(PermChangesApprove, onTenant, false),
		// A rule adds and removes members for ever after: the handler also judges
		// every group it targets as AddGroupMember would (mayTargetGroups).
		admin("CreateMembershipRule"): tenant(PermGroupsWrite, onTenant, true),
		admin("UpdateMembershipRule"): tenant(PermGroupsWrite, onTenant, true),
		admin("DeleteMembershipRule"): tenant(PermGroupsWrite, onTenant, false),
		admin("GetMembershipRule"):    tenant(PermGroupsRead, onTenant, false),
		admin("ListMembershipRules"):  tenant(PermGroupsRead, onTenant, false),

		auth("ExchangeAPIKey"): public,
		auth("Login"):          public,
		auth("Refresh"):        public,
		auth("ValidateToken"):  public,
		auth("RevokeToken"):    public,
		// Enrolling one's first factor cannot require it: these need a recent login
		// (requireRecentAuth), not a second factor.
		auth("EnrollTOTP"):           tenant("", self, false),
		auth("ConfirmTOTP"):          tenant("", self, false),
		auth("RevokeSession"):        tenant(PermSessionsRevoke, self, false),
		auth("RevokeIdentityTokens"): tenant(PermSessionsRevoke, self, false),

		check("Check"):                deferred(tenant(PermPerformChecks, inHandler, false)),
		check("CheckBulk"):            deferred(tenant(PermPerformChecks, inHandler, false)),
		check("WhoCan"):               tenant(PermReviewAccess, inHandler, false),
		check("EffectivePermissions"): tenant(PermReviewAccess, inHandler, false),
		elev("RequestElevation"):      tenant("", self, false),
		elev("ApproveElevation"):      tenant(PermApproveElevations, inHandler, true),
		elev("DenyElevation"):         tenant(PermApproveElevations, inHandler, false),
		elev("EndElevation"):          tenant("", self, false),
		elev("GetElevation"):          tenant(PermApproveElevations, self, false),
		elev("ListElevations"):        tenant(PermApproveElevations, self, false),
		decision("GetDecision"):       tenant(PermDecisionsRead, onTenant, false),
		decision("ListDecisions"):     tenant(PermDecisionsRead, onTenant, false),
		// A trust policy is a way to get its identity's tokens: writes step up, and the
		// handler also requires what minting a credential for the identity requires
		// (mayManageIdentity).
		federation("CreateTrustPolicy"):    tenant(PermFederationWrite, onTenant, true),
		federation("UpdateTrustPolicy"):    tenant(PermFederationWrite, onTenant, true),
		federation("DeleteTrustPolicy"):    tenant(PermFederationWrite, onTenant, true),
		federation("GetTrustPolicy"):       tenant(PermFederationRead, onTenant, false),
		federation("ListTrustPolicies"):    tenant(PermFederationRead, onTenant, false),
		upstream("CreateUpstreamProvider"): tenant(PermFederationWrite, onTenant, true),
		upstream("DeleteUpstreamProvider"): tenant(PermFederationWrite, onTenant, true),
		upstream("GetUpstreamProvider"):    tenant(PermFederationRead, onTenant, false),
		upstream("ListUpstreamProviders"):  tenant(PermFederationRead, onTenant, false),
		samlSvc("CreateSAMLIdP"):           tenant(PermFederationWrite, onTenant, true),
		samlSvc("DeleteSAMLIdP"):           tenant(PermFederationWrite, onTenant, true),
		samlSvc("GetSAMLIdP"):              tenant(PermFederationRead, onTenant, false),
		samlSvc("ListSAMLIdPs"):            tenant(PermFederationRead, onTenant, false),
		// Governance (docs/governance.md): reads of the NHI inventory and least
		// privilege; the policy changes only thresholds, never access.
		governance("ListInventory"):          tenant(PermGovernanceRead, onTenant, false),
		governance("GetLeastPrivilege"):      tenant(PermGovernanceRead, onTenant, false),
		governance("GetGovernancePolicy"):    tenant(PermGovernanceRead, onTenant, false),
		governance("UpdateGovernancePolicy"): tenant(PermGovernanceWrite, onTenant, false),
		governance("GetGovernanceReport"):    tenant(PermGovernanceRead, onTenant, false),
		// Access reviews (campaign.go): managing is checked on the campaign's scope;
		// a reviewer lists and decides its own items by being their reviewer.
		review("CreateCampaign"): tenant(PermReviewsManage, onScope, false),
		review("CloseCampaign"):  tenant(PermReviewsManage, onScope, false),
		review("GetCampaign"):    tenant(PermReviewsRead, onTenant, false),
		review("ListCampaigns"):  tenant(PermReviewsRead, onTenant, false),
		review("GetEvidence"):    tenant(PermReviewsRead, onTenant, false),
		review("ListItems"):      tenant(PermReviewsRead, self, false),
		review("DecideItem"):     tenant("", self, false),
		// Alerts and webhooks (docs/analytics.md): a webhook receives every alert, so
		// adding one steps up.
		analyticsSvc("ListAlerts"):    tenant(PermAnalyticsRead, onTenant, false),
		analyticsSvc("ListWebhooks"):  tenant(PermAnalyticsRead, onTenant, false),
		analyticsSvc("CreateWebhook"): tenant(PermAnalyticsManage, onTenant, true),
		analyticsSvc("DeleteWebhook"): tenant(PermAnalyticsManage, onTenant, false),
	}
}()

type callerKey struct{}

// authenticated is the caller the authority interceptor established for a call of
// tenantID.
type authenticated struct {
	tenantID string
	c        caller
}

// callerOf returns the caller the authority interceptor authenticated for this call;
// a call it did not authenticate (public, cluster) is the operator's.
func callerOf(ctx context.Context) caller {
	a, _ := ctx.Value(callerKey{}).(authenticated)
	return a.c
}

// authorityCheck is the interceptor that enforces the authorities table on every
// Connect service: cluster procedures need the operator secret; tenant procedures an
// access token of the tenant the request names (fully validated, for keyplane's
// audience) or the operator secret as break-glass; and onTenant procedures the
// table's permission on resource "tenant", checked fully consistently. The caller is
// left in the context for the handler (callerOf, authenticate).
func (n *Node) authorityCheck() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			proc := req.Spec().Procedure
			a, ok := authorities[proc]
			if !ok {
				return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("procedure %s has no authority: refused", proc))
			}
			switch a.plane {
			case planePublic:
				return next(ctx, req)
			case planeCluster:
				if err := n.requireOperator(req.Header().Get("Authorization")); err != nil {
					return nil, err
				}
				return next(ctx, req)
			}
			tenantID, _ := tenantField(req.Any())
			if tenantID == "" {
				return nil, fieldError("tenant_id", "required")
			}
			if a.deferred {
				// Refusals on the CPU come first, as for every call; the handler reads
				// the caller's token state in its own decision read (pendingCaller).
				c, v, key, err := n.verifyCaller(ctx, req.Header().Get("Authorization"), tenantID, proc)
				if err != nil {
					return nil, err
				}
				return next(context.WithValue(ctx, pendingKey{}, pendingCaller{tenantID: tenantID, c: c, v: v, key: key}), req)
			}
			c, err := n.authenticateCall(ctx, req.Header().Get("Authorization"), tenantID, proc)
			if err != nil {
				return nil, err
			}
			ctx = context.WithValue(ctx, callerKey{}, authenticated{tenantID: tenantID, c: c})
			if a.sensitive {
				if err := n.requireStepUp(ctx, tenantID, c, proc); err != nil {
					return nil, err
				}
			}
			if a.on == onTenant && !c.operator() {
				t, err := n.store.GetTenant(ctx, tenantID)
				if err != nil {
					return nil, err
				}
				if err := n.requirePermission(ctx, t, c, a.perm); err != nil {
					return nil, err
				}
			}
			return next(ctx, req)
		}
	}
}

// requireOperator accepts only the operator secret (cluster calls). Both sides are
// hashed first so the comparison is constant-time whatever their lengths.
func (n *Node) requireOperator(header string) error {
	if n.cfg.OperatorSecret == "" {
		return connect.NewError(connect.CodeUnauthenticated,
			errors.New("the admin API is disabled on this node: start it with --operator-secret-file or KEYPLANE_OPERATOR_SECRET"))
	}
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("missing credentials: send Authorization: Bearer <operator secret>"))
	}
	if !n.isOperator(token) {
		n.metrics.authFailures.Inc()
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid operator credentials"))
	}
	return nil
}

// authenticateCall authenticates a tenant-scoped call of proc: the operator secret
// is break-glass (refused under Config.NoBreakGlass; counted either way), anything
// else must be an access token of tenantID (authenticate).
func (n *Node) authenticateCall(ctx context.Context, header, tenantID, proc string) (caller, error) {
	c, v, key, err := n.verifyCaller(ctx, header, tenantID, proc)
	if err != nil || key == nil {
		return c, err
	}
	st, err := n.states.read(ctx, v.Tenant.HomeRegion, *key)
	if err != nil {
		return caller{}, err
	}
	n.judgeToken(v, &st[0])
	return n.tokenCaller(tenantID, *v)
}

// pendingCaller is a deferred procedure's caller as the authority interceptor left it:
// verified on the CPU, its token's state not read yet (verifyCaller's results).
type pendingCaller struct {
	tenantID string
	c        caller
	v        *validation
	key      *schema.StateKey
}

type pendingKey struct{}

// verifyCaller is authenticateCall up to the decision read: it returns the caller when
// no read is needed (the operator, or one the authority interceptor authenticated), or
// the caller's verified token and the key to read; the caller then is
// tokenCaller(judgeToken of the read). Refusals on the CPU are errors.
func (n *Node) verifyCaller(ctx context.Context, header, tenantID, proc string) (caller, *validation, *schema.StateKey, error) {
	if a, ok := ctx.Value(callerKey{}).(authenticated); ok && a.tenantID == tenantID {
		return a.c, nil, nil, nil
	}
	if p, ok := ctx.Value(pendingKey{}).(pendingCaller); ok && p.tenantID == tenantID {
		return p.c, p.v, p.key, nil
	}
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return caller{}, nil, nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing credentials: send Authorization: Bearer <access token or operator secret>"))
	}
	if n.isOperator(raw) {
		if n.cfg.NoBreakGlass {
			n.metrics.breakGlass.WithLabelValues(proc, "refused").Inc()
			return caller{}, nil, nil, connect.NewError(connect.CodePermissionDenied, errors.New(
				"break-glass is off on this node: the operator secret is for cluster calls only; call as a tenant identity with an access token from the tenant's token endpoint"))
		}
		n.metrics.breakGlass.WithLabelValues(proc, "allowed").Inc()
		n.breakGlassLog.breakGlassLine(ctx, n.log, proc, tenantID)
		return caller{breakGlass: true}, nil, nil, nil
	}
	if strings.Count(raw, ".") != 2 {
		// Not a JWT: a wrong operator secret (or a guess at one), counted as such.
		n.metrics.authFailures.Inc()
		return caller{}, nil, nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid credentials: neither the operator secret nor an access token"))
	}
	v, key, err := n.verifyToken(ctx, tenantID, raw, "")
	if err != nil {
		return caller{}, nil, nil, err
	}
	if key == nil {
		_, err := n.tokenCaller(tenantID, v)
		return caller{}, nil, nil, err
	}
	return caller{}, &v, key, nil
}
