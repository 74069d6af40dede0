package region

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/keyplane/keyplane/region/authz"
)

// TestAuthorityTableCoversEveryProcedure walks the registered service descriptors:
// every procedure must have an authority (an unmapped one is refused at run time),
// every entry must name a procedure that exists, tenant-plane procedures must name
// their tenant in tenant_id, and every tenant-plane permission must be a permission.
func TestAuthorityTableCoversEveryProcedure(t *testing.T) {
	t.Parallel()
	all := proceduresWhere(func(protoreflect.MethodDescriptor) bool { return true })
	if len(all) < 40 {
		t.Fatalf("read %d procedures from the descriptors; want every procedure of the four services", len(all))
	}
	for p := range all {
		a, ok := authorities[p]
		if !ok {
			t.Errorf("procedure %s has no entry in authorities", p)
			continue
		}
		if a.plane == planeTenant && !tenantScopedProcedures[p] {
			t.Errorf("%s is tenant-plane but its request has no tenant_id", p)
		}
		if a.plane == planeTenant && a.on != self && a.perm == "" {
			t.Errorf("%s is tenant-plane without a permission", p)
		}
		if a.perm != "" && authz.ValidatePermission(a.perm) != nil {
			t.Errorf("%s: %q is not a permission: %v", p, a.perm, authz.ValidatePermission(a.perm))
		}
		if a.plane != planeTenant && a.perm != "" {
			t.Errorf("%s: only tenant-plane procedures take a permission", p)
		}
	}
	for p := range authorities {
		if !all[p] {
			t.Errorf("authorities names %s, which no service has", p)
		}
	}
}
