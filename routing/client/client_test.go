package client_test

import (
	"context"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

func TestTenantHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tenant string // request's tenant_id
		header string // Keyplane-Tenant set by the caller
		want   string // seen by the server
	}{
		{name: "set from tenant_id", tenant: "t-acme", want: "t-acme"},
		{name: "caller's header kept", tenant: "t-acme", header: "t-other", want: "t-other"},
		{name: "empty tenant_id sets nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := new(callLog)
			url := startServer(t, "eu", behaviour{}, log)
			_, auth := newClient(t, quick(client.Endpoint{Region: "eu-west", URL: url}))
			req := connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: tt.tenant, Token: "tok"})
			if tt.header != "" {
				req.Header().Set(client.TenantHeader, tt.header)
			}
			if _, err := auth.ValidateToken(context.Background(), req); err != nil {
				t.Fatalf("ValidateToken: %v", err)
			}
			if got := log.lastTenant(); got != tt.want {
				t.Errorf("server saw %s %q, want %q", client.TenantHeader, got, tt.want)
			}
		})
	}
}

func TestOrderBeforeProbes(t *testing.T) {
	t.Parallel()
	eps := []client.Endpoint{
		{Region: "eu-west", URL: "http://eu-1.invalid"},
		{Region: "us-east", URL: "http://us-1.invalid"},
		{Region: "eu-west", URL: "http://eu-2.invalid"},
		{Region: "ap-south", URL: "http://ap-1.invalid"},
	}
	tests := []struct {
		name   string
		prefer []string
		want   []string
	}{
		{name: "configuration order, by region", want: []string{"http://eu-1.invalid", "http://eu-2.invalid", "http://us-1.invalid", "http://ap-1.invalid"}},
		{name: "preferred regions first", prefer: []string{"ap-south", "us-east"}, want: []string{"http://ap-1.invalid", "http://us-1.invalid", "http://eu-1.invalid", "http://eu-2.invalid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := quick(eps...)
			cfg.Prefer = tt.prefer
			c, _ := newClient(t, cfg)
			var got []string
			for _, s := range c.Endpoints() {
				got = append(got, s.URL)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Endpoints() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNearest checks that probes rank endpoints by round trip, and that Prefer
// overrides it. The far server answers /readyz and calls slowly; the test waits
// for the probes to have measured that, then looks where a call goes.
func TestNearest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prefer []string
		want   string
	}{
		{name: "lowest round trip", want: "near"},
		{name: "Prefer overrides round trip", prefer: []string{"far-region"}, want: "far"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := new(callLog)
			far := startServer(t, "far", behaviour{delay: 200 * time.Millisecond}, log)
			near := startServer(t, "near", behaviour{}, log)
			cfg := quick(
				client.Endpoint{Region: "far-region", URL: far}, // first: config order would pick it
				client.Endpoint{Region: "near-region", URL: near},
			)
			cfg.Prefer = tt.prefer
			cfg.ProbeInterval = 50 * time.Millisecond
			c, auth := newClient(t, cfg)
			waitFor(t, "probes to rank far slower than near", func() bool {
				rtt := make(map[string]time.Duration)
				for _, s := range c.Endpoints() {
					rtt[s.URL] = s.RTT
				}
				return rtt[near] > 0 && rtt[far] > rtt[near]
			})
			res, err := auth.ValidateToken(context.Background(), connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "t", Token: "tok"}))
			if err != nil {
				t.Fatalf("ValidateToken: %v", err)
			}
			if got := res.Header().Get(regionHeader); got != tt.want {
				t.Errorf("served by %q, want %q (endpoints %+v)", got, tt.want, c.Endpoints())
			}
			for _, s := range c.Endpoints() {
				if !s.Ready {
					t.Errorf("endpoint %s not ready after probing", s.URL)
				}
			}
		})
	}
}

// proberRunning reports whether a goroutine of any Client's prober exists.
func proberRunning() bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Contains(string(buf[:n]), "routing/client.(*Client).probe")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestCloseStopsProber(t *testing.T) {
	// Not parallel: proberRunning sees the probers of every Client in the process.
	tests := []struct {
		name string
		b    behaviour
	}{
		{name: "between rounds"},
		{name: "probe in flight", b: behaviour{hang: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startServer(t, "eu", tt.b, new(callLog))
			cfg := quick(client.Endpoint{Region: "eu-west", URL: url})
			cfg.ProbeInterval = 10 * time.Millisecond
			c, err := client.New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			waitFor(t, "the prober to start", proberRunning)
			c.Close()
			if proberRunning() {
				t.Error("prober still running after Close")
			}
			c.Close() // idempotent
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := func() client.Config {
		return client.Config{Endpoints: []client.Endpoint{
			{Region: "eu-west", URL: "http://127.0.0.1:8080"},
			{Region: "us-east", URL: "https://us.example.com"},
		}}
	}
	tests := []struct {
		name      string
		edit      func(*client.Config)
		wantField string // "" means valid
	}{
		{name: "zero values are defaults", edit: func(*client.Config) {}},
		{name: "DefaultConfig", edit: func(c *client.Config) {
			eps := c.Endpoints
			*c = client.DefaultConfig()
			c.Endpoints = eps
		}},
		{name: "trailing slash", edit: func(c *client.Config) { c.Endpoints[0].URL += "/" }},
		{name: "no endpoints", edit: func(c *client.Config) { c.Endpoints = nil }, wantField: "Endpoints"},
		{name: "no region", edit: func(c *client.Config) { c.Endpoints[1].Region = "" }, wantField: "Endpoints[1].Region"},
		{name: "no scheme", edit: func(c *client.Config) { c.Endpoints[0].URL = "127.0.0.1:8080" }, wantField: "Endpoints[0].URL"},
		{name: "path", edit: func(c *client.Config) { c.Endpoints[0].URL = "http://h/api" }, wantField: "Endpoints[0].URL"},
		{name: "duplicate", edit: func(c *client.Config) { c.Endpoints[1].URL = c.Endpoints[0].URL }, wantField: "Endpoints[1].URL"},
		{name: "unknown preferred region", edit: func(c *client.Config) { c.Prefer = []string{"eu-wset"} }, wantField: "Prefer[0]"},
		{name: "repeated preferred region", edit: func(c *client.Config) { c.Prefer = []string{"us-east", "us-east"} }, wantField: "Prefer[1]"},
		{name: "negative attempt timeout", edit: func(c *client.Config) { c.AttemptTimeout = -1 }, wantField: "AttemptTimeout"},
		{name: "negative attempts", edit: func(c *client.Config) { c.MaxAttempts = -1 }, wantField: "MaxAttempts"},
		{name: "negative backoff", edit: func(c *client.Config) { c.BackoffBase = -1 }, wantField: "BackoffBase"},
		{name: "backoff ceiling below base", edit: func(c *client.Config) { c.BackoffBase = 2 * time.Second }, wantField: "BackoffMax"},
		{name: "budget above 1", edit: func(c *client.Config) { c.RetryBudget = 1.5 }, wantField: "RetryBudget"},
		{name: "budget NaN", edit: func(c *client.Config) { c.RetryBudget = math.NaN() }, wantField: "RetryBudget"},
		{name: "negative min retries", edit: func(c *client.Config) { c.MinRetries = -1 }, wantField: "MinRetries"},
		{name: "negative cooldown", edit: func(c *client.Config) { c.DownFor = -time.Second }, wantField: "DownFor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantField == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantField == "":
				return
			case err == nil:
				t.Fatalf("Validate() = nil, want an error naming %s", tt.wantField)
			case !strings.Contains(err.Error(), tt.wantField+":"):
				t.Errorf("Validate() = %q, want it to name %s", err, tt.wantField)
			}
			if _, newErr := client.New(cfg); newErr == nil || newErr.Error() != err.Error() {
				t.Errorf("New() error = %v, want %v", newErr, err)
			}
		})
	}
}

// CreateTenant names the tenant it creates in the header, so that it takes an
// idempotency key (a retry then gets the one admin client secret).
func TestCreateTenantCarriesItsTenantAndAKey(t *testing.T) {
	t.Parallel()
	log := new(callLog)
	url := startServer(t, "eu", behaviour{}, log)
	c, _ := newClient(t, quick(client.Endpoint{Region: "eu-west", URL: url}))
	admin := keyplanev1connect.NewAdminServiceClient(c.HTTPClient(), client.BaseURL, c.Options()...)
	if _, err := admin.CreateTenant(context.Background(), connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "t-new", Name: "New"})); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if got := log.lastTenant(); got != "t-new" {
		t.Errorf("server saw %s %q, want %q", client.TenantHeader, got, "t-new")
	}
	if keys := log.idempotencyKeys(); len(keys) != 1 || keys[0] == "" {
		t.Errorf("server saw idempotency keys %q, want one", keys)
	}
}
