package region

import (
	"fmt"
	"net/http"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// tenantScopedProcedures are the Connect procedures whose request message has a
// top-level string tenant_id: routing must know their tenant before it reads the body,
// so their callers send it in the Keyplane-Tenant header too.
var tenantScopedProcedures = proceduresWhere(func(m protoreflect.MethodDescriptor) bool {
	f := m.Input().Fields().ByName("tenant_id")
	return f != nil && f.Kind() == protoreflect.StringKind && f.Cardinality() != protoreflect.Repeated
})

// proceduresWhere returns the paths (/service/method) of keyplane's Connect procedures
// for which keep is true, read from the registered proto descriptors.
func proceduresWhere(keep func(protoreflect.MethodDescriptor) bool) map[string]bool {
	out := map[string]bool{}
	for _, name := range []string{keyplanev1connect.AdminServiceName, keyplanev1connect.AuthServiceName,
		keyplanev1connect.CheckServiceName, keyplanev1connect.ElevationServiceName, keyplanev1connect.DecisionServiceName,
		keyplanev1connect.FederationServiceName, keyplanev1connect.UpstreamServiceName, keyplanev1connect.SAMLServiceName,
		keyplanev1connect.GovernanceServiceName, keyplanev1connect.ReviewServiceName, keyplanev1connect.AnalyticsServiceName} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			panic(fmt.Sprintf("service %s not registered: %v", name, err))
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			if m := methods.Get(i); keep(m) {
				out["/"+name+"/"+string(m.Name())] = true
			}
		}
	}
	return out
}

// needsTenant reports whether a request is a call of a tenant-scoped procedure (any
// protocol: Connect, gRPC and gRPC-Web share the path). The router refuses such a
// call when it names no tenant, rather than serve it on whichever node it reached.
func needsTenant(r *http.Request) bool { return tenantScopedProcedures[r.URL.Path] }
