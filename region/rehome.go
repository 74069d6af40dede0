package region

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// rehomeRetryAfter is the Retry-After of a call refused because its tenant is being
// rehomed in batches: a short wait, as the move of a large tenant takes minutes.
const rehomeRetryAfter = 5 * time.Second

// rehomingError is the answer to a call of a tenant being rehomed in batches:
// unavailable with Retry-After, built per call (connectError sets the request id in
// its metadata).
func rehomingError(msg string) *connect.Error {
	ce := connect.NewError(connect.CodeUnavailable, errors.New(msg))
	ce.Meta().Set("Retry-After", retryAfterSeconds(rehomeRetryAfter))
	return ce
}

// rehomeFence refuses a tenant-scoped call while its tenant is being rehomed in
// batches (docs/decisions/0019-batched-rehome.md): its rows are split between two
// partitions, so a read would see part of them, and changes are refused by the store
// anyway. It goes by the node's cached tenant row (routing.Directory, at most its TTL
// old): the rehome waits longer than that after raising the fence before it moves a
// row, and after the flip before lifting it.
func (n *Node) rehomeFence(ctx context.Context, req connect.AnyRequest) error {
	id, ok := tenantField(req.Any())
	if !ok || !schema.ValidTenantID(id) {
		return nil
	}
	t, err := n.tenants.Tenant(ctx, id, 0)
	if errors.Is(err, schema.ErrNotFound) {
		return nil // the handler says so in its own words
	}
	if err != nil {
		return err
	}
	if t.RehomingTo != "" {
		return rehomingError("tenant " + t.ID + " is being rehomed to " + t.RehomingTo + "; retry in a few seconds")
	}
	return nil
}

// rehomeFenceHTTP is rehomeFence for the tenant's HTTP endpoints (/t/{tenant}/…: OAuth,
// OIDC, SAML, SCIM, review pages): 503 with Retry-After while the tenant is being
// rehomed in batches. Discovery and JWKS (/t/{tenant}/.well-known/…) stay up: they read
// no row of the tenant's partition.
func (n *Node) rehomeFenceHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
		id, sub, _ := strings.Cut(rest, "/")
		if !ok || !schema.ValidTenantID(id) || strings.HasPrefix(sub, ".well-known/") {
			next.ServeHTTP(w, r)
			return
		}
		t, err := n.tenants.Tenant(r.Context(), id, 0)
		if err != nil || t.RehomingTo == "" {
			next.ServeHTTP(w, r) // the handler reports a lookup failure in its own words
			return
		}
		w.Header().Set("Retry-After", retryAfterSeconds(rehomeRetryAfter))
		routing.WriteError(w, r, routing.CodeUnavailable, "tenant "+t.ID+" is being rehomed to "+t.RehomingTo+"; retry in a few seconds")
	})
}
