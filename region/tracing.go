package region

import (
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/keyplane/keyplane/tracing"
)

// Tracing (Config.TracerProvider; docs/operations.md#tracing): the API and peer
// listeners make one server span per request (tracing.Handler), Connect procedures an
// RPC span under it (tracing.Interceptor), the router a client span per forward, the
// store a span per statement. Without a tracer provider none of it is installed.

// procedures are every Connect procedure the node serves: their paths name spans.
var procedures = proceduresWhere(func(protoreflect.MethodDescriptor) bool { return true })

// traced wraps an edge handler (the API or peer listener's) in a server span per
// request; h unchanged when tracing is off.
func (n *Node) traced(h http.Handler) http.Handler {
	if n.cfg.TracerProvider == nil {
		return h
	}
	return tracing.Handler(n.cfg.TracerProvider, h, n.spanName, untraced)
}

// tracingInterceptors are the interceptors that come before the node's own on every
// Connect service: the RPC span, when tracing is on.
func (n *Node) tracingInterceptors() ([]connect.Interceptor, error) {
	if n.cfg.TracerProvider == nil {
		return nil, nil
	}
	i, err := tracing.Interceptor(n.cfg.TracerProvider)
	if err != nil {
		return nil, err
	}
	return []connect.Interceptor{i}, nil
}

// spanName names a request's span by what it calls, never by its raw path (tenant
// ids, SCIM ids): "POST /keyplane.v1.CheckService/Check", "POST
// /t/{tenant}/oauth2/token", or the bare method for a path the node does not serve.
func (n *Node) spanName(r *http.Request) string {
	if procedures[r.URL.Path] {
		return r.Method + " " + r.URL.Path
	}
	_, pattern := n.routes.Handler(r)
	if pattern == "" || strings.HasSuffix(pattern, "/") && strings.HasPrefix(pattern, "/keyplane.") {
		return r.Method // not found, or an unknown method of a Connect service
	}
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path // "POST /t/{tenant}/oauth2/token" → the route
	}
	return r.Method + " " + pattern
}

// untraced are the requests that make no span: probes, scrapes, profiles and gRPC
// health checks, which would drown the traces of calls.
func untraced(r *http.Request) bool {
	switch p := r.URL.Path; {
	case p == "/healthz", p == "/readyz", p == "/metrics", p == "/members":
		return true
	case strings.HasPrefix(p, "/debug/pprof/"), strings.HasPrefix(p, "/"+grpchealth.HealthV1ServiceName+"/"):
		return true
	}
	return false
}
