package region

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// serveTestNode builds a node on store and serves it on a loopback listener until the
// test ends.
func serveTestNode(t *testing.T, store *schema.Store, region, id string) *Node {
	t.Helper()
	cfg := Config{Region: region, NodeID: id, IssuerBase: "https://iam.test", Analytics: AnalyticsConfig{DriftEvery: time.Hour}}
	n, err := New(cfg, store, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return n
}

// driftTenant makes a tenant whose one person may read docs/, with ten decisions
// about it logged two hours ago (before the current drift period).
func driftTenant(t *testing.T, store *schema.Store, id string) schema.Scope {
	t.Helper()
	ctx := context.Background()
	op := schema.Change{Actor: "operator"}
	tn, err := store.CreateTenant(ctx, op, schema.NewTenant{ID: id, Name: id, HomeRegion: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	sc := tn.Scope()
	alice, err := store.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Alice"})
	if err != nil {
		t.Fatal(err)
	}
	role, _, err := store.CreateRole(ctx, op, sc, schema.Role{Name: "reader", Permissions: []string{"docs.doc.read"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.CreateBinding(ctx, op, sc, schema.Binding{Effect: "allow", PrincipalKind: "identity", PrincipalID: alice.ID, RoleID: role.ID, Scope: "docs/"}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-2 * time.Hour)
	var ds []schema.Decision
	for i := range 10 {
		res := fmt.Sprintf("docs/%d", i)
		if i%3 == 0 {
			res = fmt.Sprintf("other/%d", i)
		}
		ds = append(ds, schema.Decision{ID: uuid.NewString(), TenantID: id, Region: sc.Region, At: at.Add(time.Duration(i) * time.Second), PrincipalID: alice.ID,
			Permission: "docs.doc.read", Resource: res, Allowed: i%3 != 0, Reason: "logged", EntryRegion: "us-east"})
	}
	if err := store.WriteDecisions(ctx, ds); err != nil {
		t.Fatal(err)
	}
	return sc
}

// TestPolicyDriftBetweenTwoNodes: two real nodes of two regions compare a tenant's
// sampled decisions; one whose policy cache was corrupted (its bindings lost, at the
// same revision) raises one policy_drift alert, however often they compare; nodes
// that agree raise none.
func TestPolicyDriftBetweenTwoNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, schematest.NewDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	storeA := schema.New(pool, schema.Config{Region: "us-east", Node: "us-east-1"})
	storeB := schema.New(pool, schema.Config{Region: "eu-west", Node: "eu-west-1"})
	a, b := serveTestNode(t, storeA, "us-east", "us-east-1"), serveTestNode(t, storeB, "eu-west", "eu-west-1")
	drifting, agreeing := driftTenant(t, storeA, "acme"), driftTenant(t, storeA, "globex")

	// b's cache of acme: the current revision, without its bindings.
	p, err := storeA.LoadPolicy(ctx, drifting)
	if err != nil {
		t.Fatal(err)
	}
	p.Bindings = nil
	bad, err := b.policies.env.Compile(toAuthzPolicy(p))
	if err != nil {
		t.Fatal(err)
	}
	b.policies.entry("acme").snap.Store(bad)

	for round := range 3 {
		for _, n := range []*Node{a, b} {
			for _, tenant := range []string{"acme", "globex"} {
				if _, err := n.drift.compare(ctx, tenant); err != nil {
					t.Fatalf("round %d, %s, %s: %v", round, n.cfg.NodeID, tenant, err)
				}
			}
		}
	}
	got := alertsOf(t, storeA, drifting)
	if len(got) != 1 || got[0].Kind != AlertPolicyDrift || got[0].IdentityID != "" {
		t.Fatalf("acme's alerts: %+v, want one policy_drift", got)
	}
	if r := got[0].Reason; !containsAll(r, fmt.Sprint(p.Revision), "us-east-1", "eu-west-1") {
		t.Errorf("reason %q names neither the revision nor both nodes", r)
	}
	if got := alertsOf(t, storeA, agreeing); len(got) != 0 {
		t.Fatalf("globex (nodes agree): %+v", got)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !mentions(s, x) {
			return false
		}
	}
	return true
}
