package region_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/token"
)

// TestKeyRotation: a rotated key is published before it signs; after it starts
// signing, tokens of the retired key still validate (until they expire).
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	jwks := func() []string {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(getJSON(t, f.url+"/t/acme/.well-known/jwks.json"), &set); err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KeyID)
		}
		return kids
	}
	old := f.exchange(t)
	oldKid := token.PeekKeyID(old)
	if got := jwks(); len(got) != 1 || got[0] != oldKid {
		t.Fatalf("JWKS before rotation: %v, want [%s]", got, oldKid)
	}
	pending, err := region.AddSigningKey(ctx, f.store, f.kek, "us-east", time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	// The node reloads keys every 30 s or on an unknown kid; a fresh node sees it now.
	f.url = testNode(t, f.store, authConfig(f.kek, "us-east-9"))
	f.auth = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	if got := jwks(); len(got) != 2 {
		t.Fatalf("JWKS after publishing: %v, want the old and the pending key", got)
	}
	if kid := token.PeekKeyID(f.exchange(t)); kid != oldKid {
		t.Fatalf("signed with %s before the publish delay passed, want %s", kid, oldKid)
	}
	next, err := region.AddSigningKey(ctx, f.store, f.kek, "us-east", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	f.url = testNode(t, f.store, authConfig(f.kek, "us-east-10"))
	f.auth = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	fresh := f.exchange(t)
	if kid := token.PeekKeyID(fresh); kid != next {
		t.Fatalf("signed with %s after activation, want %s (pending %s)", kid, next, pending)
	}
	if !f.validate(t, old).Active || !f.validate(t, fresh).Active {
		t.Fatal("tokens of the retired and of the new key must both validate")
	}
}
