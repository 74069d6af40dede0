package history

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Write is an acknowledged admin write the load made: it must exist afterwards, with
// exactly one audit event.
type Write struct {
	Tenant string
	ID     string // the created object's id
	Name   string // its unique display name
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

// CheckAppliedOnce checks that no write was applied twice: every write the load
// attempted, acknowledged or not, creates an object under a name no other attempt
// uses, so a name found on more than one object afterwards is a write applied twice (a
// retry or a failover that was not deduplicated). applied counts the objects found per
// Tenant + "/" + Name.
func CheckAppliedOnce(attempted []Write, applied map[string]int) []string {
	var out []string
	for _, w := range attempted {
		if n := applied[w.Tenant+"/"+w.Name]; n > 1 {
			out = append(out, fmt.Sprintf("write %q of tenant %s attempted at %s was applied %d times", w.Name, w.Tenant, w.At.Format("15:04:05.000"), n))
		}
	}
	return out
}

// CheckResidency checks that no answer about a residency-strict tenant came from a
// node outside its regions: serve maps such a tenant to its regions, and an answer's
// Node is the Keyplane-Served-By "region/node" of the node that served it.
func CheckResidency(ops []Op, serve map[string][]string) []string {
	var out []string
	for _, op := range ops {
		regions, strict := serve[op.Tenant]
		if !strict || !op.OK || op.Node == "" {
			continue
		}
		region, _, _ := strings.Cut(op.Node, "/")
		if !slices.Contains(regions, region) {
			out = append(out, fmt.Sprintf("%s of residency-strict tenant %s (served only in %s) was served by %s at %s", op.Name, op.Tenant,
				strings.Join(regions, ", "), op.Node, op.End.Format("15:04:05.000")))
		}
	}
	return out
}
