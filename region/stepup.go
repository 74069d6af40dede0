package region

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/keyplane/keyplane/schema"
)

// ReasonStepUpRequired is the machine-readable reason (google.rpc.ErrorInfo, domain
// ErrorDomain) of the permission_denied a human gets on a sensitive call without a
// recent second factor.
const ReasonStepUpRequired = "step_up_required"

// ErrorDomain is the domain of keyplane's google.rpc.ErrorInfo error details.
const ErrorDomain = "keyplane.dev"

// stepUpWindow is how recent a login t's sensitive calls need: the tenant's own
// window, else the node's (serve --step-up-window).
func (n *Node) stepUpWindow(t schema.Tenant) time.Duration {
	if t.StepUpWindow > 0 {
		return t.StepUpWindow
	}
	return n.cfg.Login.StepUpWindow
}

// requireStepUp enforces step-up on a sensitive procedure (authorities' sensitive
// flag): a human caller's token must show a second factor (amr "mfa") and a login
// within the tenant's step-up window. Non-human callers cannot step up: their
// bindings alone authorize them, which is why binding a sensitive permission to one is
// itself sensitive. The operator (break-glass) is not an identity and passes. A
// refusal is permission_denied carrying an ErrorInfo with ReasonStepUpRequired and,
// for HTTP clients, the RFC 9470 challenge in WWW-Authenticate.
func (n *Node) requireStepUp(ctx context.Context, tenantID string, c caller, proc string) error {
	if c.operator() || c.kind != schema.KindHuman {
		return nil
	}
	t, err := n.store.GetTenant(ctx, tenantID) // its current window: sensitive calls are rare
	if err != nil {
		return err
	}
	window := n.stepUpWindow(t)
	fresh := !c.authTime.IsZero() && n.now().Sub(c.authTime) <= window
	if fresh && slices.Contains(c.amr, "mfa") {
		return nil
	}
	n.metrics.stepUpRequired.WithLabelValues(proc).Inc()
	maxAge := strconv.FormatInt(int64(window/time.Second), 10)
	ce := connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
		"%s: step-up required: %s is sensitive and needs a login with a second factor (password and TOTP) within the last %s; log in again",
		ReasonStepUpRequired, proc, window))
	if d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: ReasonStepUpRequired, Domain: ErrorDomain,
		Metadata: map[string]string{"max_age": maxAge, "acr_values": "mfa", "procedure": proc}}); err == nil {
		ce.AddDetail(d)
	}
	ce.Meta().Set("WWW-Authenticate", `Bearer error="insufficient_user_authentication", `+
		`error_description="a login with a second factor within the step-up window is required", acr_values="mfa", max_age=`+maxAge)
	return ce
}
