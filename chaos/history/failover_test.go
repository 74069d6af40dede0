package history_test

import (
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

func TestFailover(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	op := func(client string, start, end int, ok bool) history.Op {
		return history.Op{Client: client, Start: at(start), End: at(end), OK: ok}
	}
	fault := at(1000)
	ops := []history.Op{
		op("eu/1", 500, 900, true),    // before the fault
		op("eu/1", 950, 1100, true),   // started before the fault: does not count as recovered
		op("eu/1", 1100, 1500, false), // error
		op("eu/1", 1500, 1900, false), // error
		op("eu/1", 1900, 2400, true),  // first success: 1400 ms after the fault
		op("eu/1", 2400, 2500, false), // after recovery: not counted
		op("us/1", 1050, 1080, true),  // never noticed
		op("ap/1", 1200, 1300, false), // never recovered
	}
	got := history.Failover(ops, fault)
	want := []history.Recovery{{Client: "ap/1", FirstSuccess: -1, Errors: 1}, {Client: "eu/1", FirstSuccess: 1400 * time.Millisecond, Errors: 2},
		{Client: "us/1", FirstSuccess: 80 * time.Millisecond}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("recovery %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
