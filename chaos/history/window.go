package history

import (
	"sort"
	"time"
)

// Window is a stretch of time during a drill: a fault, or a span in which the nodes
// could not read the state they need (the database was down).
type Window struct {
	Label string
	From  time.Time
	To    time.Time
}

// CheckFailClosed returns the reads that granted access although they ran entirely
// inside a window in which the state they depend on could not be read: a node that
// cannot read revocation state must refuse, not guess.
func CheckFailClosed(ops []Op, blind []Window) []Op {
	var out []Op
	for _, op := range ops {
		if op.Kind != Read || !op.OK || !op.Granted {
			continue
		}
		for _, w := range blind {
			if op.Start.After(w.From) && op.End.Before(w.To) {
				out = append(out, op)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}
