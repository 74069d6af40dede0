package bench_test

import (
	"context"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// keyplaneBinary builds cmd/keyplane once per benchmark binary: the cluster runs its
// nodes as separate processes.
func keyplaneBinary(b *testing.B) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keyplane-bench-")
		if err != nil {
			buildErr = err
			return
		}
		binPath, buildErr = deploy.Build(dir)
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

// BenchmarkRoutes measures ValidateToken as an application in eu-west sees it, over
// the local cluster's simulated WAN (default matrix), one call at a time:
//
//   - local: a tenant homed in eu-west;
//   - forwarded-us-east / forwarded-ap-south: tenants homed 70 ms / 150 ms away, the
//     request forwarded once, whole;
//   - degraded: eu-west cut off from us-east, the us-east tenant served in eu-west.
//
// Each reports p50 and p99 in ms next to rtt-ms, the configured round trip to the
// home region; a forwarded call should cost one round trip plus local service time
// (over-rtt-ms), never one round trip per statement. In the local cluster every
// region shares one PostgreSQL, so degraded serving here does not pay the
// cross-region statement latency it pays on CockroachDB.
func BenchmarkRoutes(b *testing.B) {
	ctx := context.Background()
	cl, err := deploy.Start(ctx, deploy.Config{Binary: keyplaneBinary(b), Regions: deploy.DefaultRegions, NodesPerRegion: 1, RTT: func(a, b string) time.Duration {
		if os.Getenv("ZERO") != "" {
			return 0
		}
		return deploy.DefaultRTT(a, b)
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Stop()
	tokens := map[string]string{}
	for _, home := range deploy.DefaultRegions {
		tokens[home] = seedToken(b, ctx, cl.RegionNodes(home)[0].URL, "t-"+home, home, cl.OperatorSecret)
	}
	from := "eu-west"
	url := cl.ClientURLs(from, from)[0]
	cases := []struct {
		name, home string
		cut        bool
	}{
		{"local", "eu-west", false},
		{"forwarded-us-east", "us-east", false},
		{"forwarded-ap-south", "ap-south", false},
		{"degraded", "us-east", true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if c.cut {
				if err := cl.Partition(from, c.home, false); err != nil {
					b.Fatal(err)
				}
				defer func() { _ = cl.Heal(from, c.home) }()
			}
			tenant := "t-" + c.home
			auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, url, connect.WithInterceptors(client.Tenant()))
			req := &keyplanev1.ValidateTokenRequest{TenantId: tenant, Token: tokens[c.home]}
			want := map[string]string{"local": routing.RouteLocal, "degraded": routing.RouteDegraded}[c.name]
			if want == "" {
				want = routing.RouteForwarded
			}
			// Warm the connections (client → region, region → home) before timing.
			for range 3 {
				if _, err := auth.ValidateToken(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
			}
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				resp, err := auth.ValidateToken(ctx, connect.NewRequest(req))
				lat = append(lat, time.Since(start))
				if err != nil || !resp.Msg.Active {
					b.Fatalf("validate: %v", err)
				}
				if got := resp.Header().Get(routing.RouteHeader); got != want {
					b.Fatalf("route %q, want %q", got, want)
				}
			}
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			p50, p99 := lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
			// The configured round trips on the way: application → its region, and for a
			// forward, region → home region.
			rtt := cl.RTT(from, from)
			if want == routing.RouteForwarded {
				rtt += cl.RTT(from, c.home)
			}
			b.ReportMetric(ms(p50), "p50-ms")
			b.ReportMetric(ms(p99), "p99-ms")
			b.ReportMetric(ms(rtt), "rtt-ms")
			b.ReportMetric(ms(p50-rtt), "over-rtt-ms")
		})
	}
}

// seedToken creates a tenant homed in home with a service account and returns an
// access token for it, seeding through a node of the home region.
func seedToken(b *testing.B, ctx context.Context, homeURL, tenant, home, secret string) string {
	b.Helper()
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, homeURL, connect.WithInterceptors(client.Bearer(secret), client.Tenant()))
	t, err := seed.NewTenant(ctx, admin, seed.Spec{ID: tenant, Home: home, Purpose: "route benchmark"})
	if err != nil {
		b.Fatal(err)
	}
	key, err := t.APIKey(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, homeURL, connect.WithInterceptors(client.Tenant()))
	tok, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: tenant, ApiKey: key}))
	if err != nil {
		b.Fatal(err)
	}
	return tok.Msg.Token.AccessToken
}
