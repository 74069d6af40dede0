package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// regionNode is a stand-in for a region's keyplane node: it validates every token,
// or answers Unavailable when its region is down.
type regionNode struct {
	keyplanev1connect.UnimplementedAuthServiceHandler
	region string
	down   bool
}

func (n *regionNode) ValidateToken(_ context.Context, req *connect.Request[keyplanev1.ValidateTokenRequest]) (*connect.Response[keyplanev1.ValidateTokenResponse], error) {
	fmt.Printf("%s: ValidateToken for tenant %s\n", n.region, req.Header().Get(client.TenantHeader))
	if n.down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("database unreachable"))
	}
	return connect.NewResponse(&keyplanev1.ValidateTokenResponse{Active: true}), nil
}

func (n *regionNode) ExchangeAPIKey(_ context.Context, req *connect.Request[keyplanev1.ExchangeAPIKeyRequest]) (*connect.Response[keyplanev1.ExchangeAPIKeyResponse], error) {
	fmt.Printf("%s: ExchangeAPIKey, idempotency key set: %v\n", n.region, req.Header().Get(client.IdempotencyKeyHeader) != "")
	if n.down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("database unreachable"))
	}
	return connect.NewResponse(&keyplanev1.ExchangeAPIKeyResponse{Token: &keyplanev1.Token{}}), nil
}

// Example_failover shows a read failing over from a region that answers
// Unavailable, a call with side effects failing over with its idempotency key (the
// node applies it at most once), and one without a tenant, hence without a key, that
// is not replayed elsewhere.
func Example_failover() {
	start := func(n *regionNode) *httptest.Server {
		mux := http.NewServeMux()
		mux.Handle(keyplanev1connect.NewAuthServiceHandler(n))
		return httptest.NewServer(mux)
	}
	eu := start(&regionNode{region: "eu-west", down: true})
	defer eu.Close()
	us := start(&regionNode{region: "us-east"})
	defer us.Close()

	c, err := client.New(client.Config{
		Endpoints: []client.Endpoint{
			{Region: "eu-west", URL: eu.URL},
			{Region: "us-east", URL: us.URL},
		},
		Prefer:        []string{"eu-west"}, // the application runs in eu-west
		ProbeInterval: -1,                  // a real client probes /readyz; here the order is fixed
		BackoffBase:   time.Millisecond,
		BackoffMax:    time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	auth := keyplanev1connect.NewAuthServiceClient(c.HTTPClient(), client.BaseURL, c.Options()...)
	ctx := context.Background()

	// ValidateToken has no side effects: it is retried in the next region.
	res, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "t-acme", Token: "ey..."}))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("active:", res.Msg.Active)

	// ExchangeAPIKey opens a session. The client gives it an idempotency key, so
	// whichever node gets the retry answers it from eu-west's record if eu-west had
	// opened one: it is retried like a read.
	_, err = auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "t-acme", ApiKey: "kpk_..."}))
	fmt.Println("exchange:", err == nil)

	// Without a tenant there is no key (nodes take keys on tenant-scoped calls only):
	// eu-west may have acted before answering, so the error is returned.
	_, err = auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{ApiKey: "kpk_..."}))
	fmt.Println("exchange without a tenant:", connect.CodeOf(err))
	// Output:
	// eu-west: ValidateToken for tenant t-acme
	// us-east: ValidateToken for tenant t-acme
	// active: true
	// eu-west: ExchangeAPIKey, idempotency key set: true
	// us-east: ExchangeAPIKey, idempotency key set: true
	// exchange: true
	// eu-west: ExchangeAPIKey, idempotency key set: false
	// exchange without a tenant: unavailable
}
