package region_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSecurityFederationReplayWithNodeClockBehind: a node judges an external token's
// exp by its own clock, the database prunes exchanged jtis by its clock. keyplane kept
// a jti until the token's exp: on a node whose clock is behind the database's, a
// token still valid for the node was already "expired" for the database, its jti
// pruned by the next exchange's transaction, and the same token exchanged again.
func TestSecurityFederationReplayWithNodeClockBehind(t *testing.T) {
	t.Parallel()
	f := newFedFixture(t)
	f.clock.Advance(-10 * time.Minute)
	claims := f.ci.ciClaims(f.ciAud)
	nodeNow := f.clock.Now()
	claims["iat"], claims["nbf"], claims["exp"] = nodeNow.Unix(), nodeNow.Unix(), nodeNow.Add(5*time.Minute).Unix()
	tok := f.ci.sign(t, claims, "")
	if r := postFormNoFatal(f.tokenURL, exchangeForm(tok)); r.status != http.StatusOK {
		t.Fatalf("first exchange: %d %v", r.status, r.body)
	}
	r := postFormNoFatal(f.tokenURL, exchangeForm(tok))
	desc, _ := r.body["error_description"].(string)
	if r.status != http.StatusBadRequest || r.body["error"] != "invalid_grant" || !strings.HasPrefix(desc, "replay:") {
		t.Fatalf("second exchange of the same token: want invalid_grant replay, got %d %v", r.status, r.body)
	}
	if n := countAudit(t, f.fixture, "federation.exchange", ""); n != 1 {
		t.Fatalf("%d federation.exchange events, want 1", n)
	}
}
