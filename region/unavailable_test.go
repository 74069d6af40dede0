package region_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/pglocal"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestDatabaseDown: with the database gone, calls fail with Unavailable and the node
// reports not ready; when it comes back the node recovers without a restart.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, err := pglocal.Start(ctx, pglocal.Config{Durable: true}) // a crash must not lose commits
	if err != nil {
		t.Fatalf("private postgres: %v", err)
	}
	defer func() {
		if err := pg.Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	}()
	if err := pg.CreateDatabase(ctx, "kp", ""); err != nil {
		t.Fatal(err)
	}
	pool, err := schema.Open(ctx, pg.URL("kp"), schema.PoolConfig{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schematest.MigrateConfig()); err != nil {
		t.Fatal(err)
	}
	url := testNode(t, schema.New(pool, schema.Config{Region: "us-east", Node: "n1"}), nodeConfig())
	c := adminClient(url, secret)
	list := func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.ListTenants(cctx, connect.NewRequest(&keyplanev1.ListTenantsRequest{}))
		return err
	}
	readyz := func() int {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if err := list(); err != nil || readyz() != 200 {
		t.Fatalf("before the outage: %v, readyz %d", err, readyz())
	}

	pg.Crash()
	err = list()
	wantCode(t, err, connect.CodeUnavailable, "database unavailable")
	// Readiness shares one ping a second between probes: red by the next interval.
	for start := time.Now(); readyz() != http.StatusServiceUnavailable; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("readyz still 200 5s into the outage, want 503 within the readiness interval (1s)")
		}
	}
	_, err = c.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "acme", Name: "A", HomeRegion: "us-east"}))
	if code := connect.CodeOf(err); code != connect.CodeUnavailable {
		t.Fatalf("write during the outage: %v, want Unavailable", err)
	}

	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for list() != nil || readyz() != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("node did not recover within 30s: %v", list())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
