package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// The governance tour (issue 17, docs/governance.md): a contractor whose account
// expires in a few seconds owns a service account. Nobody offboards them: the nodes'
// sweeper notices the expiry, disables the contractor and freezes the service account
// it owned (its key revoked, nothing new granted to it until it has an owner), and the
// NHI inventory shows it orphaned.

// sweepEvery is the demo nodes' governance sweep interval (serve
// --governance-sweep-every): short, so the tour need not wait a minute.
const sweepEvery = 2 * time.Second

// runGovernanceTour runs the governance step of the tour; it fails if the sweeper
// does not freeze the orphaned NHI in time or the inventory does not report it.
func runGovernanceTour(ctx context.Context, w io.Writer, st State) error {
	tn := st.Tenants[0]
	home := tn.HomeRegion
	tok, err := oauthToken(ctx, st, tn, home, tn.TenantAdminClient, tn.TenantAdminSecret)
	if err != nil {
		return err
	}
	base := st.ClientURLs[home][home][0]
	opts := connect.WithInterceptors(client.Bearer(tok), client.Tenant())
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, base, opts)
	gov := keyplanev1connect.NewGovernanceServiceClient(http.DefaultClient, base, opts)
	fmt.Fprintf(w, "\ngovernance: nodes sweep their region's tenants every %s (one node per region at a time, by a lease row).\n", sweepEvery)
	casey, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tn.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "casey (contractor)", ExpireTime: timestamppb.New(time.Now().Add(3 * time.Second))}))
	if err != nil {
		return fmt.Errorf("create the contractor: %w", err)
	}
	nhi, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tn.ID,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "casey-sync", OwnerId: casey.Msg.Identity.Id,
		Purpose: "syncs the contractor's tickets", ExpireTime: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))}))
	if err != nil {
		return fmt.Errorf("create casey-sync: %w", err)
	}
	if _, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: tn.ID, IdentityId: nhi.Msg.Identity.Id,
		Name: "sync", ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))})); err != nil {
		return fmt.Errorf("create casey-sync's API key: %w", err)
	}
	fmt.Fprintf(w, "  1. casey, a contractor whose account expires in 3 s, owns the service account casey-sync (with an API key)\n")
	start := time.Now()
	var entry *keyplanev1.InventoryEntry
	for entry == nil || entry.Status != keyplanev1.Status_STATUS_FROZEN {
		if time.Since(start) > 20*sweepEvery {
			return fmt.Errorf("the sweeper did not freeze casey-sync within %s: %v", 20*sweepEvery, entry)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		inv, err := gov.ListInventory(ctx, connect.NewRequest(&keyplanev1.ListInventoryRequest{TenantId: tn.ID, OwnerId: casey.Msg.Identity.Id}))
		if err != nil {
			return fmt.Errorf("list the inventory: %w", err)
		}
		if len(inv.Msg.Entries) != 1 {
			return fmt.Errorf("the inventory lists %d NHIs of casey, want 1", len(inv.Msg.Entries))
		}
		entry = inv.Msg.Entries[0]
	}
	if !slices.Contains(entry.Findings, keyplanev1.RiskFinding_RISK_FINDING_ORPHANED) || len(entry.Credentials) != 0 {
		return fmt.Errorf("casey-sync after the sweep: findings %v, %d live credentials; want orphaned and none", entry.Findings, len(entry.Credentials))
	}
	findings := make([]string, 0, len(entry.Findings))
	for _, f := range entry.Findings {
		findings = append(findings, strings.ToLower(strings.TrimPrefix(f.String(), "RISK_FINDING_")))
	}
	fmt.Fprintf(w, "  2. casey's expiry passes; within %4d ms a node's sweeper disables casey and freezes casey-sync (its key revoked)\n",
		time.Since(start).Milliseconds())
	fmt.Fprintf(w, "  3. the NHI inventory: casey-sync  status %s  owner %s  findings %s\n",
		strings.ToLower(strings.TrimPrefix(entry.Status.String(), "STATUS_")),
		strings.ToLower(strings.TrimPrefix(entry.OwnerState.String(), "OWNER_STATE_")), strings.Join(findings, ","))
	return nil
}
