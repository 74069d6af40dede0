package client

import (
	"net/http"
	"testing"
)

// A residency-strict tenant's calls go only to endpoints of the regions its answers
// named, first attempts and failovers alike; other tenants' calls go anywhere; an
// answer without the header lifts the restriction.
func TestServeRegionsRestrictEndpoints(t *testing.T) {
	t.Parallel()
	c, err := New(Config{Endpoints: []Endpoint{{Region: "us-east", URL: "http://us.test"}, {Region: "eu-west", URL: "http://eu1.test"},
		{Region: "eu-west", URL: "http://eu2.test"}}, Prefer: []string{"us-east"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.learnServeRegions("vault", http.Header{ServeRegionsHeader: {"eu-west"}})
	tried := make([]bool, len(c.eps))
	for range 3 {
		ep := c.next(tried, c.serveRegions("vault"))
		if ep.region != "eu-west" {
			t.Fatalf("the strict tenant's attempt went to %s", ep)
		}
		tried[ep.index] = true
	}
	if ep := c.next(nil, c.serveRegions("acme")); ep.region != "us-east" {
		t.Fatalf("another tenant's call went to %s, want the preferred us-east", ep)
	}
	c.learnServeRegions("vault", http.Header{})
	if ep := c.next(nil, c.serveRegions("vault")); ep.region != "us-east" {
		t.Fatalf("after an answer without %s the call went to %s, want us-east", ServeRegionsHeader, ep)
	}
}
