package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

// TestHistoryVerdict: a read that started after its key's revocation was acknowledged
// and still granted access is a violation; reads before or concurrent with it are not.
func TestHistoryVerdict(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ops := []history.Op{
		{Kind: history.Revoke, Key: "a", Start: at(10), End: at(20), OK: true},
		{Kind: history.Read, Key: "a", Start: at(5), End: at(8), OK: true, Granted: true},   // before
		{Kind: history.Read, Key: "a", Start: at(15), End: at(25), OK: true, Granted: true}, // concurrent
		{Kind: history.Read, Key: "a", Start: at(30), End: at(31), OK: true},                // after, denied
		{Kind: history.Read, Key: "b", Start: at(30), End: at(31), OK: true, Granted: true}, // never revoked
		{Kind: history.Read, Key: "a", Start: at(40), End: at(41), OK: false},               // failed
	}
	c := verdict(ops)
	if c.Violations != 0 || c.Reads != 4 || c.Revokes != 1 || c.FailedReads != 1 || c.ReadsAfterRevoke != 1 {
		t.Fatalf("clean history: %+v", c)
	}
	ops = append(ops, history.Op{Kind: history.Read, Key: "a", Start: at(50), End: at(52), OK: true, Granted: true, Node: "n1"})
	c = verdict(ops)
	if c.Violations != 1 || !strings.Contains(c.FirstViolation, "key a") {
		t.Fatalf("stale read after the revoke: %+v, want one violation naming key a", c)
	}
}

// TestHistoryReported: the table and the Markdown report show both checkers' counts and
// the first violation.
func TestHistoryReported(t *testing.T) {
	rep := Report{History: &History{DurationS: 20, LoadOps: 100000, LoadThroughput: 5000,
		Tokens:   HistoryCheck{Reads: 900, ReadsAfterRevoke: 400, Revokes: 48},
		Bindings: HistoryCheck{Reads: 700, ReadsAfterRevoke: 300, Revokes: 12, Violations: 2, FirstViolation: "key b1: revoke acknowledged …"}}}
	var tb, md bytes.Buffer
	if err := WriteTable(&tb, rep); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarkdown(&md, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"revocation (validate vs revoke): 900 reads (400 after an acknowledged revoke), 48 revokes, 0 violations",
		"binding removal (check vs delete): 700 reads (300 after an acknowledged revoke), 12 revokes, 2 violations"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
	for _, want := range []string{"## Linearizability under load", "| revocation: ValidateToken vs RevokeToken | 900 | 400 | 0 | 48 | 0 |",
		"| binding removal: fresh Check vs DeleteBinding | 700 | 300 | 0 | 12 | 2 |", "First violation: key b1"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
}
