// Package region is the region node: it assembles keyplane's Connect services, the
// gRPC health and reflection services, the HTTP endpoints (/healthz, /readyz,
// /metrics) and the interceptors (request ids, logging, metrics, operator
// authentication) into one http.Handler.
//
// Errors from the store are mapped to Connect codes in exactly one place,
// [connectError]; SQL text never reaches a client.
package region
