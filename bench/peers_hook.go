package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyplane/keyplane/deploy"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// CheckTarget is a one-node keyplane cluster on a private PostgreSQL, seeded with the
// load bench's data (bench/README.md "Data"), for measuring a fresh Check next to other
// systems (package bench/peers). Its fields are read-only; Check is safe for
// concurrent use. Stop it when done.
type CheckTarget struct {
	Cluster    *deploy.Cluster // Cluster.Postgres is the private PostgreSQL; Cluster.Nodes[0] the node
	Tenant     string
	Region     string   // the tenant's home region (its rows' crdb_region)
	Identities []string // identity i's id
	Groups     []string // Groups[j] holds the members of Roles[j]
	Roles      []string
	Resources  int    // resources are ResourceName(0 .. Resources-1)
	Permission string // the permission every role grants

	e     *env
	check keyplanev1connect.CheckServiceClient
}

// Parallel runs f(k) for k in [0, n) on w workers, stopping at the first error: the
// load bench's seeding helper.
func Parallel(ctx context.Context, n, w int, f func(ctx context.Context, k int) error) error {
	return parallel(ctx, n, w, f)
}

// WriteFile creates path, and its directory, with what write writes.
func WriteFile(path string, write func(io.Writer) error) error { return writeFile(path, write) }

// ResourceName is the name of resource i in the seeded data, as a Check names it.
func ResourceName(i int) string { return fmt.Sprintf("res/%d/doc", i) }

// DescribeMachine describes where a bench runs (CPUs, memory, OS, versions), as the
// load bench's report does.
func DescribeMachine(version string) Machine { return describeMachine(version) }

// StartCheckTarget starts the cluster and seeds one tenant with cfg's shape
// (Identities, Roles, Resources; Binary and Progress as for Run).
func StartCheckTarget(ctx context.Context, cfg Config) (*CheckTarget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	regions := deploy.DefaultRegions[:1]
	cl, err := deploy.Start(ctx, deploy.Config{Binary: cfg.Binary, Regions: regions, NodesPerRegion: 1, Durable: true,
		ServeArgs: []string{"--token-rate-per-ip", "off", "--token-rate-per-tenant", "off",
			"--introspect-rate-per-ip", "off", "--introspect-rate-per-tenant", "off",
			"--decision-rate-per-tenant", "off", "--write-rate-per-tenant", "off"}})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			cl.Stop()
		}
	}()
	pool, err := pgxpool.New(ctx, cl.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("seeding pool: %w", err)
	}
	defer pool.Close()
	hc := &http.Client{Transport: newTransport()}
	e := &env{cl: cl, hc: hc, pool: pool, regions: regions,
		operator: connect.WithInterceptors(client.Bearer(cl.OperatorSecret), client.Tenant())}
	if err := seedAll(ctx, e, cfg, cfg.Progress); err != nil {
		return nil, fmt.Errorf("%w%s", err, nodeErrors(cl))
	}
	e.pool = nil // closed on return; the target needs no pool
	t := e.tenants[0]
	ok = true
	return &CheckTarget{Cluster: cl, Tenant: t.id, Region: t.home, Identities: t.identities, Groups: t.groups, Roles: t.roles,
		Resources: t.resources, Permission: benchPermission, e: e,
		check: keyplanev1connect.NewCheckServiceClient(hc, cl.Nodes[0].URL, e.operator)}, nil
}

// Check asks the node, through Connect, whether identity i may read resource r, fully
// consistent (the tenant's current policy revision is read), as the load bench's
// check workload does.
func (t *CheckTarget) Check(ctx context.Context, i, r int) (bool, error) {
	resp, err := t.check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.Tenant,
		Principal:   &keyplanev1.CheckRequest_IdentityId{IdentityId: t.Identities[i]},
		Permission:  t.Permission,
		Resource:    ResourceName(r),
		Consistency: &keyplanev1.Consistency{Requirement: &keyplanev1.Consistency_FullyConsistent{FullyConsistent: true}}}))
	if err != nil {
		return false, err
	}
	return resp.Msg.Allowed, nil
}

// NodePid is the keyplane node's process id (0 when it is not running).
func (t *CheckTarget) NodePid() int { return t.Cluster.Nodes[0].Pid() }

// Stop stops the node and PostgreSQL.
func (t *CheckTarget) Stop() { t.Cluster.Stop() }
