package history_test

import (
	"fmt"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
)

// A read that starts after a revoke was acknowledged must not grant access. The
// history below has one such stale read, on another node.
func ExampleCheckRevocations() {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ops := []history.Op{
		{Kind: history.Revoke, Key: "session-1", Start: at(0), End: at(40), OK: true, Node: "us-east"},
		{Kind: history.Read, Key: "session-1", Start: at(20), End: at(30), OK: true, Granted: true, Node: "eu-west"}, // concurrent: either answer
		{Kind: history.Read, Key: "session-1", Start: at(55), End: at(60), OK: true, Granted: true, Node: "eu-west"}, // stale
	}
	fmt.Println("reads that tested the revoke:", history.ReadsAfterRevoke(ops))
	for _, v := range history.CheckRevocations(ops) {
		fmt.Println(v)
	}
	// Output:
	// reads that tested the revoke: 1
	// key session-1: revoke acknowledged at 12:00:00.040000 (node us-east), read started 15ms later on node eu-west and granted access
}
