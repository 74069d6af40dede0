package authz_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/authz"
)

type validationCase struct {
	in    string
	valid bool
}

func runValidation(t *testing.T, name string, fn func(string) error, tests []validationCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			err := fn(tt.in)
			if got := err == nil; got != tt.valid {
				t.Fatalf("%s(%q) = %v, want valid=%v", name, tt.in, err, tt.valid)
			}
			if err != nil {
				var ve *authz.ValidationError
				if !errors.As(err, &ve) || ve.Reason == "" || err.Error() != ve.Reason {
					t.Fatalf("%s(%q) error %v (%T) is not a *ValidationError with a reason", name, tt.in, err, err)
				}
			}
		})
	}
}

func TestValidatePermission(t *testing.T) {
	t.Parallel()
	runValidation(t, "ValidatePermission", authz.ValidatePermission, []validationCase{
		{"docs.document.read", true},
		{"iam-v2.service_account.get-key", true},
		{"a.b.c", true},
		{"0.1.2", true},
		{strings.Repeat("a", 64) + ".b.c", true},
		{strings.Repeat("a", 65) + ".b.c", false},
		{"", false},
		{"docs", false},
		{"docs.document", false},
		{"docs.document.read.extra", false},
		{"Docs.document.read", false},
		{"docs..read", false},
		{".document.read", false},
		{"docs.document.", false},
		{"docs.*.read", false},
		{"docs.document.*", false},
		{"*", false},
		{"docs.doc ument.read", false},
		{"docs.document.réad", false},
		{"docs/document/read", false},
	})
}

func TestValidatePermissionPattern(t *testing.T) {
	t.Parallel()
	runValidation(t, "ValidatePermissionPattern", authz.ValidatePermissionPattern, []validationCase{
		{"*", true},
		{"docs.*", true},
		{"docs.document.*", true},
		{"docs.document.read", true},
		{"docs.document.read.*", false},
		{"docs*", false},
		{"docs.doc*", false},
		{"*.document.read", false},
		{"docs.*.read", false},
		{".*", false},
		{"**", false},
		{"docs.**", false},
		{"", false},
		{"Docs.*", false},
		{"docs.document", false},
	})
}

func TestMatchPermission(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, perm string
		want          bool
	}{
		{"*", "docs.document.read", true},
		{"docs.*", "docs.document.read", true},
		{"docs.*", "docs.folder.list", true},
		{"docs.*", "docsx.document.read", false},
		{"docs.*", "iam.role.get", false},
		{"docs.document.*", "docs.document.read", true},
		{"docs.document.*", "docs.documents.read", false},
		{"docs.document.*", "docs.folder.read", false},
		{"docs.document.read", "docs.document.read", true},
		{"docs.document.read", "docs.document.write", false},
		{"docs.document.read", "docs.document.readx", false},
		{"*", "not-a-permission", false},
		{"docs.*", "docs.document", false},
		{"bad pattern", "docs.document.read", false},
		{"docs.doc*", "docs.document.read", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.perm, func(t *testing.T) {
			t.Parallel()
			if got := authz.MatchPermission(tt.pattern, tt.perm); got != tt.want {
				t.Fatalf("MatchPermission(%q, %q) = %v, want %v", tt.pattern, tt.perm, got, tt.want)
			}
		})
	}
}

func TestValidateResource(t *testing.T) {
	t.Parallel()
	seg := strings.Repeat("x", 128)
	cases := []validationCase{
		{"projects", true},
		{"projects/alpha", true},
		{"projects/alpha/documents/Q3-plan.v2", true},
		{"a/b~c/d:e/f@g/h_i/j-k", true},
		{"...", true},
		{".hidden", true},
		{seg, true},
		{seg + "x", false},
		{strings.Repeat("a/", 31) + "a", true},
		{strings.Repeat("a/", 32) + "a", false},
		{"", false},
		{"/projects", false},
		{"projects/", false},
		{"projects//alpha", false},
		{"projects/./alpha", false},
		{"projects/..", false},
		{".", false},
		{"..", false},
		{"projects/al pha", false},
		{"projects/alpha?x", false},
		{"projects/alpha%2F", false},
		{"projects/ålpha", false},
		{"projects/*", false},
	}
	// Exactly 1024 and 1025 bytes, in 128-byte segments plus a remainder.
	base := strings.Repeat(seg+"/", 7) // 903 bytes
	cases = append(cases,
		validationCase{base + strings.Repeat("y", 1024-len(base)), true},
		validationCase{base + strings.Repeat("y", 1025-len(base)), false},
	)
	runValidation(t, "ValidateResource", authz.ValidateResource, cases)
}

func TestValidateScope(t *testing.T) {
	t.Parallel()
	runValidation(t, "ValidateScope", authz.ValidateScope, []validationCase{
		{"*", true},
		{"projects/alpha/", true},
		{"projects/", true},
		{"projects/alpha", true},
		{"projects/alpha/documents/d1", true},
		{"", false},
		{"/", false},
		{"//", false},
		{"projects/alpha//", false},
		{"/projects/alpha/", false},
		{"projects/*", false},
		{"**", false},
		{"*/", false},
		{"projects/../", false},
	})
}

func TestScopeCovers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scope, resource string
		want            bool
	}{
		{"*", "projects/alpha/x", true},
		{"*", "projects", true},
		{"projects/alpha/", "projects/alpha/x", true},
		{"projects/alpha/", "projects/alpha/x/y/z", true},
		{"projects/alpha/", "projects/alpha", false},
		{"projects/alpha/", "projects/alphabet/x", false},
		{"projects/alpha/", "projects/beta/x", false},
		{"projects/", "projects/alpha", true},
		{"projects/alpha", "projects/alpha", true},
		{"projects/alpha", "projects/alpha/x", false},
		{"projects/alpha", "projects/alphabet", false},
		{"*", "bad//resource", false},
		{"bad//", "bad//x", false},
		{"projects/alpha/", "projects/alpha/", false},
	}
	for _, tt := range tests {
		t.Run(tt.scope+"~"+tt.resource, func(t *testing.T) {
			t.Parallel()
			if got := authz.ScopeCovers(tt.scope, tt.resource); got != tt.want {
				t.Fatalf("ScopeCovers(%q, %q) = %v, want %v", tt.scope, tt.resource, got, tt.want)
			}
		})
	}
}

func TestPatternIncludes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"*", "*", true},
		{"*", "iam.*", true},
		{"*", "docs.document.read", true},
		{"docs.*", "*", false},
		{"docs.*", "docs.*", true},
		{"docs.*", "docs.document.*", true},
		{"docs.*", "docs.document.read", true},
		{"docs.*", "docsx.document.read", false},
		{"docs.document.*", "docs.*", false},
		{"docs.document.*", "docs.document.read", true},
		{"docs.document.*", "docs.folder.read", false},
		{"docs.document.read", "docs.document.read", true},
		{"docs.document.read", "docs.document.*", false},
		{"docs.document.read", "docs.document.write", false},
		{"bad", "docs.document.read", false},
		{"*", "docs..read", false},
	}
	for _, tt := range tests {
		t.Run(tt.outer+"~"+tt.inner, func(t *testing.T) {
			t.Parallel()
			if got := authz.PatternIncludes(tt.outer, tt.inner); got != tt.want {
				t.Fatalf("PatternIncludes(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.want)
			}
		})
	}
}

func TestScopeIncludes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		outer, inner string
		want         bool
	}{
		{"*", "*", true},
		{"*", "prod/", true},
		{"prod/", "*", false},
		{"prod/", "prod/", true},
		{"prod/", "prod/db/", true},
		{"prod/", "prod/db", true},
		{"prod/", "prod", false},
		{"prod/", "production/", false},
		{"prod/db/", "prod/", false},
		{"prod/db", "prod/db", true},
		{"prod/db", "prod/db/", false},
		{"prod/db", "prod/", false},
		{"bad//", "bad//x", false},
	}
	for _, tt := range tests {
		t.Run(tt.outer+"~"+tt.inner, func(t *testing.T) {
			t.Parallel()
			if got := authz.ScopeIncludes(tt.outer, tt.inner); got != tt.want {
				t.Fatalf("ScopeIncludes(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.want)
			}
		})
	}
}
