package region

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/schema"
)

// A change the store refused because its tenant is fenced for a batched rehome is
// unavailable with Retry-After, not aborted (which would tell the caller to retry at
// once) nor internal.
func TestConnectErrorRehoming(t *testing.T) {
	err := fmt.Errorf("create identity: %w", fmt.Errorf("%w: tenant %q is being moved to %s", schema.ErrRehoming, "acme", "eu-west"))
	ce := connectError(context.Background(), slog.New(slog.DiscardHandler), err)
	if ce.Code() != connect.CodeUnavailable || !strings.Contains(ce.Message(), "being moved to eu-west") || ce.Meta().Get("Retry-After") != "5" {
		t.Errorf("got %v (Retry-After %q), want unavailable naming the move with Retry-After 5", ce, ce.Meta().Get("Retry-After"))
	}
}
