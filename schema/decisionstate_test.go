package schema_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestReadDecisionStates reads keys of two tenants and of every kind in one statement
// and checks each key gets its own row's state, in order, with malformed or foreign
// ids failing only their own key.
func TestReadDecisionStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	acme := mustTenant(t, s, "acme", "us-east")
	beta := mustTenant(t, s, "beta", "us-east")
	euro := mustTenant(t, s, "euro", "eu-west")
	alice, err := s.CreateIdentity(ctx, op, acme.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Alice",
		Attributes: map[string]any{"department": "finance"}})
	if err != nil {
		t.Fatal(err)
	}
	bob := mustHuman(t, s, beta.Scope(), "Bob")
	eve := mustHuman(t, s, euro.Scope(), "Eve")
	sess, err := s.CreateSession(ctx, op, acme.Scope(), schema.NewSession{IdentityID: alice.ID, GrantType: "password", ExpiresAt: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.CreateSession(ctx, op, acme.Scope(), schema.NewSession{IdentityID: alice.ID, GrantType: "password", ExpiresAt: time.Now().Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeSession(ctx, op, acme.Scope(), gone.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetIdentityStatus(ctx, op, beta.Scope(), bob.ID, schema.StatusDisabled); err != nil {
		t.Fatal(err)
	}

	keys := []schema.StateKey{
		{TenantID: "acme", IdentityID: alice.ID, SessionID: sess.ID},          // 0: live session
		{TenantID: "beta", IdentityID: bob.ID},                                // 1: another tenant, disabled identity
		{TenantID: "acme", IdentityID: alice.ID, SessionID: gone.ID},          // 2: revoked session
		{TenantID: "acme", IdentityID: "not-a-uuid"},                          // 3: malformed id
		{TenantID: "acme", IdentityID: bob.ID},                                // 4: another tenant's identity
		{TenantID: "acme", IdentityID: bob.ID, SessionID: sess.ID},            // 5: a session of someone else
		{TenantID: "nope", IdentityID: alice.ID},                              // 6: no such tenant
		{TenantID: "acme"},                                                    // 7: the tenant alone
		{TenantID: "euro", IdentityID: eve.ID},                                // 8: homed elsewhere: not in this partition
		{TenantID: "acme", IdentityID: alice.ID, SessionID: uuid.NewString()}, // 9: unknown session
		{TenantID: "acme", IdentityID: alice.ID, SessionID: "x"},              // 10: malformed session id
	}
	got, err := s.ReadDecisionStates(ctx, "us-east", keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("%d states for %d keys", len(got), len(keys))
	}
	type want struct {
		tenant, identity, session bool
		status                    string
		revoked                   bool
	}
	wants := []want{
		{true, true, true, schema.StatusActive, false},
		{true, true, false, schema.StatusDisabled, false},
		{true, true, true, schema.StatusActive, true},
		{true, false, false, "", false},
		{true, false, false, "", false},
		{true, false, false, "", false},
		{false, false, false, "", false},
		{true, false, false, "", false},
		{true, false, false, "", false},
		{true, true, false, schema.StatusActive, false},
		{true, true, false, schema.StatusActive, false},
	}
	for i, w := range wants {
		g := got[i]
		if g.TenantFound != w.tenant || g.IdentityFound != w.identity || g.SessionFound != w.session || g.IdentityStatus != w.status || g.SessionRevoked != w.revoked {
			t.Errorf("key %d %+v: got tenant %v identity %v session %v status %q revoked %v, want %+v",
				i, keys[i], g.TenantFound, g.IdentityFound, g.SessionFound, g.IdentityStatus, g.SessionRevoked, w)
		}
	}
	if got[0].TenantStatus != schema.StatusActive || got[0].PolicyRevision != acme.PolicyRevision || got[0].IdentityKind != schema.KindHuman ||
		!got[0].SessionExpiresAt.Equal(sess.ExpiresAt) || !got[0].SessionCreatedAt.Equal(sess.CreatedAt) {
		t.Errorf("key 0: %+v, want acme active at revision %d, a human, the session's times %v / %v", got[0], acme.PolicyRevision, sess.CreatedAt, sess.ExpiresAt)
	}
	attrs, err := got[0].Attributes()
	if err != nil || attrs["department"] != "finance" {
		t.Errorf("key 0 attributes: %v, %v; want department finance", attrs, err)
	}
	if a, err := got[7].Attributes(); err != nil || len(a) != 0 {
		t.Errorf("tenant-only key attributes: %v, %v; want none", a, err)
	}

	if got, err := s.ReadDecisionStates(ctx, "us-east", nil); err != nil || got != nil {
		t.Errorf("no keys: %v, %v; want nothing and no error", got, err)
	}
	if _, err := s.ReadDecisionStates(ctx, "us-east", make([]schema.StateKey, schema.MaxStateKeys+1)); err == nil {
		t.Errorf("%d keys: no error", schema.MaxStateKeys+1)
	}
}
