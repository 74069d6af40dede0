package chaos_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/keyplane/keyplane/chaos"
	"github.com/keyplane/keyplane/deploy/deploytest"
)

func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }

// TestDrills runs a short version of every drill against a real three-region cluster
// and fails on any broken invariant (and on a drill that could not run).
func TestDrills(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, chaos.Config{Drills: []string{"all"}, Hold: 2 * time.Second, Steady: time.Second, Workers: 1,
		Binary: deploytest.Binary})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drills) != len(chaos.Drills) {
		t.Fatalf("%d drills ran, want %d", len(rep.Drills), len(chaos.Drills))
	}
	for _, d := range rep.Drills {
		t.Run(d.Name, func(t *testing.T) {
			if d.Failed != "" {
				t.Fatalf("the drill could not run: %s", d.Failed)
			}
			for _, v := range d.Violations {
				t.Errorf("revocation: %s", v)
			}
			for _, l := range d.LostWrites {
				t.Errorf("lost write: %s", l)
			}
			for _, l := range d.AppliedTwice {
				t.Errorf("applied twice: %s", l)
			}
			for _, l := range d.OutsideResidency {
				t.Errorf("outside residency: %s", l)
			}
			for _, f := range d.FailOpen {
				t.Errorf("fail open: %s", f)
			}
			if d.Ops == 0 || d.Writes == 0 {
				t.Errorf("the load did nothing: %d calls, %d writes", d.Ops, d.Writes)
			}
			if d.Name == "revocation-race" && d.ReadsAfterRevoke == 0 {
				t.Error("no read started after a revoke: the race tested nothing")
			}
			t.Logf("%d calls, %d errors (%d safe to retry), %d reads after revoke, target %q: %s (met %v)",
				d.Ops, len(d.Errors), d.SafeErrors, d.ReadsAfterRevoke, d.Target, d.TargetGot, d.TargetMet)
		})
	}
}
