// Package routing sends every request to its tenant's home region.
//
//   - Membership (hashicorp/memberlist gossip) tells each node every node of every
//     region: its region, API URL, version and readiness. Dead and suspect nodes leave
//     the routing table.
//   - Directory maps a tenant to its home region and placement epoch, read from the
//     GLOBAL tenants table and cached.
//   - Router wraps a node's handler. It finds the tenant without decoding the body
//     (the Keyplane-Tenant header, or the /t/{tenant}/ path), serves locally when this
//     is the home region, forwards the whole request once to a ready home node
//     otherwise (deadline kept, a hop header that forbids a second forward, hedged to
//     a second home node when an idempotent request is slow), and serves locally,
//     "degraded", when no home node can be reached. Responses carry Keyplane-Route.
//
// Package routing/client is the app-side client: nearest healthy region, failover.
// docs/routing.md describes the request paths and their failure behaviour.
package routing
