package authz

import (
	"fmt"
	"strings"
)

// Limits on names.
const (
	maxPermissionSegment = 64
	maxResourceSegment   = 128
	maxResourceSegments  = 32
	maxResourceBytes     = 1024
)

// ValidationError reports a malformed permission, pattern, resource, scope or
// policy element. Reason says what is wrong and what is allowed.
type ValidationError struct {
	Reason string
}

// Error returns Reason.
func (e *ValidationError) Error() string { return e.Reason }

func invalid(format string, args ...any) error {
	return &ValidationError{Reason: fmt.Sprintf(format, args...)}
}

// ValidatePermission reports whether p is a permission: service.resource.verb,
// exactly three dot-separated segments of [a-z0-9_-]{1,64}.
func ValidatePermission(p string) error {
	segs := strings.Split(p, ".")
	if len(segs) != 3 {
		return invalid("permission %q must be service.resource.verb: exactly three dot-separated segments", p)
	}
	for _, s := range segs {
		if err := validatePermissionSegment(p, s); err != nil {
			return err
		}
	}
	return nil
}

func validatePermissionSegment(p, s string) error {
	if len(s) == 0 || len(s) > maxPermissionSegment {
		return invalid("permission %q: each segment must be 1 to %d characters of [a-z0-9_-]", p, maxPermissionSegment)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return invalid("permission %q: segment %q may contain only [a-z0-9_-]", p, s)
		}
	}
	return nil
}

// ValidatePermissionPattern reports whether p is a permission pattern, as used
// in roles: a permission ("docs.document.read"), one or two whole segments
// followed by ".*" ("docs.*", "docs.document.*"), or "*" (every permission).
func ValidatePermissionPattern(p string) error {
	if p == "*" {
		return nil
	}
	prefix, ok := strings.CutSuffix(p, ".*")
	if !ok {
		if err := ValidatePermission(p); err != nil {
			return invalid("permission pattern %q must be a permission (service.resource.verb), whole segments followed by \".*\", or \"*\"", p)
		}
		return nil
	}
	segs := strings.Split(prefix, ".")
	if len(segs) > 2 {
		return invalid("permission pattern %q: at most two segments may precede \".*\"", p)
	}
	for _, s := range segs {
		if err := validatePermissionSegment(p, s); err != nil {
			return invalid("permission pattern %q: wildcards stand for whole segments; each preceding segment must be 1 to %d characters of [a-z0-9_-]", p, maxPermissionSegment)
		}
	}
	return nil
}

// MatchPermission reports whether pattern matches permission. It returns
// false when either is malformed.
func MatchPermission(pattern, permission string) bool {
	if ValidatePermissionPattern(pattern) != nil || ValidatePermission(permission) != nil {
		return false
	}
	return matchPermission(pattern, permission)
}

// matchPermission assumes both arguments are valid.
func matchPermission(pattern, permission string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		// prefix ends with '.', so "docs." cannot match "docsx.a.b".
		return strings.HasPrefix(permission, prefix)
	}
	return pattern == permission
}

// ValidateResource reports whether r is a resource name: 1 to 32 segments
// separated by '/', each 1 to 128 characters of [A-Za-z0-9._~:@-] and neither
// "." nor "..", at most 1024 bytes, with no leading or trailing '/'.
func ValidateResource(r string) error {
	if r == "" {
		return invalid("resource must not be empty")
	}
	if len(r) > maxResourceBytes {
		return invalid("resource must be at most %d bytes, got %d", maxResourceBytes, len(r))
	}
	n := 0
	for seg := range strings.SplitSeq(r, "/") {
		n++
		if n > maxResourceSegments {
			return invalid("resource %q must have at most %d segments", r, maxResourceSegments)
		}
		if seg == "" {
			return invalid("resource %q: segments must not be empty (no leading, trailing or doubled '/')", r)
		}
		if len(seg) > maxResourceSegment {
			return invalid("resource %q: each segment must be at most %d characters", r, maxResourceSegment)
		}
		if seg == "." || seg == ".." {
			return invalid("resource %q: segments must not be \".\" or \"..\"", r)
		}
		for i := 0; i < len(seg); i++ {
			if !resourceChar(seg[i]) {
				return invalid("resource %q: segments may contain only [A-Za-z0-9._~:@-]", r)
			}
		}
	}
	return nil
}

func resourceChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._~:@-", c) >= 0
}

// ValidateScope reports whether s is a scope: "*" (every resource), a prefix
// ending with '/' whose part before the slash is a valid resource
// ("projects/alpha/": every resource under projects/alpha), or an exact
// resource.
func ValidateScope(s string) error {
	if s == "*" {
		return nil
	}
	if prefix, ok := strings.CutSuffix(s, "/"); ok {
		if err := ValidateResource(prefix); err != nil {
			return invalid("scope %q: the part before the trailing '/' must be a valid resource: %s", s, err)
		}
		return nil
	}
	if err := ValidateResource(s); err != nil {
		return invalid("scope %q must be \"*\", a resource followed by '/', or a resource: %s", s, err)
	}
	return nil
}

// ScopeCovers reports whether scope covers resource. "*" covers every
// resource; "projects/alpha/" covers resources strictly under projects/alpha
// (not projects/alpha itself, nor projects/alphabet/x); any other scope covers
// only the identical resource. It returns false when either is malformed.
func ScopeCovers(scope, resource string) bool {
	if ValidateScope(scope) != nil || ValidateResource(resource) != nil {
		return false
	}
	return scopeCovers(scope, resource)
}

// scopeCovers assumes both arguments are valid.
func scopeCovers(scope, resource string) bool {
	switch {
	case scope == "*":
		return true
	case strings.HasSuffix(scope, "/"):
		return len(resource) > len(scope) && strings.HasPrefix(resource, scope)
	default:
		return scope == resource
	}
}

// PatternIncludes reports whether every permission inner matches is matched by
// outer: "*" includes every pattern, "docs.*" includes "docs.document.*" and
// "docs.document.read", a permission includes only itself. It returns false when
// either is malformed.
func PatternIncludes(outer, inner string) bool {
	if ValidatePermissionPattern(outer) != nil || ValidatePermissionPattern(inner) != nil {
		return false
	}
	switch prefix, wild := strings.CutSuffix(outer, "*"); {
	case outer == "*":
		return true
	case inner == "*":
		return false
	case wild:
		return strings.HasPrefix(inner, prefix) // prefix ends with '.'
	default:
		return outer == inner
	}
}

// ScopeIncludes reports whether every resource inner covers is covered by outer:
// "*" includes every scope, "projects/" includes "projects/", "projects/alpha/" and
// "projects/alpha", an exact resource includes only itself. It returns false when
// either is malformed.
func ScopeIncludes(outer, inner string) bool {
	if ValidateScope(outer) != nil || ValidateScope(inner) != nil {
		return false
	}
	switch {
	case outer == "*":
		return true
	case inner == "*":
		return false
	case strings.HasSuffix(outer, "/"):
		return strings.HasPrefix(inner, outer)
	default:
		return outer == inner
	}
}
