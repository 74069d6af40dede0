package region

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

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
