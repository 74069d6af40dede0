package history_test

import (
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

func TestCheckFailClosed(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	blind := []history.Window{{Label: "db frozen", From: at(1000), To: at(3000)}}
	read := func(start, end int, ok, granted bool) history.Op {
		return history.Op{Kind: history.Read, Key: "s1", Start: at(start), End: at(end), OK: ok, Granted: granted}
	}
	tests := []struct {
		name string
		ops  []history.Op
		want int
	}{
		{"granted inside the window", []history.Op{read(1200, 1300, true, true)}, 1},
		{"denied inside the window", []history.Op{read(1200, 1300, true, false)}, 0},
		{"failed inside the window", []history.Op{read(1200, 1300, false, false)}, 0},
		{"started before the window", []history.Op{read(900, 1100, true, true)}, 0},
		{"ended after the window", []history.Op{read(2900, 3100, true, true)}, 0},
		{"granted before and after", []history.Op{read(100, 200, true, true), read(3100, 3200, true, true)}, 0},
		{"revokes are not reads", []history.Op{{Kind: history.Revoke, Key: "s1", Start: at(1200), End: at(1300), OK: true}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := history.CheckFailClosed(tt.ops, blind); len(got) != tt.want {
				t.Errorf("got %d fail-open reads %v, want %d", len(got), got, tt.want)
			}
		})
	}
}
