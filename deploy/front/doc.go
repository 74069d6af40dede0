// Package front is the demo's "global front": a small HTTP reverse proxy that stands
// where production has a global name (GeoDNS, anycast or a GSLB) in front of every
// region, so that a tenant's issuer ({issuer base}/t/{tenant}) does not name one node.
//
// A Front health-checks every node's /readyz on a bounded interval and sends each
// request to a healthy node: a node of the caller's region when it is known (the
// Keyplane-Region request header, else Config.PreferRegion), else any healthy node,
// round robin. The node's own router then forwards the request to the tenant's home
// region as it does for any client; the front knows nothing of tenants.
//
// Retries: a request that fails at transport level is tried on the next healthy node
// when it cannot have been acted on (it was never written to a connection) or when
// it is safe to repeat (GET, HEAD, OPTIONS, token introspection and revocation).
// Token minting that failed after it was sent is answered 502, never sent again: the
// node may have minted and recorded the token.
//
// The front is an ordinary client of the public API. It sets X-Forwarded-For (the
// standard proxy header, replacing whatever the client sent) for logs, but keyplane
// nodes trust no client-supplied address header: they rate-limit by the connection's
// address, which for requests through the front is the front's. Node-to-node hop
// headers are dropped by the nodes' routers as for any client.
package front
