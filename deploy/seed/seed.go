// Package seed creates the tenants that demos, benchmarks, drills and tests start
// from, through the admin API: a tenant homed in a region, its accountable human owner
// and a service account that owns the credentials.
package seed

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// Spec describes a tenant to create. Empty fields take the defaults noted.
type Spec struct {
	ID, Home    string
	Name        string // default: the id
	OwnerName   string // default "Owner"
	OwnerEmail  string // default none
	Purpose     string // the service account's purpose; default "seeded service account"
	ServiceName string // the service account's display name; default: Purpose
	// ResidencyPolicy: unspecified means the default for its residency (relaxed).
	ResidencyPolicy keyplanev1.ResidencyPolicy
}

// Tenant is a created tenant.
type Tenant struct {
	ID, Home, Issuer string
	OwnerID          string // a human identity of the tenant
	ServiceAccountID string // owned by OwnerID, expires in 30 days
	// The first tenant admin CreateTenant made (built-in role tenant-admin): its
	// identity and its OAuth client, whose tokens do the tenant's admin work.
	AdminID, AdminClientID, AdminClientSecret string
}

// NewTenant creates the tenant (and with it its first tenant admin), its owner and its
// service account. admin must carry the operator secret (and, for routing, the
// Keyplane-Tenant header: client.Tenant); the owner and the service account are made
// with it as break-glass (docs/administration.md).
func NewTenant(ctx context.Context, admin keyplanev1connect.AdminServiceClient, s Spec) (Tenant, error) {
	if s.Name == "" {
		s.Name = s.ID
	}
	if s.OwnerName == "" {
		s.OwnerName = "Owner"
	}
	if s.Purpose == "" {
		s.Purpose = "seeded service account"
	}
	if s.ServiceName == "" {
		s.ServiceName = s.Purpose
	}
	t, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: s.ID, Name: s.Name, HomeRegion: s.Home,
		ResidencyPolicy: s.ResidencyPolicy}))
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant %s: %w", s.ID, err)
	}
	owner, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: s.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: s.OwnerName, Email: s.OwnerEmail}))
	if err != nil {
		return Tenant{}, fmt.Errorf("create the owner of %s: %w", s.ID, err)
	}
	sa, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: s.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: s.ServiceName, OwnerId: owner.Msg.Identity.Id,
		Purpose: s.Purpose, ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}))
	if err != nil {
		return Tenant{}, fmt.Errorf("create the service account of %s: %w", s.ID, err)
	}
	return Tenant{ID: s.ID, Home: s.Home, Issuer: t.Msg.Tenant.Issuer, OwnerID: owner.Msg.Identity.Id,
		ServiceAccountID: sa.Msg.Identity.Id, AdminID: t.Msg.AdminIdentityId, AdminClientID: t.Msg.AdminClientId,
		AdminClientSecret: t.Msg.AdminClientSecret}, nil
}

// APIKey creates an API key for the service account, valid 29 days; it returns the
// secret, shown this once.
func (t Tenant) APIKey(ctx context.Context, admin keyplanev1connect.AdminServiceClient) (string, error) {
	key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: t.ID,
		IdentityId: t.ServiceAccountID, Name: "seeded", ExpireTime: timestamppb.New(time.Now().Add(29 * 24 * time.Hour))}))
	if err != nil {
		return "", fmt.Errorf("create an API key in %s: %w", t.ID, err)
	}
	return key.Msg.ApiKey, nil
}

// Client creates an OAuth client for the service account; an admin client may
// introspect and revoke every token of the tenant. It returns the id and the secret.
func (t Tenant) Client(ctx context.Context, admin keyplanev1connect.AdminServiceClient, name string, adminClient bool) (string, string, error) {
	c, err := admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: t.ID,
		IdentityId: t.ServiceAccountID, Name: name, Admin: adminClient}))
	if err != nil {
		return "", "", fmt.Errorf("create an OAuth client in %s: %w", t.ID, err)
	}
	return c.Msg.ClientId, c.Msg.ClientSecret, nil
}
