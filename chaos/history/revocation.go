package history

import (
	"fmt"
	"sort"
	"time"
)

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
