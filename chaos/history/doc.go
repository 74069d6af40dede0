// Package history is the model of what a chaos drill saw and the invariant checkers
// that judge it. A drill records every call it made as an Op (start and end on one
// monotonic clock, the answer, the node) and every acknowledged admin write as a
// Write; after the drill, plain functions decide whether keyplane kept its promises:
//
//   - CheckRevocations: linearizable revocation. Once a revoke is acknowledged, no read
//     of the same key that starts afterwards may grant access. ReadsAfterRevoke counts
//     the reads that actually tested this, so a caller can refuse a history that tested
//     nothing.
//   - CheckWrites: no lost write. Every acknowledged write exists afterwards with
//     exactly one audit event.
//   - CheckFailClosed: fail closed. No read granted access while running entirely
//     inside a Window in which the node could not read the state it depends on.
//   - Failover measures each client's time to its first success after a fault.
//
// The package is a leaf: it imports nothing from keyplane and does no I/O, so region's
// tests can check their own histories with it without linking the drills, the cluster
// launcher or toxiproxy (package chaos runs the drills). The checkers are tested with
// hand-made bad histories: a checker that cannot fail proves nothing.
//
// Every function is pure and safe for concurrent use; none keeps its arguments.
package history
