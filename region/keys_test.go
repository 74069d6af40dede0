package region_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/go-jose/go-jose/v4"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
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
	cfg := authConfig(f.kek, "us-east-10")
	cfg.MetricsPublic = true
	f.url = testNode(t, f.store, cfg)
	f.auth = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	fresh := f.exchange(t)
	if kid := token.PeekKeyID(fresh); kid != next {
		t.Fatalf("signed with %s after activation, want %s (pending %s)", kid, next, pending)
	}
	if !f.validate(t, old).Active || !f.validate(t, fresh).Active {
		t.Fatal("tokens of the retired and of the new key must both validate")
	}
	// The rotation age the KeyplaneSigningKeyRotationOverdue alert reads is the
	// signing key's, not the retired one's.
	keys, err := f.store.ListSigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.KID == next {
			got := metricValue(t, f.url+"/metrics", "keyplane_signing_key_active_since_timestamp_seconds", `alg="EdDSA"`)
			if got != float64(k.ActiveAt.Unix()) {
				t.Fatalf("keyplane_signing_key_active_since_timestamp_seconds = %v, want %d (key %s)", got, k.ActiveAt.Unix(), next)
			}
			return
		}
	}
	t.Fatalf("key %s is not in the store", next)
}

// TestKeyRotationPerAlgorithm: a region keeps one current key per algorithm. Rotating
// its RS256 key retires only the RS256 key (EdDSA tenants keep signing with theirs),
// and the RS256 tenant's tokens of the retired key still validate.
func TestKeyRotationPerAlgorithm(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	edKid := token.PeekKeyID(f.exchange(t))
	if _, err := f.admin.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme",
		SigningAlgorithm: keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_RS256})); err != nil {
		t.Fatal(err)
	}
	oldRS := f.exchange(t)
	oldKid := token.PeekKeyID(oldRS)
	if oldKid == edKid || !strings.Contains(oldKid, "-rs-") {
		t.Fatalf("RS256 tenant's token signed with %s (EdDSA key %s)", oldKid, edKid)
	}
	next, err := region.AddSigningKeyAlg(ctx, f.store, f.kek, "us-east", token.RS256, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	f.url = testNode(t, f.store, authConfig(f.kek, "us-east-9"))
	f.auth = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	if kid := token.PeekKeyID(f.exchange(t)); kid != next {
		t.Fatalf("RS256 token after rotation signed with %s, want %s", kid, next)
	}
	if _, err := f.admin.UpdateTenant(ctx, connect.NewRequest(&keyplanev1.UpdateTenantRequest{Id: "acme",
		SigningAlgorithm: keyplanev1.SigningAlgorithm_SIGNING_ALGORITHM_EDDSA})); err != nil {
		t.Fatal(err)
	}
	if kid := token.PeekKeyID(f.exchange(t)); kid != edKid {
		t.Fatalf("EdDSA token after an RS256 rotation signed with %s, want the untouched %s", kid, edKid)
	}
	if !f.validate(t, oldRS).Active {
		t.Fatal("a token of the retired RS256 key must validate until it expires")
	}
}
