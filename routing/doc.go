// Package routing will own the tenant → home-region directory, cluster membership
// (memberlist), request forwarding to the home region and the app-side client with
// nearest-region failover. It is built by the multi-region issue; until then a node
// serves every tenant from its own region against the shared database.
package routing
