package region_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
)

// TestAnalyticsQuietOnBenchMix runs the mixed workload of `keyplane bench`
// (bench/workload.go: 94% checks of random identities on random resources, 5% token
// validations, 0.9% API key exchanges, 0.1% policy writes) against a node seeded like
// the bench's tenant, small and bounded in count, with a learning period short enough
// that most identities' baselines judge part of the load: steady load raises no alert.
func TestAnalyticsQuietOnBenchMix(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const identities, roles, resources, ops, workers, learning = 20, 10, 100, 1200, 8, 20
	f := newFixtureWith(t, func(c *region.Config) {
		analyticsConfig(c)
		c.Analytics.LearningEvents = learning
	})
	rng := rand.New(rand.NewPCG(7, 7))
	var ids, groups, roleIDs []string
	for i := range identities {
		r, err := f.admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: f.tenant,
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: fmt.Sprintf("user %d", i)}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Msg.Identity.Id)
	}
	for i := range roles {
		r, err := f.admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: f.tenant, Name: fmt.Sprintf("role-%d", i),
			Permissions: []string{"bench.doc.read"}}))
		if err != nil {
			t.Fatal(err)
		}
		g, err := f.admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: f.tenant, Name: fmt.Sprintf("role-%d members", i)}))
		if err != nil {
			t.Fatal(err)
		}
		roleIDs, groups = append(roleIDs, r.Msg.Role.Id), append(groups, g.Msg.Group.Id)
	}
	for _, id := range ids {
		for _, j := range rng.Perm(roles)[:3] {
			if _, err := f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: f.tenant, GroupId: groups[j], IdentityId: id})); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range resources {
		for _, j := range rng.Perm(roles)[:2] {
			if _, err := f.admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: f.tenant, Effect: keyplanev1.Effect_EFFECT_ALLOW,
				PrincipalKind: "group", PrincipalId: groups[j], RoleId: roleIDs[j], Scope: fmt.Sprintf("res/%d/", i)})); err != nil {
				t.Fatal(err)
			}
		}
	}
	tokens := []string{f.exchange(t), f.exchange(t), f.exchange(t)}

	cc := checkClient(f.url, secret)
	var checks sync.Map // identity → *atomic.Int64
	for _, id := range ids {
		checks.Store(id, new(atomic.Int64))
	}
	var next atomic.Int64
	var member atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for next.Add(1) <= ops && ctx.Err() == nil {
				var err error
				switch x := r.IntN(1000); {
				case x < 940:
					id := ids[r.IntN(len(ids))]
					_, err = cc.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: f.tenant, Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: id},
						Permission: "bench.doc.read", Resource: fmt.Sprintf("res/%d/doc", r.IntN(resources))}))
					if err == nil {
						n, _ := checks.Load(id)
						n.(*atomic.Int64).Add(1)
					}
				case x < 990:
					_, err = f.auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: f.tenant, Token: tokens[r.IntN(len(tokens))]}))
				case x < 999:
					_, err = f.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: f.tenant, ApiKey: f.apiKey}))
				default: // a policy write: toggle one membership
					if member.CompareAndSwap(false, true) {
						_, err = f.admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: f.tenant, GroupId: groups[0], IdentityId: f.owner}))
					} else if member.CompareAndSwap(true, false) {
						_, err = f.admin.RemoveGroupMember(ctx, connect.NewRequest(&keyplanev1.RemoveGroupMemberRequest{TenantId: f.tenant, GroupId: groups[0], IdentityId: f.owner}))
					}
					if c := connect.CodeOf(err); c == connect.CodeAlreadyExists || c == connect.CodeNotFound {
						err = nil
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Every check is in its identity's baseline (so every one was judged), and most
	// identities were past their learning period for part of the load.
	sc := schema.Scope{TenantID: f.tenant, Region: "us-east"}
	learned := 0
	eventually(t, "the baselines to hold every check", func() bool {
		fs, err := f.store.LoadFeatures(ctx, sc, ids)
		if err != nil {
			t.Fatal(err)
		}
		events := map[string]int64{}
		for _, x := range fs {
			if x.Kind == schema.FeatureEvents {
				events[x.IdentityID] = x.Count
			}
		}
		learned = 0
		for _, id := range ids {
			n, _ := checks.Load(id)
			if events[id] != n.(*atomic.Int64).Load() {
				return false
			}
			if events[id] > 2*learning {
				learned++
			}
		}
		return true
	})
	if learned < identities/2 {
		t.Fatalf("%d of %d identities had more than twice the learning period's events: the load judged too little", learned, identities)
	}
	if as := listAlerts(t, analyticsClient(f.url, secret), &keyplanev1.ListAlertsRequest{TenantId: f.tenant}); len(as) != 0 {
		t.Fatalf("steady bench load raised %d alerts, first: %v", len(as), as[0])
	}
}
