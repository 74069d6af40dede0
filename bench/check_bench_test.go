package bench_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// checkEnv is a tenant with 1,000 identities in 3 of 30 groups, 100 roles, each group
// bound to 4 roles on scopes under projects/, and one direct binding per identity.
type checkEnv struct {
	*benchEnv
	check      keyplanev1connect.CheckServiceClient
	identities []string
	role       string
	sc         schema.Scope
}

func setupCheck(b *testing.B) *checkEnv { return seedCheck(b, setup(b)) }

// seedCheck adds the check data to base's tenant, straight through its store.
func seedCheck(b *testing.B, base *benchEnv) *checkEnv {
	b.Helper()
	ctx := context.Background()
	env := &checkEnv{benchEnv: base, sc: schema.Scope{TenantID: "bench", Region: "us-east"}}
	env.check = keyplanev1connect.NewCheckServiceClient(env.hc, env.url, connect.WithInterceptors(env.operator))
	op := schema.Change{Actor: "bench"}
	var roles []string
	for i := range 100 {
		r, _, err := env.store.CreateRole(ctx, op, env.sc, schema.Role{Name: fmt.Sprintf("role-%d", i),
			Permissions: []string{fmt.Sprintf("svc%d.doc.read", i%10), fmt.Sprintf("svc%d.doc.*", (i+1)%10)}})
		if err != nil {
			b.Fatal(err)
		}
		roles = append(roles, r.ID)
	}
	env.role = roles[0]
	var groups []string
	for i := range 30 {
		g, _, err := env.store.CreateGroup(ctx, op, env.sc, schema.Group{Name: fmt.Sprintf("group-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		groups = append(groups, g.ID)
		for j := range 4 {
			if _, _, err := env.store.CreateBinding(ctx, op, env.sc, schema.Binding{Effect: "allow", PrincipalKind: "group", PrincipalID: g.ID,
				RoleID: roles[(i*4+j)%100], Scope: fmt.Sprintf("projects/p%d/", (i+j)%50)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range 1000 {
		id, err := env.store.CreateIdentity(ctx, op, env.sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: fmt.Sprintf("user %d", i)})
		if err != nil {
			b.Fatal(err)
		}
		env.identities = append(env.identities, id.ID)
		for k := range 3 {
			if _, err := env.store.SetMembership(ctx, op, env.sc, groups[(i+k*7)%30], id.ID, true); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := env.store.CreateBinding(ctx, op, env.sc, schema.Binding{Effect: "allow", PrincipalKind: "identity", PrincipalID: id.ID,
			RoleID: roles[i%100], Scope: fmt.Sprintf("projects/p%d/", i%50)}); err != nil {
			b.Fatal(err)
		}
	}
	// Fresh tables have no statistics yet; a running database would (autovacuum).
	if _, err := env.store.Pool().Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
	return env
}

// baselineBindings is the same logical read as a check, done directly with pgx: the
// principal's bindings (direct and through its groups) at its home partition.
func (e *checkEnv) baselineBindings(ctx context.Context, identity string) error {
	rows, err := e.store.Pool().Query(ctx, `
SELECT id, role_id, scope, effect, condition FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND principal_id = $3
UNION ALL
SELECT b.id, b.role_id, b.scope, b.effect, b.condition FROM group_members m
JOIN bindings b ON b.crdb_region = m.crdb_region AND b.tenant_id = m.tenant_id AND b.principal_id = m.group_id
WHERE m.crdb_region = $1 AND m.tenant_id = $2 AND m.identity_id = $3`, "us-east", "bench", identity)
	if err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	if n == 0 {
		return fmt.Errorf("no bindings for %s", identity)
	}
	return rows.Err()
}

// BenchmarkCheck: a fresh (fully consistent) Check over HTTP with the policy cached
// (one revision read, one identity read, in-memory evaluation); the same with a policy
// write every 100 checks (reload); and the raw read of the principal's bindings.
func BenchmarkCheck(b *testing.B) {
	env := setupCheck(b)
	var next atomic.Int64
	pick := func() string { return env.identities[int(next.Add(1))%len(env.identities)] }
	b.Run("baseline-sql", func(b *testing.B) {
		parallel(b, func(ctx context.Context) error { return env.baselineBindings(ctx, pick()) })
	})
	check := func(b *testing.B, writeEvery int64) {
		var n atomic.Int64
		parallel(b, func(ctx context.Context) error {
			if writeEvery > 0 && n.Add(1)%writeEvery == 0 {
				if _, _, err := env.store.CreateRole(ctx, schema.Change{Actor: "bench"}, env.sc, schema.Role{
					Name: fmt.Sprintf("r-%d", time.Now().UnixNano()), Permissions: []string{"x.y.z"}}); err != nil {
					return err
				}
			}
			_, err := env.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: "bench",
				Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: pick()}, Permission: "svc1.doc.read", Resource: "projects/p1/doc"}))
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			return nil
		})
	}
	b.Run("keyplane-cached", func(b *testing.B) { check(b, 0) })
	b.Run("keyplane-reload-every-100", func(b *testing.B) { check(b, 100) })
}
