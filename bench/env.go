package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
)

// Permission every bench role grants; resources are "res/<n>/doc".
const benchPermission = "bench.doc.read"

// tokenPrincipals is how many principals per tenant check-token presents a token for
// (at most --identities): service accounts, since API keys are for non-human
// identities, each in 3 roles' groups like the identities and with an access token
// minted from its own API key at seeding.
const tokenPrincipals = 500

// tenant is one seeded tenant and what the workloads pick from.
type tenant struct {
	id, home     string
	identities   []string
	groups       []string // groups[i] holds the members of roles[i]
	roles        []string
	resources    int
	apiKey       string
	clientID     string
	clientSecret string
	sessions     []session // tokens to validate
	// principals are live access tokens of service accounts in 3 roles' groups each,
	// one per account: the principals check-token checks.
	principals []session
	// toggler flips its membership of groups[0] in check-reload.
	toggler string
	member  atomic.Bool
	revoke  chan string // tokens minted for the revoke workload
}

type session struct{ token, id string }

// env is a running cluster with seeded data.
type env struct {
	cl       *deploy.Cluster
	hc       *http.Client
	pool     *pgxpool.Pool // baseline reads
	tenants  []*tenant
	multi    bool
	operator connect.Option
	// regions are the cluster's regions; worker w is placed in regions[w%len].
	regions []string
}

// workerRegion places worker w in a region (round robin) in multi-region mode.
func (e *env) workerRegion(w int) string { return e.regions[w%len(e.regions)] }

// url is where worker w sends its calls: in multi-region mode its own region's node
// through the simulated client latency; otherwise the node itself.
func (e *env) url(w int) string {
	r := e.workerRegion(w)
	if e.multi {
		urls := e.cl.ClientURLs(r, r)
		return urls[w/len(e.regions)%len(urls)]
	}
	nodes := e.cl.RegionNodes(r)
	return nodes[w%len(nodes)].URL
}

// pick returns the tenant worker w works on: in multi-region mode any tenant (so two
// thirds of the calls are forwarded), else the one tenant.
func (e *env) pick() *tenant { return e.tenants[rand.IntN(len(e.tenants))] }

// rtt is the configured round trip a call from worker w for t pays.
func (e *env) rtt(w int, t *tenant, route string) time.Duration {
	if !e.multi {
		return 0
	}
	r := e.workerRegion(w)
	d := e.cl.RTT(r, r)
	if route == routing.RouteForwarded {
		d += e.cl.RTT(r, t.home)
	}
	return d
}

// seedAll creates one tenant per region with the configured shape, through the API of a
// node of the tenant's home region, with parallel workers.
func seedAll(ctx context.Context, e *env, cfg Config, log io.Writer) (err error) {
	// Seeding is a bulk load, not what is measured: commits need not wait for the WAL
	// flush meanwhile. Durability is back on before any workload runs.
	if _, serr := e.pool.Exec(ctx, "ALTER SYSTEM SET synchronous_commit = off"); serr == nil {
		_, _ = e.pool.Exec(ctx, "SELECT pg_reload_conf()")
		defer func() {
			_, rerr := e.pool.Exec(context.WithoutCancel(ctx), "ALTER SYSTEM RESET synchronous_commit")
			_, lerr := e.pool.Exec(context.WithoutCancel(ctx), "SELECT pg_reload_conf()")
			if err == nil {
				err = errors.Join(rerr, lerr)
			}
		}()
	}
	for _, home := range e.regions {
		start := time.Now()
		t := &tenant{id: "bench-" + home, home: home, resources: cfg.Resources, revoke: make(chan string, 200_000)}
		if err := seedTenant(ctx, e, cfg, t); err != nil {
			return fmt.Errorf("seed %s: %w", t.id, err)
		}
		e.tenants = append(e.tenants, t)
		fmt.Fprintf(log, "seeded %s in %s: %d identities, %d token principals, %d roles, %d memberships, %d bindings (%.0fs)\n", t.id, home,
			len(t.identities), len(t.principals), len(t.roles), 3*(len(t.identities)+len(t.principals)), 2*t.resources, time.Since(start).Seconds())
	}
	// Fresh tables have no planner statistics yet; a running database would.
	_, err = e.pool.Exec(ctx, "ANALYZE")
	return err
}

// parallel runs f(i) for i in [0, n) on k workers, stopping at the first error.
func parallel(ctx context.Context, n, k int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func seedTenant(ctx context.Context, e *env, cfg Config, t *tenant) error {
	home := e.cl.RegionNodes(t.home)[0].URL
	admin := keyplanev1connect.NewAdminServiceClient(e.hc, home, e.operator)
	auth := keyplanev1connect.NewAuthServiceClient(e.hc, home, e.operator)
	st, err := seed.NewTenant(ctx, admin, seed.Spec{ID: t.id, Home: t.home, OwnerName: "bench owner", Purpose: "load bench",
		ServiceName: "bench client"})
	if err != nil {
		return err
	}
	t.toggler = st.OwnerID
	t.identities = make([]string, cfg.Identities)
	if err := parallel(ctx, cfg.Identities, 8, func(ctx context.Context, i int) error {
		r, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: t.id,
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: fmt.Sprintf("user %d", i)}))
		if err != nil {
			return err
		}
		t.identities[i] = r.Msg.Identity.Id
		return nil
	}); err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	principals, err := seedPrincipals(ctx, admin, auth, t, st.OwnerID, min(tokenPrincipals, cfg.Identities))
	if err != nil {
		return fmt.Errorf("token principals: %w", err)
	}
	t.roles, t.groups = make([]string, cfg.Roles), make([]string, cfg.Roles)
	for i := range cfg.Roles {
		r, err := admin.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: t.id,
			Name: fmt.Sprintf("role-%d", i), Permissions: []string{benchPermission}}))
		if err != nil {
			return err
		}
		g, err := admin.CreateGroup(ctx, connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: t.id, Name: fmt.Sprintf("role-%d members", i)}))
		if err != nil {
			return err
		}
		t.roles[i], t.groups[i] = r.Msg.Role.Id, g.Msg.Group.Id
	}
	// Policy writes all bump the tenant's revision, so they serialize on its row:
	// concurrent writers would only abort each other (40001) and back off. One writer.
	rng := rand.New(rand.NewPCG(1, 2))
	members := append(slices.Clone(t.identities), principals...)
	memberships := make([][3]int, len(members))
	for i := range memberships {
		p := rng.Perm(cfg.Roles)
		memberships[i] = [3]int{p[0], p[1%cfg.Roles], p[2%cfg.Roles]}
	}
	if err := parallel(ctx, len(members)*3, 1, func(ctx context.Context, k int) error {
		i, j := k/3, k%3
		if cfg.Roles < 3 && j >= cfg.Roles {
			return nil
		}
		_, err := admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: t.id,
			GroupId: t.groups[memberships[i][j]], IdentityId: members[i]}))
		return err
	}); err != nil {
		return fmt.Errorf("memberships: %w", err)
	}
	grants := make([][2]int, cfg.Resources)
	for i := range grants {
		p := rng.Perm(cfg.Roles)
		grants[i] = [2]int{p[0], p[1%cfg.Roles]}
	}
	if err := parallel(ctx, cfg.Resources*2, 1, func(ctx context.Context, k int) error {
		i, j := k/2, grants[k/2][k%2]
		_, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: t.id,
			Effect: keyplanev1.Effect_EFFECT_ALLOW, PrincipalKind: "group", PrincipalId: t.groups[j], RoleId: t.roles[j],
			Scope: fmt.Sprintf("res/%d/", i)}))
		return err
	}); err != nil {
		return fmt.Errorf("bindings: %w", err)
	}
	// A service account with an API key (exchange, validate, revoke) and an OAuth
	// client allowed to introspect every token of the tenant.
	if t.apiKey, err = st.APIKey(ctx, admin); err != nil {
		return err
	}
	if t.clientID, t.clientSecret, err = st.Client(ctx, admin, "bench introspection", true); err != nil {
		return err
	}
	t.sessions = make([]session, 256)
	return parallel(ctx, len(t.sessions), 8, func(ctx context.Context, i int) error {
		r, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey}))
		if err != nil {
			return err
		}
		t.sessions[i] = session{token: r.Msg.Token.AccessToken, id: r.Msg.Token.SessionId}
		return nil
	})
}

// seedPrincipals creates n service accounts owned by owner, each with an API key
// exchanged for an access token (t.principals), and returns their identity ids.
func seedPrincipals(ctx context.Context, admin keyplanev1connect.AdminServiceClient, auth keyplanev1connect.AuthServiceClient,
	t *tenant, owner string, n int) ([]string, error) {
	ids := make([]string, n)
	t.principals = make([]session, n)
	expires := time.Now().Add(30 * 24 * time.Hour)
	// Service accounts of one owner conflict with each other when created concurrently
	// (SERIALIZABLE, 40001 retries run out): one writer, as for policy writes.
	if err := parallel(ctx, n, 1, func(ctx context.Context, i int) error {
		sa, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: t.id,
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: fmt.Sprintf("principal %d", i), OwnerId: owner,
			Purpose: "load bench check-token principal", ExpireTime: timestamppb.New(expires)}))
		if err != nil {
			return err
		}
		ids[i] = sa.Msg.Identity.Id
		return nil
	}); err != nil {
		return nil, err
	}
	err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
		key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: t.id, IdentityId: ids[i],
			Name: "bench", ExpireTime: timestamppb.New(expires.Add(-24 * time.Hour))}))
		if err != nil {
			return fmt.Errorf("api key: %w", err)
		}
		tok, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: key.Msg.ApiKey}))
		if err != nil {
			return fmt.Errorf("exchange: %w", err)
		}
		t.principals[i] = session{token: tok.Msg.Token.AccessToken, id: tok.Msg.Token.SessionId}
		return nil
	})
	return ids, err
}

// mintForRevoke fills each tenant's revoke channel with n fresh tokens.
func mintForRevoke(ctx context.Context, e *env, n int) error {
	for _, t := range e.tenants {
		auth := keyplanev1connect.NewAuthServiceClient(e.hc, e.cl.RegionNodes(t.home)[0].URL, e.operator)
		if err := parallel(ctx, n, 8, func(ctx context.Context, _ int) error {
			r, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey}))
			if err != nil {
				return err
			}
			select {
			case t.revoke <- r.Msg.Token.AccessToken:
			default:
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

var errNoToken = errors.New("revoke workload ran out of minted tokens")
