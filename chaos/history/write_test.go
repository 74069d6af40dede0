package history_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

func TestCheckWrites(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	acked := []history.Write{{Tenant: "acme", ID: "a", At: at}, {Tenant: "acme", ID: "b", At: at}, {Tenant: "globex", ID: "c", At: at}}
	tests := []struct {
		name  string
		found map[string]history.Found
		lost  []string // ids
		says  string
	}{
		{"every write present once", map[string]history.Found{"acme/a": {true, 1}, "acme/b": {true, 1}, "globex/c": {true, 1}}, nil, ""},
		{"a write is missing", map[string]history.Found{"acme/a": {true, 1}, "globex/c": {true, 1}}, []string{"b"}, "is missing"},
		{"a write has no audit event", map[string]history.Found{"acme/a": {true, 0}, "acme/b": {true, 1}, "globex/c": {true, 1}}, []string{"a"}, "0 audit events"},
		{"a write is audited twice", map[string]history.Found{"acme/a": {true, 1}, "acme/b": {true, 2}, "globex/c": {true, 1}}, []string{"b"}, "2 audit events"},
		{"same id in another tenant does not count", map[string]history.Found{"acme/a": {true, 1}, "acme/b": {true, 1}, "acme/c": {true, 1}}, []string{"c"}, "is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := history.CheckWrites(acked, tt.found)
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

func TestCheckAppliedOnce(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	tried := []history.Write{{Tenant: "acme", Name: "w1", At: at}, {Tenant: "acme", Name: "w2", At: at}, {Tenant: "globex", Name: "w1", At: at}}
	if got := history.CheckAppliedOnce(tried, map[string]int{"acme/w1": 1, "globex/w1": 1}); len(got) != 0 {
		t.Fatalf("each applied once or not at all: %v", got)
	}
	got := history.CheckAppliedOnce(tried, map[string]int{"acme/w1": 1, "acme/w2": 2, "globex/w1": 1})
	if len(got) != 1 || !strings.Contains(got[0], `"w2"`) || !strings.Contains(got[0], "applied 2 times") {
		t.Fatalf("w2 applied twice: %v", got)
	}
}

func TestCheckResidency(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	serve := map[string][]string{"vault": {"eu-west", "eu-central"}}
	ops := []history.Op{
		{Tenant: "vault", Name: "check", OK: true, Node: "eu-west/eu-west-1", End: at},
		{Tenant: "vault", Name: "check", OK: true, Node: "eu-central/eu-central-2", End: at},
		{Tenant: "vault", Name: "validate", OK: false, End: at},                        // refused: served by nobody
		{Tenant: "acme", Name: "check", OK: true, Node: "us-east/us-east-1", End: at},  // relaxed
		{Tenant: "vault", Name: "write", OK: true, Node: "us-east/us-east-2", End: at}, // outside
	}
	got := history.CheckResidency(ops, serve)
	if len(got) != 1 || !strings.Contains(got[0], "us-east/us-east-2") || !strings.Contains(got[0], "write") {
		t.Fatalf("violations %v, want the one write served by us-east/us-east-2", got)
	}
}
