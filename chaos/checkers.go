package chaos

import (
	"fmt"
	"sort"
	"time"
)

// Write is an acknowledged admin write the load made: it must exist afterwards, with
// exactly one audit event.
type Write struct {
	Tenant string
	ID     string // the created object's id
	At     time.Time
	Node   string
}

// Found is what the final read-back saw of a write.
type Found struct {
	Present     bool
	AuditEvents int // audit events naming the object as their target with the create action
}

// LostWrite is an acknowledged write that is missing, or whose audit trail is wrong.
type LostWrite struct {
	Write Write
	Found Found
}

func (l LostWrite) String() string {
	if !l.Found.Present {
		return fmt.Sprintf("write %s/%s acknowledged at %s (node %s) is missing", l.Write.Tenant, l.Write.ID,
			l.Write.At.Format("15:04:05.000"), l.Write.Node)
	}
	return fmt.Sprintf("write %s/%s acknowledged at %s (node %s) has %d audit events, want exactly 1", l.Write.Tenant, l.Write.ID,
		l.Write.At.Format("15:04:05.000"), l.Write.Node, l.Found.AuditEvents)
}

// CheckWrites checks that no acknowledged write was lost: each is present afterwards
// with exactly one audit event. found is keyed by Tenant + "/" + ID; a write missing
// from it counts as not present.
func CheckWrites(acked []Write, found map[string]Found) []LostWrite {
	var out []LostWrite
	for _, w := range acked {
		f := found[w.Tenant+"/"+w.ID]
		if !f.Present || f.AuditEvents != 1 {
			out = append(out, LostWrite{Write: w, Found: f})
		}
	}
	return out
}

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

// Recovery is one client's failover after a fault.
type Recovery struct {
	Client string
	// FirstSuccess is the time from the fault to the end of the client's first
	// successful call that started after the fault; negative when none succeeded.
	FirstSuccess time.Duration
	// Errors counts the client's failed calls that ended between the fault and that
	// first success.
	Errors int
}

// Failover measures, for every client in ops, how long after the fault at it got its
// first success, and how many errors it saw meanwhile.
func Failover(ops []Op, at time.Time) []Recovery {
	byClient := map[string][]Op{}
	for _, op := range ops {
		byClient[op.Client] = append(byClient[op.Client], op)
	}
	var out []Recovery
	for client, list := range byClient {
		sort.Slice(list, func(i, j int) bool { return list[i].End.Before(list[j].End) })
		r := Recovery{Client: client, FirstSuccess: -1}
		for _, op := range list {
			if op.End.Before(at) {
				continue
			}
			if op.OK && op.Start.After(at) {
				r.FirstSuccess = op.End.Sub(at)
				break
			}
			if !op.OK {
				r.Errors++
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	return out
}
