package schema_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestTakeLoginSlotConcurrent: of 25 concurrent attempts from one source exactly the
// free ones get a slot; the statement counts them one after another.
func TestTakeLoginSlotConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	th := schema.Throttle{SourceFree: 5, SourceDelay: time.Hour, SourceMaxDelay: 2 * time.Hour, LockAfter: 50, LockFor: time.Hour, Window: 24 * time.Hour}
	now := time.Now()
	subject := schema.LoginSubject("Carol@Acme.example")
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[schema.Slot]int{}
	for range 25 {
		wg.Go(func() {
			slot, err := s.TakeLoginSlot(ctx, sc, th, subject, "192.0.2.1", now)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[slot]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if got[schema.SlotTaken] != 5 || got[schema.SlotDelayed] != 20 {
		t.Fatalf("slots: %v; want 5 taken and 20 delayed", got)
	}
	if subject != schema.LoginSubject("carol@acme.example") {
		t.Fatal("the subject depends on the email's case")
	}
}

// TestTakeLoginSlotThrottle walks one login through the throttle with a hand-moved
// clock: free attempts, doubling delays per source, a hard lock only from many
// sources, and counts that restart after the window.
func TestTakeLoginSlotThrottle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	th := schema.Throttle{SourceFree: 2, SourceDelay: time.Second, SourceMaxDelay: 4 * time.Second, LockAfter: 7, LockFor: time.Minute, Window: time.Hour}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	sub := schema.LoginSubject("dave@acme.example")
	take := func(source string, want schema.Slot) {
		t.Helper()
		got, err := s.TakeLoginSlot(ctx, sc, th, sub, source, now)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("at %s from %s: slot %d, want %d", now.Format(time.TimeOnly), source, got, want)
		}
	}
	take("a", schema.SlotTaken)
	take("a", schema.SlotTaken) // the second free attempt starts a 1 s delay
	take("a", schema.SlotDelayed)
	now = now.Add(999 * time.Millisecond)
	take("a", schema.SlotDelayed)
	now = now.Add(time.Millisecond)
	take("a", schema.SlotTaken) // the third: 2 s
	now = now.Add(2 * time.Second)
	take("a", schema.SlotTaken) // the fourth: 4 s, the maximum
	now = now.Add(4 * time.Second)
	take("a", schema.SlotTaken) // the fifth: still 4 s
	now = now.Add(3 * time.Second)
	take("a", schema.SlotDelayed)
	// Another source is not delayed by a's failures; the 7th attempt in all locks.
	take("b", schema.SlotTaken) // 6th
	take("b", schema.SlotTaken) // 7th: locks for everyone
	take("c", schema.SlotLocked)
	for range 3 { // refused while the name is locked, and not counted against d
		take("d", schema.SlotLocked)
	}
	now = now.Add(time.Minute)
	take("c", schema.SlotTaken) // the lock is over and the name's count restarted
	take("d", schema.SlotTaken) // d's free attempts are whole: the lock did not spend them
	take("d", schema.SlotTaken)
	take("d", schema.SlotDelayed)
	// After the window without attempts, a's count starts again.
	now = now.Add(time.Hour + time.Second)
	take("a", schema.SlotTaken)
	take("a", schema.SlotTaken)
	take("a", schema.SlotDelayed)
	if err := s.PruneLoginThrottle(ctx, sc, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	take("a", schema.SlotTaken) // a's row was pruned
}

func TestThrottleValidate(t *testing.T) {
	t.Parallel()
	if err := schema.DefaultThrottle().Validate(); err != nil {
		t.Fatalf("default throttle: %v", err)
	}
	for name, change := range map[string]func(*schema.Throttle){
		"no free attempts":      func(th *schema.Throttle) { th.SourceFree = 0 },
		"no delay":              func(th *schema.Throttle) { th.SourceDelay = 0 },
		"max below delay":       func(th *schema.Throttle) { th.SourceMaxDelay = th.SourceDelay / 2 },
		"lock before free runs": func(th *schema.Throttle) { th.LockAfter = th.SourceFree - 1 },
		"no lock duration":      func(th *schema.Throttle) { th.LockFor = 0 },
		"window below the lock": func(th *schema.Throttle) { th.Window = th.LockFor - time.Second },
	} {
		th := schema.DefaultThrottle()
		change(&th)
		if err := th.Validate(); err == nil {
			t.Errorf("%s: %+v validated", name, th)
		}
	}
}

// TestTakeLoginSlotClocksOutOfOrder: concurrent attempts carry their own clocks, and
// their statements may run in another order than the clocks say. An attempt whose now
// is a little earlier than the one that ran before it is neither delayed nor locked by
// it (both were free attempts).
func TestTakeLoginSlotClocksOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	th := schema.Throttle{SourceFree: 3, SourceDelay: time.Hour, SourceMaxDelay: time.Hour, LockAfter: 10, LockFor: time.Hour, Window: 2 * time.Hour}
	sub := schema.LoginSubject("erin@acme.example")
	later := time.Date(2030, 1, 1, 0, 0, 0, 5000, time.UTC)
	earlier := later.Add(-3 * time.Microsecond)
	for _, at := range []struct {
		source string
		now    time.Time
	}{{"a", later}, {"a", earlier}, {"b", earlier}} {
		got, err := s.TakeLoginSlot(ctx, sc, th, sub, at.source, at.now)
		if err != nil {
			t.Fatal(err)
		}
		if got != schema.SlotTaken {
			t.Fatalf("from %s at %s after an attempt stamped later: slot %d, want taken", at.source, at.now.Format(time.StampMicro), got)
		}
	}
}
