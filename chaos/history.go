// Package chaos holds keyplane's failure drills (`keyplane chaos run`: drill.go, the
// load in load.go, the runner in run.go, reports in report.go) and the invariant
// checkers that judge their recorded histories (history.go, checkers.go). The checkers
// are plain functions over histories so that they can be tested with hand-made bad
// histories: a checker that cannot fail proves nothing.
package chaos

import (
	"fmt"
	"sort"
	"time"
)

// OpKind is what an operation in a history did.
type OpKind string

// Operation kinds.
const (
	// Revoke takes access away (revoke a token or session, disable an identity,
	// remove a binding). OK means it was acknowledged.
	Revoke OpKind = "revoke"
	// Read asks whether access exists (validate a token, check a permission).
	// Granted is its answer when OK.
	Read OpKind = "read"
	// Call is any other call of the load (issue a token, an admin write).
	Call OpKind = "call"
)

// Op is one recorded call. Start is taken before the request is sent and End after
// its answer arrived, on one monotonic clock.
type Op struct {
	Kind    OpKind
	Key     string // what the access is to: a token, a session, a binding
	Start   time.Time
	End     time.Time
	OK      bool // the call returned an answer (no error)
	Granted bool // for reads: the answer was active/allowed
	Node    string
	Name    string // validate, check, issue, revoke, write
	Client  string // the application instance (region/app-N) that made the call
	Err     string // the Connect code of a failed call
	Route   string // Keyplane-Route of the answer
	Safe    bool   // the call may be repeated (the client retries it on another region)
}

// Violation is a read that granted access although it started after a revocation of
// the same key had been acknowledged.
type Violation struct {
	Revoke Op
	Read   Op
}

func (v Violation) String() string {
	return fmt.Sprintf("key %s: revoke acknowledged at %s (node %s), read started %s later on node %s and granted access",
		v.Revoke.Key, v.Revoke.End.Format("15:04:05.000000"), v.Revoke.Node, v.Read.Start.Sub(v.Revoke.End), v.Read.Node)
}

// CheckRevocations checks linearizable revocation: once a revoke of a key is
// acknowledged, no read of that key that starts afterwards may grant access. Reads
// concurrent with the revoke may answer either way. It returns every violation.
func CheckRevocations(ops []Op) []Violation {
	first := map[string]Op{} // earliest acknowledged revoke per key
	for _, op := range ops {
		if op.Kind != Revoke || !op.OK {
			continue
		}
		if cur, ok := first[op.Key]; !ok || op.End.Before(cur.End) {
			first[op.Key] = op
		}
	}
	var out []Violation
	for _, op := range ops {
		if op.Kind != Read || !op.OK || !op.Granted {
			continue
		}
		if r, ok := first[op.Key]; ok && op.Start.After(r.End) {
			out = append(out, Violation{Revoke: r, Read: op})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Read.Start.Before(out[j].Read.Start) })
	return out
}

// ReadsAfterRevoke counts the successful reads that started after their key's
// revocation was acknowledged: the reads that actually tested the guarantee.
func ReadsAfterRevoke(ops []Op) int {
	first := map[string]time.Time{}
	for _, op := range ops {
		if op.Kind == Revoke && op.OK {
			if cur, ok := first[op.Key]; !ok || op.End.Before(cur) {
				first[op.Key] = op.End
			}
		}
	}
	n := 0
	for _, op := range ops {
		if end, ok := first[op.Key]; ok && op.Kind == Read && op.OK && op.Start.After(end) {
			n++
		}
	}
	return n
}
