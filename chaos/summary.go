package chaos

import (
	"bytes"
	"fmt"
	"io"
)

// WriteSummary writes one line per drill for a terminal: whether its invariants held,
// how many calls the load made, and its target as measured.
func WriteSummary(w io.Writer, r Report) error {
	var b bytes.Buffer
	for _, d := range r.Drills {
		status := "invariants held"
		if !d.Passed() {
			status = "INVARIANT BROKEN"
		}
		fmt.Fprintf(&b, "%-16s %-17s %6d calls  target %q: %s\n", d.Name, status, d.Ops, d.Target, d.TargetGot)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}
