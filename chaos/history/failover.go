package history

import (
	"sort"
	"time"
)

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
