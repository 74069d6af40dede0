package chaos_test

import (
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos"
)

func TestCheckRevocations(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	revoke := chaos.Op{Kind: chaos.Revoke, Key: "tok", Start: at(10), End: at(20), OK: true, Node: "us-east-1"}
	tests := []struct {
		name       string
		ops        []chaos.Op
		violations int
	}{
		{"stale read after revoke", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: true, Node: "eu-west-1"}}, 1},
		{"read concurrent with revoke may grant", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "tok", Start: at(15), End: at(30), OK: true, Granted: true}}, 0},
		{"read before revoke grants", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "tok", Start: at(1), End: at(5), OK: true, Granted: true}}, 0},
		{"denied read after revoke", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: false}}, 0},
		{"failed read proves nothing", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "tok", Start: at(25), End: at(30), OK: false, Granted: true}}, 0},
		{"unacknowledged revoke is no promise", []chaos.Op{{Kind: chaos.Revoke, Key: "tok", Start: at(10), End: at(20), OK: false},
			{Kind: chaos.Read, Key: "tok", Start: at(25), End: at(30), OK: true, Granted: true}}, 0},
		{"other key unaffected", []chaos.Op{revoke,
			{Kind: chaos.Read, Key: "other", Start: at(25), End: at(30), OK: true, Granted: true}}, 0},
		{"earliest acknowledged revoke counts", []chaos.Op{revoke,
			{Kind: chaos.Revoke, Key: "tok", Start: at(40), End: at(50), OK: true},
			{Kind: chaos.Read, Key: "tok", Start: at(30), End: at(35), OK: true, Granted: true}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chaos.CheckRevocations(tt.ops)
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
	if n := chaos.ReadsAfterRevoke(tests[0].ops); n != 1 {
		t.Fatalf("ReadsAfterRevoke: got %d, want 1", n)
	}
}
