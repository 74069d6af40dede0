package demo

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/seed"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// Config configures a demo. Zero fields take the defaults noted.
type Config struct {
	Regions        []string  // primary first; empty means deploy.DefaultRegions
	NodesPerRegion int       // `keyplane serve` processes per region; 0 means 2
	StateFile      string    // where to write the State as JSON; "" writes none
	Binary         string    // keyplane executable for the nodes; "" means this process
	Out            io.Writer // the tour and the instructions; nil for none
}

// DefaultConfig is the demo `make demo` runs: three regions, two nodes in each.
func DefaultConfig() Config {
	return Config{Regions: slices.Clone(deploy.DefaultRegions), NodesPerRegion: 2}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if len(c.Regions) == 0 {
		c.Regions = d.Regions
	}
	c.NodesPerRegion = cmp.Or(c.NodesPerRegion, d.NodesPerRegion)
	if c.Out == nil {
		c.Out = io.Discard
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if c.NodesPerRegion < 0 || c.NodesPerRegion > 5 {
		return fmt.Errorf("nodes per region: between 1 and 5, got %d", c.NodesPerRegion)
	}
	if len(c.Regions) > 6 {
		return fmt.Errorf("regions: give 1 to 6, got %d", len(c.Regions))
	}
	for i, r := range c.Regions {
		if r == "" || slices.Contains(c.Regions[:i], r) {
			return fmt.Errorf("regions: %q is empty or named twice", r)
		}
	}
	return nil
}

// Demo is a running demo cluster, seeded and toured. Call Stop once when done.
type Demo struct {
	// State describes the cluster and the seeded tenants; Start wrote it to the state
	// file.
	State State

	cluster   *deploy.Cluster
	issuer    *ciIssuer // the federation tour's simulated CI issuer; nil before it ran
	stateFile string
	out       io.Writer
}

// Start starts PostgreSQL and the nodes behind the simulated WAN, seeds a tenant homed
// in each region, runs the tour (failing on any wrong answer), writes the instructions
// to cfg.Out and, last, the state file: whoever waits for the file finds the cluster
// seeded. On error, everything started is stopped again.
func Start(ctx context.Context, cfg Config) (*Demo, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "starting PostgreSQL, %d keyplane nodes in %d regions and the simulated WAN…\n",
		len(cfg.Regions)*cfg.NodesPerRegion, len(cfg.Regions))
	cl, err := deploy.Start(ctx, deploy.Config{Binary: cfg.Binary, Regions: cfg.Regions, NodesPerRegion: cfg.NodesPerRegion,
		Durable: true, ServeArgs: []string{"--governance-sweep-every", sweepEvery.String()}})
	if err != nil {
		return nil, err
	}
	d := &Demo{State: newState(cl), cluster: cl, out: cfg.Out}
	ok := false
	defer func() {
		if !ok {
			d.Stop()
		}
	}()
	for _, r := range d.State.Regions {
		tn, err := seedTenant(ctx, cl, r, "demo-"+r.Name)
		if err != nil {
			return nil, err
		}
		d.State.Tenants = append(d.State.Tenants, tn)
	}
	if err := runTour(ctx, cfg.Out, d.State); err != nil {
		return nil, fmt.Errorf("tour: %w", err)
	}
	if err := runLeaverTour(ctx, cfg.Out, d.State); err != nil {
		return nil, fmt.Errorf("leaver tour: %w", err)
	}
	if d.issuer, err = runFederationTour(ctx, cfg.Out, d.State); err != nil {
		return nil, fmt.Errorf("federation tour: %w", err)
	}
	if err := runGovernanceTour(ctx, cfg.Out, d.State); err != nil {
		return nil, fmt.Errorf("governance tour: %w", err)
	}
	writeGuide(cfg.Out, cl, d.State, cfg.StateFile)
	if cfg.StateFile != "" {
		d.stateFile = cfg.StateFile
		b, err := json.MarshalIndent(d.State, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode state: %w", err)
		}
		if err := os.WriteFile(cfg.StateFile, append(b, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("write state file: %w", err)
		}
	}
	ok = true
	return d, nil
}

// Stop removes the state file and stops the simulated CI issuer, the nodes, the
// proxies and PostgreSQL, removing their temporary directories.
func (d *Demo) Stop() {
	if d.stateFile != "" {
		_ = os.Remove(d.stateFile)
	}
	if d.issuer != nil {
		d.issuer.Close()
	}
	d.cluster.Stop()
}

// Run starts the demo, keeps it running until ctx ends, then stops it.
func Run(ctx context.Context, cfg Config) error {
	d, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(d.out, "\nstopping the nodes, the proxies and PostgreSQL…")
	d.Stop()
	return nil
}

// newState describes a running cluster: every region's URLs and the round trips
// between regions. It has no tenants yet.
func newState(cl *deploy.Cluster) State {
	st := State{DatabaseURL: cl.DatabaseURL, FrontURL: cl.FrontURL, OperatorSecretFile: cl.SecretFile(),
		ClientURLs: map[string]map[string][]string{}, RTTMillis: map[string]map[string]int64{}}
	names := cl.Regions()
	for _, from := range names {
		st.ClientURLs[from], st.RTTMillis[from] = map[string][]string{}, map[string]int64{}
		for _, to := range names {
			st.ClientURLs[from][to] = cl.ClientURLs(from, to)
			st.RTTMillis[from][to] = cl.RTT(from, to).Milliseconds()
		}
		r := Region{Name: from, URLs: cl.ClientURLs(from, from)}
		r.URL = r.URLs[0]
		for _, n := range cl.RegionNodes(from) {
			r.NodeURLs = append(r.NodeURLs, n.URL)
			r.OperatorURLs = append(r.OperatorURLs, n.OperatorURL)
		}
		st.Regions = append(st.Regions, r)
	}
	return st
}

// seedTenant creates a tenant homed in region r with an admin identity and an admin
// OAuth client, through the region's own node (so the writes are local).
func seedTenant(ctx context.Context, cl *deploy.Cluster, r Region, id string) (Tenant, error) {
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, r.NodeURLs[0],
		connect.WithInterceptors(client.Bearer(cl.OperatorSecret), client.Tenant()))
	t, err := seed.NewTenant(ctx, admin, seed.Spec{ID: id, Home: r.Name, Name: "Demo tenant homed in " + r.Name,
		OwnerName: "Demo Admin", OwnerEmail: "admin@" + id + ".example",
		Purpose: "the demo's OAuth client: gets tokens, introspects and revokes them", ServiceName: "demo admin client"})
	if err != nil {
		return Tenant{}, err
	}
	clientID, secret, err := t.Client(ctx, admin, "demo admin client", true)
	if err != nil {
		return Tenant{}, err
	}
	return Tenant{ID: id, HomeRegion: r.Name, AdminID: t.OwnerID, Issuer: t.Issuer, ClientID: clientID, ClientSecret: secret,
		TenantAdminID: t.AdminID, TenantAdminClient: t.AdminClientID, TenantAdminSecret: t.AdminClientSecret}, nil
}
