// Package authz is the permission-evaluation engine of the IAM data plane:
// role-based access control with resource scopes, deny rules, expiring
// just-in-time grants and attribute conditions written in CEL.
//
// The package is pure: it performs no I/O and holds no process-global state.
// An [Env] compiles a [Policy] into an immutable [Snapshot], which answers
// [Snapshot.Check], [Snapshot.EffectivePermissions] and [Snapshot.WhoCan].
// Env and Snapshot are safe for concurrent use by multiple goroutines.
//
// Decisions fail closed: an invalid request is denied, a deny binding beats
// any allow binding, and a condition that cannot be evaluated never grants
// access but always lets a deny apply.
package authz
