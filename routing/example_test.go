package routing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// homes is a tenants table: tenant → home region.
type homes map[string]string

func (h homes) GetTenant(_ context.Context, id string) (schema.Tenant, error) {
	region, ok := h[id]
	if !ok {
		return schema.Tenant{}, schema.ErrNotFound
	}
	return schema.Tenant{ID: id, HomeRegion: region, PlacementEpoch: 1}, nil
}

// nobody is a cluster where no other node is ready.
type nobody struct{}

func (nobody) Ready(string) []routing.Member { return nil }

func ExampleNewRouter() {
	// In a node, the directory reads the store and the peers are the gossip
	// membership (*routing.Membership).
	dir := routing.NewDirectory(homes{"acme": "eu", "globex": "us"}, 0)
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, _ := routing.TenantOf(r)
		fmt.Fprintf(w, "eu-1 serves %s", tenant)
	})
	router, err := routing.NewRouter(routing.Config{
		Region:    "eu",
		NodeID:    "eu-1",
		Directory: dir,
		Peers:     nobody{},
		HopKey:    routing.HopKey("cluster secret"),
		Metrics:   prometheus.NewRegistry(),
	}, local)
	if err != nil {
		fmt.Println(err)
		return
	}

	for _, tenant := range []string{"acme", "globex"} {
		r := httptest.NewRequest(http.MethodGet, "/t/"+tenant+"/.well-known/jwks.json", nil)
		w := httptest.NewRecorder()
		router.ServeHTTP(w, r)
		fmt.Printf("%s: %s (%s)\n", tenant, w.Body, w.Header().Get(routing.RouteHeader))
	}
	// Output:
	// acme: eu-1 serves acme (local)
	// globex: eu-1 serves globex (degraded)
}
