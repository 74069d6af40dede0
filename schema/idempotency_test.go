package schema_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestIdempotentCall: a call's writes are held in one transaction until it commits
// with its record or rolls back; a second call with the key loses to the first; the
// record expires and is pruned.
func TestIdempotentCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()

	// Rolled back: neither write happened.
	call := &schema.IdempotentCall{Scope: sc, Key: "k1", RequestHash: []byte("h1")}
	cctx := schema.WithIdempotentCall(ctx, call)
	a := mustHuman(t, s, sc, "Ada") // outside the call: commits
	held, err := s.CreateIdentity(cctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Held"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetIdentityStatus(cctx, op, sc, a.ID, schema.StatusDisabled); err != nil { // joins the held transaction
		t.Fatal(err)
	}
	if !call.Changed() {
		t.Fatal("the call holds no transaction after writing")
	}
	if _, err := s.GetIdentity(ctx, sc, held.ID); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("a held write is visible before the commit: %v", err)
	}
	call.Rollback(ctx)
	if _, err := s.GetIdentity(ctx, sc, held.ID); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("a rolled-back write exists: %v", err)
	}
	if got, err := s.GetIdentity(ctx, sc, a.ID); err != nil || got.Status != schema.StatusActive {
		t.Fatalf("the joined write survived the rollback: %v %v", got.Status, err)
	}

	// Committed with its record; a racing call with the key cannot commit.
	call = &schema.IdempotentCall{Scope: sc, Key: "k2", RequestHash: []byte("h2")}
	rival := &schema.IdempotentCall{Scope: sc, Key: "k2", RequestHash: []byte("h2")}
	one, err := s.CreateIdentity(schema.WithIdempotentCall(ctx, call), op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "One"})
	if err != nil {
		t.Fatal(err)
	}
	two, err := s.CreateIdentity(schema.WithIdempotentCall(ctx, rival), op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Two"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitIdempotent(ctx, call, 200, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitIdempotent(ctx, rival, 200, []byte("other")); err == nil {
		t.Fatal("a second call with the key committed")
	}
	if _, err := s.GetIdentity(ctx, sc, one.ID); err != nil {
		t.Fatalf("the committed call's write: %v", err)
	}
	if _, err := s.GetIdentity(ctx, sc, two.ID); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("the losing call's write exists: %v", err)
	}
	rec, err := s.LookupIdempotency(ctx, sc, "k2")
	if err != nil || rec.Status != 200 || string(rec.Sealed) != "sealed" || !rec.SameRequest([]byte("h2")) || rec.SameRequest([]byte("h3")) {
		t.Fatalf("record: %+v %v", rec, err)
	}
	if _, err := s.LookupIdempotency(ctx, schema.Scope{TenantID: "other", Region: "us-east"}, "k2"); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("another tenant's lookup of the key: %v, want not found", err)
	}

	// Expired: no longer answered, then pruned.
	if _, err := s.Pool().Exec(ctx, `UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupIdempotency(ctx, sc, "k2"); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("an expired record: %v, want not found", err)
	}
	if n, err := s.PruneIdempotencyKeys(ctx, sc, 100); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
}
