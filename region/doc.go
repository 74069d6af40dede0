// Package region is the region node: it assembles keyplane's Connect services, the
// gRPC health and reflection services, the OAuth/OIDC endpoints (oauth.go; as OpenID
// Provider with its login and consent pages, oidc*.go and login_page.go), each
// tenant's SCIM 2.0 endpoint (scim*.go), /healthz and /readyz, and the interceptors (request ids,
// logging, metrics, operator authentication) into the API server; the operator
// endpoints (/metrics, /members, /debug/pprof) on the operator listener or behind the
// operator secret; and, with routing, the peer listener that serves forwards from
// other nodes over mutual TLS.
//
// Errors from the store are mapped to Connect codes in exactly one place,
// [connectError]; SQL text never reaches a client.
package region
