package schema_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// twoNodes returns two stores of different nodes on one fresh database.
func twoNodes(t *testing.T) (*schema.Store, *schema.Store) {
	t.Helper()
	pool, err := schema.Open(context.Background(), schematest.NewDatabase(t), schema.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return schema.New(pool, schema.Config{Region: "us-east", Node: "us-east-1"}), schema.New(pool, schema.Config{Region: "us-east", Node: "us-east-2"})
}

func analyticsTenant(t *testing.T, s *schema.Store) schema.Scope {
	t.Helper()
	tn, err := s.CreateTenant(context.Background(), schema.Change{Actor: "operator"}, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	return tn.Scope()
}

// TestRaiseAlertOnceAcrossNodes: two nodes raising the same alert at once raise it
// once; another value is another alert; pages walk every alert.
func TestRaiseAlertOnceAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := twoNodes(t)
	sc := analyticsTenant(t, a)
	id := uuid.NewString()
	var wg sync.WaitGroup
	raised := make(chan bool, 8)
	for i := range 8 {
		s := []*schema.Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := s.RaiseAlert(ctx, sc, schema.Alert{IdentityID: id, Kind: "new_region", Value: "ap-south", Reason: "first access from ap-south"}, time.Hour)
			if err != nil {
				t.Error(err)
			}
			raised <- ok
		}()
	}
	wg.Wait()
	close(raised)
	n := 0
	for ok := range raised {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("8 concurrent raises of one alert raised %d, want 1", n)
	}
	for _, v := range []string{"eu-west", "us-west", "sa-east"} {
		if _, ok, err := a.RaiseAlert(ctx, sc, schema.Alert{IdentityID: id, Kind: "new_region", Value: v, Reason: "r"}, time.Hour); err != nil || !ok {
			t.Fatalf("%s: raised %v, %v", v, ok, err)
		}
	}
	// A zero suppression window lets a repeat through.
	if _, ok, err := a.RaiseAlert(ctx, sc, schema.Alert{IdentityID: id, Kind: "new_region", Value: "ap-south", Reason: "again"}, 0); err != nil || !ok {
		t.Fatalf("repeat without suppression: %v %v", ok, err)
	}
	var all []schema.Alert
	p := schema.Page{Size: 2}
	for {
		page, next, err := a.ListAlerts(ctx, sc, schema.AlertFilter{IdentityID: id, Kind: "new_region"}, p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		p.Token = next
	}
	if len(all) != 5 {
		t.Fatalf("paged %d alerts, want 5", len(all))
	}
	seen := map[string]bool{}
	for i, x := range all {
		if seen[x.ID] || (i > 0 && x.At.After(all[i-1].At)) {
			t.Fatalf("page order broken at %d: %+v", i, x)
		}
		seen[x.ID] = true
	}
	if _, _, err := a.ListAlerts(ctx, sc, schema.AlertFilter{IdentityID: "alice"}, schema.Page{}); err == nil {
		t.Fatal("a non-uuid identity filter was accepted")
	}
}

// TestClaimDeliveriesExactlyOnce: two nodes claiming the outbox at once never both
// hold a delivery; a failed attempt is retried after its backoff and given up after
// the bound; a claim that expired (its node died) is claimed again.
func TestClaimDeliveriesExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := twoNodes(t)
	sc := analyticsTenant(t, a)
	op := schema.Change{Actor: "operator"}
	for range 2 {
		if _, err := a.CreateWebhook(ctx, op, sc, schema.Webhook{ID: schema.NewWebhookID(), URL: "https://hooks.example.com/k", SealedSecret: []byte("sealed")}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if _, ok, err := a.RaiseAlert(ctx, sc, schema.Alert{IdentityID: uuid.NewString(), Kind: "deny_burst", Value: "w", Reason: "r" + string(rune('a'+i))}, time.Hour); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	// 20 alerts × 2 webhooks = 40 deliveries, claimed by both nodes racing.
	var mu sync.Mutex
	held := map[[2]string]string{}
	var wg sync.WaitGroup
	for _, s := range []*schema.Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cs, err := s.ClaimDeliveries(ctx, sc, time.Hour, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(cs) == 0 {
					return
				}
				mu.Lock()
				for _, c := range cs {
					k := [2]string{c.AlertID, c.WebhookID}
					if prev, dup := held[k]; dup {
						t.Errorf("delivery %v claimed twice (%s first)", k, prev)
					}
					held[k] = "claimed"
					if c.URL == "" || c.Alert.ID != c.AlertID || c.Attempts != 1 {
						t.Errorf("claimed %+v", c)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(held) != 40 {
		t.Fatalf("claimed %d deliveries, want 40", len(held))
	}

	// One delivery, through its life: a failure makes it pending again after the
	// backoff; at the bound it fails for good.
	as, _, err := a.ListAlerts(ctx, sc, schema.AlertFilter{}, schema.Page{Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	d := as[0].Deliveries[0]
	if ds := deliveryOf(t, a, sc, d); ds.State != "sending" || ds.Attempts != 1 {
		t.Fatalf("claimed delivery: %+v", ds)
	}
	// Whichever node holds it finishes it; the other cannot.
	holder, other := a, b
	state, err := a.FinishDelivery(ctx, sc, d, "answered 500", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if state == "" {
		holder, other = b, a
		if state, err = b.FinishDelivery(ctx, sc, d, "answered 500", 0, 2); err != nil {
			t.Fatal(err)
		}
	}
	if state != "pending" {
		t.Fatalf("after a first failure: %q, want pending", state)
	}
	again := claimOne(t, holder, sc, d)
	if again.Attempts != 2 {
		t.Fatalf("second claim: attempts %d", again.Attempts)
	}
	if state, err := other.FinishDelivery(ctx, sc, again.Delivery, "x", 0, 2); err != nil || state != "" {
		t.Fatalf("a node finished a claim it does not hold: %q %v", state, err)
	}
	if state, err := holder.FinishDelivery(ctx, sc, again.Delivery, "timeout", 0, 2); err != nil || state != "failed" {
		t.Fatalf("at the bound: %q %v, want failed", state, err)
	}
	if got := deliveryOf(t, a, sc, d); got.State != "failed" || got.LastError != "timeout" || got.Attempts != 2 {
		t.Fatalf("recorded %+v", got)
	}
	if cs, err := a.ClaimDeliveries(ctx, sc, time.Hour, 100); err != nil || len(cs) != 0 {
		t.Fatalf("a failed delivery or live claims were claimed again: %d %v", len(cs), err)
	}
}

// claimOne claims until it gets d (other due deliveries may come first).
func claimOne(t *testing.T, s *schema.Store, sc schema.Scope, d schema.Delivery) schema.ClaimedDelivery {
	t.Helper()
	cs, err := s.ClaimDeliveries(context.Background(), sc, time.Hour, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.AlertID == d.AlertID && c.WebhookID == d.WebhookID {
			return c
		}
	}
	t.Fatalf("delivery %s/%s not claimable", d.AlertID, d.WebhookID)
	return schema.ClaimedDelivery{}
}

func deliveryOf(t *testing.T, s *schema.Store, sc schema.Scope, d schema.Delivery) schema.Delivery {
	t.Helper()
	as, _, err := s.ListAlerts(context.Background(), sc, schema.AlertFilter{}, schema.Page{Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		for _, x := range a.Deliveries {
			if x.AlertID == d.AlertID && x.WebhookID == d.WebhookID {
				return x
			}
		}
	}
	t.Fatalf("no delivery %s/%s", d.AlertID, d.WebhookID)
	return schema.Delivery{}
}
