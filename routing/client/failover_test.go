package client_test

import (
	"context"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// node is a fake server of a failover test.
type node struct {
	name, region string
	b            behaviour
}

// validate calls ValidateToken (NO_SIDE_EFFECTS) and reports the server's name.
func validate(ctx context.Context, auth keyplanev1connect.AuthServiceClient) (string, error) {
	res, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "t-acme", Token: "tok"}))
	if err != nil {
		return "", err
	}
	return res.Header().Get(regionHeader), nil
}

// exchange calls ExchangeAPIKey (no idempotency level) for a tenant, so the client
// gives it an idempotency key, and reports the server's name.
func exchange(ctx context.Context, auth keyplanev1connect.AuthServiceClient) (string, error) {
	res, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "t-acme", ApiKey: "kpk_x_y"}))
	if err != nil {
		return "", err
	}
	return res.Header().Get(regionHeader), nil
}

// exchangeUnkeyed calls ExchangeAPIKey naming no tenant: no idempotency key (nodes
// take keys on tenant-scoped calls only), so it is not retried once it may have
// arrived.
func exchangeUnkeyed(ctx context.Context, auth keyplanev1connect.AuthServiceClient) (string, error) {
	res, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{ApiKey: "kpk_x_y"}))
	if err != nil {
		return "", err
	}
	return res.Header().Get(regionHeader), nil
}

func TestFailover(t *testing.T) {
	t.Parallel()
	ok := behaviour{}
	tests := []struct {
		name          string
		nodes         []node // in configuration order
		call          func(context.Context, keyplanev1connect.AuthServiceClient) (string, error)
		attempt       time.Duration // Config.AttemptTimeout
		callerTimeout time.Duration // 0: no deadline
		wantServer    string        // "" when the call fails
		wantCode      connect.Code
		wantCalls     []string // servers that received the call, in order
		anyOrder      int      // the first anyOrder calls may come in any order (one region's endpoints take turns)
		sameKey       bool     // every attempt carried one Idempotency-Key
	}{
		{
			name:       "idempotent call fails over on Unavailable",
			nodes:      []node{{"eu", "eu-west", behaviour{code: connect.CodeUnavailable}}, {"us", "us-east", ok}},
			call:       validate,
			wantServer: "us",
			wantCalls:  []string{"eu", "us"},
		},
		{
			name: "next region after the nearest region's endpoints",
			nodes: []node{
				{"eu-1", "eu-west", behaviour{code: connect.CodeUnavailable}},
				{"us", "us-east", ok},
				{"eu-2", "eu-west", behaviour{code: connect.CodeUnavailable}},
			},
			call:       validate,
			wantServer: "us",
			wantCalls:  []string{"eu-1", "eu-2", "us"},
			anyOrder:   2,
		},
		{
			name:      "call with side effects and no key answered Unavailable is not retried",
			nodes:     []node{{"eu", "eu-west", behaviour{code: connect.CodeUnavailable}}, {"us", "us-east", ok}},
			call:      exchangeUnkeyed,
			wantCode:  connect.CodeUnavailable,
			wantCalls: []string{"eu"},
		},
		{
			name:       "keyed call with side effects answered Unavailable fails over with its key",
			nodes:      []node{{"eu", "eu-west", behaviour{code: connect.CodeUnavailable}}, {"us", "us-east", ok}},
			call:       exchange,
			wantServer: "us",
			wantCalls:  []string{"eu", "us"},
			sameKey:    true,
		},
		{
			name:       "call with side effects fails over from a refused connection",
			nodes:      []node{{"eu", "eu-west", behaviour{refused: true}}, {"us", "us-east", ok}},
			call:       exchange,
			wantServer: "us",
			wantCalls:  []string{"us"},
		},
		{
			name:      "PermissionDenied is returned at once",
			nodes:     []node{{"eu", "eu-west", behaviour{code: connect.CodePermissionDenied}}, {"us", "us-east", ok}},
			call:      validate,
			wantCode:  connect.CodePermissionDenied,
			wantCalls: []string{"eu"},
		},
		{
			name:      "InvalidArgument is returned at once",
			nodes:     []node{{"eu", "eu-west", behaviour{code: connect.CodeInvalidArgument}}, {"us", "us-east", ok}},
			call:      validate,
			wantCode:  connect.CodeInvalidArgument,
			wantCalls: []string{"eu"},
		},
		{
			name:  "idempotent call fails over after the attempt timeout",
			nodes: []node{{"eu", "eu-west", behaviour{hang: true}}, {"us", "us-east", ok}},
			call:  validate,
			// The second attempt must be answered within it too: generous, for loaded
			// machines (see TestFailoverDialTimeout).
			attempt:    2 * time.Second,
			wantServer: "us",
			wantCalls:  []string{"eu", "us"},
		},
		{
			name:      "call with side effects and no key is not retried after the attempt timeout",
			nodes:     []node{{"eu", "eu-west", behaviour{hang: true}}, {"us", "us-east", ok}},
			call:      exchangeUnkeyed,
			attempt:   200 * time.Millisecond,
			wantCode:  connect.CodeDeadlineExceeded,
			wantCalls: []string{"eu"},
		},
		{
			name:       "keyed call with side effects fails over after the attempt timeout",
			nodes:      []node{{"eu", "eu-west", behaviour{hang: true}}, {"us", "us-east", ok}},
			call:       exchange,
			attempt:    2 * time.Second, // the second attempt must be answered within it too
			wantServer: "us",
			wantCalls:  []string{"eu", "us"},
			sameKey:    true,
		},
		{
			name:          "caller's deadline ends the call",
			nodes:         []node{{"eu", "eu-west", behaviour{hang: true}}, {"us", "us-east", ok}},
			call:          validate,
			attempt:       time.Hour,
			callerTimeout: 200 * time.Millisecond,
			wantCode:      connect.CodeDeadlineExceeded,
			wantCalls:     []string{"eu"},
		},
		{
			name:      "every endpoint unavailable",
			nodes:     []node{{"eu", "eu-west", behaviour{code: connect.CodeUnavailable}}, {"us", "us-east", behaviour{code: connect.CodeUnavailable}}},
			call:      validate,
			wantCode:  connect.CodeUnavailable,
			wantCalls: []string{"eu", "us", "eu"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := new(callLog)
			var eps []client.Endpoint
			for _, n := range tt.nodes {
				eps = append(eps, client.Endpoint{Region: n.region, URL: startServer(t, n.name, n.b, log)})
			}
			cfg := quick(eps...)
			cfg.AttemptTimeout = tt.attempt
			_, auth := newClient(t, cfg)
			ctx := context.Background()
			if tt.callerTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.callerTimeout)
				defer cancel()
			}

			got, err := tt.call(ctx, auth)
			if tt.wantServer != "" {
				if err != nil {
					t.Fatalf("call: %v, want success from %s", err, tt.wantServer)
				}
				if got != tt.wantServer {
					t.Errorf("served by %q, want %q", got, tt.wantServer)
				}
			} else if code := connect.CodeOf(err); err == nil || code != tt.wantCode {
				t.Errorf("call error = %v (code %v), want code %v", err, code, tt.wantCode)
			}
			calls := log.calls()
			if tt.anyOrder > 0 && len(calls) >= tt.anyOrder {
				slices.Sort(calls[:tt.anyOrder])
			}
			if got := calls; !slices.Equal(got, tt.wantCalls) {
				t.Errorf("servers called %v, want %v", got, tt.wantCalls)
			}
			if keys := log.idempotencyKeys(); tt.sameKey && (len(keys) < 2 || keys[0] == "" || slices.ContainsFunc(keys, func(k string) bool { return k != keys[0] })) {
				t.Errorf("attempts carried idempotency keys %q, want one key on every attempt", keys)
			}
		})
	}
}

// TestFailoverDialTimeout checks a call with side effects that timed out while
// connecting: it never left the client, so it goes to the next region. The dial to
// the first endpoint blocks, as to a region whose packets are dropped.
func TestFailoverDialTimeout(t *testing.T) {
	t.Parallel()
	log := new(callLog)
	us := startServer(t, "us", behaviour{}, log)
	const blackhole = "blackhole.invalid:80"
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var dialer net.Dialer
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == blackhole {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-release:
				return nil, net.ErrClosed
			}
		}
		return dialer.DialContext(ctx, network, addr)
	}}
	t.Cleanup(transport.CloseIdleConnections)
	cfg := quick(client.Endpoint{Region: "eu-west", URL: "http://" + blackhole}, client.Endpoint{Region: "us-east", URL: us})
	cfg.Transport = transport
	// Each attempt gets this long: the first spends all of it dialing the blackhole, the
	// second must reach the local server within it. 200 ms was too little for the
	// second on a loaded CI machine (a -race suite starting clusters on 2 cores).
	cfg.AttemptTimeout = 2 * time.Second
	_, auth := newClient(t, cfg)

	got, err := exchange(context.Background(), auth)
	if err != nil {
		t.Fatalf("ExchangeAPIKey: %v, want success from us", err)
	}
	if got != "us" {
		t.Errorf("served by %q, want %q", got, "us")
	}
}

// TestDownEndpointGoesLast checks that an endpoint that refused a connection is
// tried after the others for DownFor.
func TestDownEndpointGoesLast(t *testing.T) {
	t.Parallel()
	log := new(callLog)
	eu := refusingURL(t)
	us := startServer(t, "us", behaviour{}, log)
	cfg := quick(client.Endpoint{Region: "eu-west", URL: eu}, client.Endpoint{Region: "us-east", URL: us})
	cfg.DownFor = time.Hour
	c, auth := newClient(t, cfg)
	if got := c.Endpoints()[0].URL; got != eu {
		t.Fatalf("first endpoint before the failure %s, want %s", got, eu)
	}

	if _, err := validate(context.Background(), auth); err != nil {
		t.Fatalf("ValidateToken: %v", err)
	}
	eps := c.Endpoints()
	if got := eps[0].URL; got != us {
		t.Errorf("first endpoint after the failure %s, want %s", got, us)
	}
	if got := eps[1]; got.URL != eu || !got.DownUntil.After(time.Now()) {
		t.Errorf("last endpoint %+v, want %s down", got, eu)
	}
}

// TestRetryBudget checks that retries stop when the budget is spent: one token, and
// successes earn too little to buy another.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	log := new(callLog)
	eu := startServer(t, "eu", behaviour{code: connect.CodeUnavailable}, log)
	us := startServer(t, "us", behaviour{}, log)
	cfg := quick(client.Endpoint{Region: "eu-west", URL: eu}, client.Endpoint{Region: "us-east", URL: us})
	cfg.MinRetries = 1
	cfg.RetryBudget = 0.01
	_, auth := newClient(t, cfg)

	steps := []struct {
		name     string
		wantCode connect.Code // 0: success
	}{
		{name: "first call retried on the token", wantCode: 0},
		{name: "second call not retried", wantCode: connect.CodeUnavailable},
	}
	for _, s := range steps {
		_, err := validate(context.Background(), auth)
		if got := connect.CodeOf(err); (err == nil) != (s.wantCode == 0) || (err != nil && got != s.wantCode) {
			t.Errorf("%s: error %v, want code %v", s.name, err, s.wantCode)
		}
	}
	if got, want := log.calls(), []string{"eu", "us", "eu"}; !slices.Equal(got, want) {
		t.Errorf("servers called %v, want %v", got, want)
	}
}
