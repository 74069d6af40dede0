package chaos_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos"
)

func TestCheckWrites(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	acked := []chaos.Write{{Tenant: "acme", ID: "a", At: at}, {Tenant: "acme", ID: "b", At: at}, {Tenant: "globex", ID: "c", At: at}}
	tests := []struct {
		name  string
		found map[string]chaos.Found
		lost  []string // ids
		says  string
	}{
		{"every write present once", map[string]chaos.Found{"acme/a": {true, 1}, "acme/b": {true, 1}, "globex/c": {true, 1}}, nil, ""},
		{"a write is missing", map[string]chaos.Found{"acme/a": {true, 1}, "globex/c": {true, 1}}, []string{"b"}, "is missing"},
		{"a write has no audit event", map[string]chaos.Found{"acme/a": {true, 0}, "acme/b": {true, 1}, "globex/c": {true, 1}}, []string{"a"}, "0 audit events"},
		{"a write is audited twice", map[string]chaos.Found{"acme/a": {true, 1}, "acme/b": {true, 2}, "globex/c": {true, 1}}, []string{"b"}, "2 audit events"},
		{"same id in another tenant does not count", map[string]chaos.Found{"acme/a": {true, 1}, "acme/b": {true, 1}, "acme/c": {true, 1}}, []string{"c"}, "is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chaos.CheckWrites(acked, tt.found)
			if len(got) != len(tt.lost) {
				t.Fatalf("got %d lost writes %v, want %v", len(got), got, tt.lost)
			}
			for i, l := range got {
				if l.Write.ID != tt.lost[i] || !strings.Contains(l.String(), tt.says) {
					t.Errorf("lost write %d = %s, want id %s saying %q", i, l, tt.lost[i], tt.says)
				}
			}
		})
	}
}

func TestCheckFailClosed(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	blind := []chaos.Window{{Label: "db frozen", From: at(1000), To: at(3000)}}
	read := func(start, end int, ok, granted bool) chaos.Op {
		return chaos.Op{Kind: chaos.Read, Key: "s1", Start: at(start), End: at(end), OK: ok, Granted: granted}
	}
	tests := []struct {
		name string
		ops  []chaos.Op
		want int
	}{
		{"granted inside the window", []chaos.Op{read(1200, 1300, true, true)}, 1},
		{"denied inside the window", []chaos.Op{read(1200, 1300, true, false)}, 0},
		{"failed inside the window", []chaos.Op{read(1200, 1300, false, false)}, 0},
		{"started before the window", []chaos.Op{read(900, 1100, true, true)}, 0},
		{"ended after the window", []chaos.Op{read(2900, 3100, true, true)}, 0},
		{"granted before and after", []chaos.Op{read(100, 200, true, true), read(3100, 3200, true, true)}, 0},
		{"revokes are not reads", []chaos.Op{{Kind: chaos.Revoke, Key: "s1", Start: at(1200), End: at(1300), OK: true}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chaos.CheckFailClosed(tt.ops, blind); len(got) != tt.want {
				t.Errorf("got %d fail-open reads %v, want %d", len(got), got, tt.want)
			}
		})
	}
}

func TestFailover(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	op := func(client string, start, end int, ok bool) chaos.Op {
		return chaos.Op{Client: client, Start: at(start), End: at(end), OK: ok}
	}
	fault := at(1000)
	ops := []chaos.Op{
		op("eu/1", 500, 900, true),    // before the fault
		op("eu/1", 950, 1100, true),   // started before the fault: does not count as recovered
		op("eu/1", 1100, 1500, false), // error
		op("eu/1", 1500, 1900, false), // error
		op("eu/1", 1900, 2400, true),  // first success: 1400 ms after the fault
		op("eu/1", 2400, 2500, false), // after recovery: not counted
		op("us/1", 1050, 1080, true),  // never noticed
		op("ap/1", 1200, 1300, false), // never recovered
	}
	got := chaos.Failover(ops, fault)
	want := []chaos.Recovery{{Client: "ap/1", FirstSuccess: -1, Errors: 1}, {Client: "eu/1", FirstSuccess: 1400 * time.Millisecond, Errors: 2},
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
