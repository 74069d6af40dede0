package history_test

import (
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

func TestCheckRevocations(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	revoke := history.Op{Kind: history.Revoke, Key: "tok", Start: at(10), End: at(20), OK: true, Node: "us-east-1"}
	tests := []struct {
		name       string
		ops        []history.Op
		violations int
	}{
		{"stale read after revoke", []history.Op{revoke,
			{Kind: history.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: true, Node: "eu-west-1"}}, 1},
		{"read concurrent with revoke may grant", []history.Op{revoke,
			{Kind: history.Read, Key: "tok", Start: at(15), End: at(30), OK: true, Granted: true}}, 0},
		{"read before revoke grants", []history.Op{revoke,
			{Kind: history.Read, Key: "tok", Start: at(1), End: at(5), OK: true, Granted: true}}, 0},
		{"denied read after revoke", []history.Op{revoke,
			{Kind: history.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: false}}, 0},
		{"failed read proves nothing", []history.Op{revoke,
			{Kind: history.Read, Key: "tok", Start: at(25), End: at(30), OK: false, Granted: true}}, 0},
		{"unacknowledged revoke is no promise", []history.Op{{Kind: history.Revoke, Key: "tok", Start: at(10), End: at(20), OK: false},
			{Kind: history.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: true}}, 0},
		{"other key unaffected", []history.Op{revoke,
			{Kind: history.Read, Key: "other", Start: at(25), End: at(30), OK: true, Granted: true}}, 0},
		{"earliest acknowledged revoke counts", []history.Op{revoke,
			{Kind: history.Revoke, Key: "tok", Start: at(40), End: at(50), OK: true},
			{Kind: history.Read, Key: "tok", Start: at(30), End: at(35), OK: true, Granted: true}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := history.CheckRevocations(tt.ops)
			if len(got) != tt.violations {
				t.Fatalf("got %d violations %v, want %d", len(got), got, tt.violations)
			}
			for _, v := range got {
				if v.String() == "" {
					t.Fatal("empty violation description")
				}
			}
		})
	}
	if n := history.ReadsAfterRevoke(tests[0].ops); n != 1 {
		t.Fatalf("ReadsAfterRevoke: got %d, want 1", n)
	}
}

func TestReadsAfterRevoke(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	revoke := history.Op{Kind: history.Revoke, Key: "tok", Start: at(10), End: at(20), OK: true}
	read := func(key string, start int, ok, granted bool) history.Op {
		return history.Op{Kind: history.Read, Key: key, Start: at(start), End: at(start + 5), OK: ok, Granted: granted}
	}
	tests := []struct {
		name string
		ops  []history.Op
		want int
	}{
		{"no revoke tests nothing", []history.Op{read("tok", 25, true, true)}, 0},
		{"unacknowledged revoke tests nothing", []history.Op{{Kind: history.Revoke, Key: "tok", Start: at(10), End: at(20)},
			read("tok", 25, true, false)}, 0},
		{"read before the revoke", []history.Op{revoke, read("tok", 1, true, true)}, 0},
		{"read concurrent with the revoke", []history.Op{revoke, read("tok", 15, true, false)}, 0},
		{"failed read after the revoke", []history.Op{revoke, read("tok", 25, false, false)}, 0},
		{"read of another key", []history.Op{revoke, read("other", 25, true, false)}, 0},
		{"denied and granted reads after the revoke both count", []history.Op{revoke, read("tok", 25, true, false),
			read("tok", 30, true, true)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := history.ReadsAfterRevoke(tt.ops); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}
