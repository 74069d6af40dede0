package region_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestRehomeFence: while a tenant is being rehomed in batches, a node refuses its
// reads and writes with unavailable and Retry-After, refuses a one-transaction rehome
// of it, and serves other tenants as usual.
func TestRehomeFence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := schematest.NewStore(t, "us-east")
	base := testNode(t, store, nodeConfig())
	c := adminClient(base, secret)
	op := schema.Change{Actor: "operator"}
	for _, id := range []string{"acme", "other"} {
		if _, err := store.CreateTenant(ctx, op, schema.NewTenant{ID: id, Name: id, HomeRegion: "us-east"}); err != nil {
			t.Fatal(err)
		}
	}
	sc := schema.Scope{TenantID: "acme", Region: "us-east"}
	for _, name := range []string{"Alice", "Bob", "Carol"} {
		if _, err := store.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: name}); err != nil {
			t.Fatal(err)
		}
	}

	paused, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		first := true
		_, _, err := store.RehomeTenantBatched(ctx, op, "acme", "eu-west", schema.RehomeOptions{BatchSize: 1,
			Progress: func(schema.RehomeProgress) {
				if first {
					first = false
					close(paused)
					<-resume
				}
			}})
		done <- err
	}()
	select {
	case <-paused:
	case err := <-done:
		t.Fatalf("rehome ended before its first batch: %v", err)
	}

	_, err := c.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "acme"}))
	wantCode(t, err, connect.CodeUnavailable, "being rehomed to eu-west")
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" {
		t.Errorf("a refused read carries no Retry-After: %v", err)
	}
	_, err = c.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "acme",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "Late"}))
	wantCode(t, err, connect.CodeUnavailable, "being rehomed")
	_, err = c.RehomeTenant(ctx, connect.NewRequest(&keyplanev1.RehomeTenantRequest{Id: "acme", HomeRegion: "eu-west"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "being rehomed in batches")
	// The operator sees the move on the tenant.
	if got, err := c.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "acme"})); err != nil || got.Msg.Tenant.RehomingTo != "eu-west" {
		t.Errorf("GetTenant during the move: %v, %v; want rehoming_to eu-west", got, err)
	}
	if _, err := c.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: "other"})); err != nil {
		t.Errorf("another tenant during the move: %v", err)
	}

	// The tenant's HTTP endpoints too; discovery stays up.
	resp, err := http.PostForm(base+"/t/acme/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || !strings.Contains(string(body), "being rehomed") {
		t.Errorf("token endpoint during the move: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, err = http.Get(base + "/t/acme/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("discovery during the move: %d, want 200", resp.StatusCode)
	}

	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := store.GetTenant(ctx, "acme")
	if err != nil || got.HomeRegion != "eu-west" || got.RehomingTo != "" {
		t.Fatalf("after the move: %+v, %v", got, err)
	}
	if got, err := c.GetTenant(ctx, connect.NewRequest(&keyplanev1.GetTenantRequest{Id: "acme"})); err != nil || got.Msg.Tenant.RehomingTo != "" || got.Msg.Tenant.HomeRegion != "eu-west" {
		t.Errorf("GetTenant after the move: %v, %v; want home eu-west, rehoming_to empty", got, err)
	}
	ids, _, err := store.ListIdentities(ctx, got.Scope(), schema.Page{})
	if err != nil || len(ids) != 3 {
		t.Errorf("identities in the new home: %d, %v; want 3", len(ids), err)
	}
}
