package schema_test

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// logDecisions writes n decisions of sc one second apart ending at end (newest last),
// alternating allowed and denied, principals p[i%2], resources "docs/<i%3>/x", and
// returns their ids oldest first.
func logDecisions(t *testing.T, s *schema.Store, sc schema.Scope, n int, end time.Time, p [2]string) []string {
	t.Helper()
	var ds []schema.Decision
	var ids []string
	for i := range n {
		id := uuid.NewString()
		ids = append(ids, id)
		ds = append(ds, schema.Decision{ID: id, TenantID: sc.TenantID, Region: sc.Region, At: end.Add(time.Duration(i-n+1) * time.Second),
			PrincipalID: p[i%2], Permission: "docs.document.read", Resource: []string{"docs/0/x", "docs/1/x", "docs_2/x"}[i%3],
			Allowed: i%2 == 0, Reason: "r", Revision: 1, Trace: []string{"line " + id}})
	}
	if err := s.WriteDecisions(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestListDecisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	other := mustTenant(t, s, "other", "us-east").Scope()
	now := time.Now().Truncate(time.Microsecond)
	p := [2]string{uuid.NewString(), uuid.NewString()}
	ids := logDecisions(t, s, sc, 12, now, p)
	logDecisions(t, s, other, 5, now, p)
	epoch := time.Time{}
	yes, no := true, false

	all := func(f schema.DecisionFilter, notBefore time.Time, size int) []string {
		t.Helper()
		var got []string
		token, pages := "", 0
		for {
			ds, next, err := s.ListDecisions(ctx, sc, f, notBefore, schema.Page{Size: size, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				got = append(got, d.ID)
			}
			pages++
			if next == "" {
				return got
			}
			if pages > 20 {
				t.Fatal("listing does not end")
			}
			token = next
		}
	}
	rev := func(ids []string) []string { out := slices.Clone(ids); slices.Reverse(out); return out }
	pick := func(keep func(i int) bool) []string {
		var out []string
		for i, id := range ids {
			if keep(i) {
				out = append(out, id)
			}
		}
		return rev(out)
	}
	for _, tc := range []struct {
		name      string
		f         schema.DecisionFilter
		notBefore time.Time
		want      []string
	}{
		{"all, newest first", schema.DecisionFilter{}, epoch, rev(ids)},
		{"principal", schema.DecisionFilter{PrincipalID: p[1]}, epoch, pick(func(i int) bool { return i%2 == 1 })},
		{"denied", schema.DecisionFilter{Allowed: &no}, epoch, pick(func(i int) bool { return i%2 == 1 })},
		{"allowed", schema.DecisionFilter{Allowed: &yes}, epoch, pick(func(i int) bool { return i%2 == 0 })},
		{"resource", schema.DecisionFilter{Resource: "docs/1/x"}, epoch, pick(func(i int) bool { return i%3 == 1 })},
		// "_" is a LIKE wildcard: the prefix "docs_" must not match "docs/".
		{"prefix with underscore", schema.DecisionFilter{ResourcePrefix: "docs_"}, epoch, pick(func(i int) bool { return i%3 == 2 })},
		{"prefix", schema.DecisionFilter{ResourcePrefix: "docs/"}, epoch, pick(func(i int) bool { return i%3 != 2 })},
		{"permission none", schema.DecisionFilter{Permission: "docs.document.write"}, epoch, nil},
		{"time range", schema.DecisionFilter{Start: now.Add(-5 * time.Second), End: now.Add(-2 * time.Second)}, epoch,
			pick(func(i int) bool { return i >= 6 && i < 9 })},
		{"retention horizon", schema.DecisionFilter{}, now.Add(-3 * time.Second), pick(func(i int) bool { return i >= 8 })},
		{"combined", schema.DecisionFilter{PrincipalID: p[0], ResourcePrefix: "docs/0"}, epoch, pick(func(i int) bool { return i%6 == 0 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{1, 5, 100} {
				if got := all(tc.f, tc.notBefore, size); !slices.Equal(got, tc.want) {
					t.Fatalf("page size %d: got %v, want %v", size, got, tc.want)
				}
			}
		})
	}

	d, err := s.GetDecision(ctx, sc, ids[3], epoch)
	if err != nil || d.PrincipalID != p[1] || d.Resource != "docs/0/x" || d.Allowed || !slices.Equal(d.Trace, []string{"line " + ids[3]}) ||
		d.ServingRegion == "" || d.Node == "" || d.Region != "us-east" {
		t.Fatalf("get: %+v %v", d, err)
	}
	if _, err := s.GetDecision(ctx, other, ids[3], epoch); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("another tenant's decision: %v, want not found", err)
	}
	if _, err := s.GetDecision(ctx, sc, ids[3], now); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("a decision past the retention: %v, want not found", err)
	}

	for _, tc := range []struct {
		name, field string
		f           schema.DecisionFilter
		p           schema.Page
	}{
		{"principal not a uuid", "principal_id", schema.DecisionFilter{PrincipalID: "alice"}, schema.Page{}},
		{"start after end", "start_time", schema.DecisionFilter{Start: now, End: now.Add(-time.Second)}, schema.Page{}},
		{"both resource filters", "resource_prefix", schema.DecisionFilter{Resource: "a", ResourcePrefix: "a"}, schema.Page{}},
		{"tampered token", "page_token", schema.DecisionFilter{}, schema.Page{Token: base64.RawURLEncoding.EncodeToString([]byte(`{"a":"2026-01-01T00:00:00Z","i":"x"}`))}},
		{"garbage token", "page_token", schema.DecisionFilter{}, schema.Page{Token: "!!"}},
		{"page size", "page_size", schema.DecisionFilter{}, schema.Page{Size: 1001}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.ListDecisions(ctx, sc, tc.f, epoch, tc.p)
			var fe *schema.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want a field error on %s", err, tc.field)
			}
		})
	}
}

func TestPruneDecisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	other := mustTenant(t, s, "other", "us-east").Scope()
	now := time.Now().Truncate(time.Microsecond)
	p := [2]string{uuid.NewString(), uuid.NewString()}
	ids := logDecisions(t, s, sc, 10, now, p)
	logDecisions(t, s, other, 10, now, p)

	cutoff := now.Add(-3 * time.Second) // ids[0..5] are older
	if n, err := s.PruneDecisions(ctx, sc, cutoff, 4); err != nil || n != 4 {
		t.Fatalf("first batch: %d %v, want 4", n, err)
	}
	if _, err := s.GetDecision(ctx, sc, ids[4], time.Time{}); err != nil {
		t.Fatalf("the batch deleted beyond its oldest 4: %v", err)
	}
	if n, err := s.PruneDecisions(ctx, sc, cutoff, 4); err != nil || n != 2 {
		t.Fatalf("second batch: %d %v, want 2", n, err)
	}
	if n, err := s.PruneDecisions(ctx, sc, cutoff, 4); err != nil || n != 0 {
		t.Fatalf("third batch: %d %v, want 0", n, err)
	}
	if n, err := s.CountDecisions(ctx, sc); err != nil || n != 4 {
		t.Fatalf("acme keeps %d (%v), want the 4 newer", n, err)
	}
	if n, err := s.CountDecisions(ctx, other); err != nil || n != 10 {
		t.Fatalf("other tenant keeps %d (%v), want 10", n, err)
	}
	ts, err := s.TenantsHomedIn(ctx, "us-east")
	if err != nil || len(ts) != 2 || ts[0].Retention != schema.DefaultDecisionRetention {
		t.Fatalf("tenants homed in us-east: %+v %v", ts, err)
	}
	if ts, err := s.TenantsHomedIn(ctx, "eu-west"); err != nil || len(ts) != 0 {
		t.Fatalf("tenants homed in eu-west: %+v %v", ts, err)
	}
}

func TestDecisionRetentionBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	mustTenant(t, s, "acme", "us-east")
	for _, d := range []time.Duration{time.Hour, 11 * 365 * 24 * time.Hour, 48*time.Hour + time.Millisecond} {
		_, err := s.UpdateTenant(ctx, op, "acme", schema.TenantUpdate{DecisionRetention: &d})
		var fe *schema.FieldError
		if !errors.As(err, &fe) || fe.Field != "decision_retention" {
			t.Errorf("retention %v: got %v, want a field error on decision_retention", d, err)
		}
	}
	d := 7 * 24 * time.Hour
	got, err := s.UpdateTenant(ctx, op, "acme", schema.TenantUpdate{DecisionRetention: &d})
	if err != nil || got.DecisionRetention != d {
		t.Fatalf("update: %+v %v", got, err)
	}
	if _, err := s.CreateTenant(ctx, op, schema.NewTenant{ID: "beta", Name: "B", HomeRegion: "us-east", DecisionRetention: time.Minute}); err == nil {
		t.Fatal("create with a one-minute retention: want an error")
	}
}

// FuzzListDecisionsFilter: whatever the filter strings and page token, ListDecisions
// answers or refuses with a field error (never a database error), and a resource
// prefix matches exactly the resources that start with it (LIKE's wildcards and
// escape character in the prefix are literal).
func FuzzListDecisionsFilter(f *testing.F) {
	for _, seed := range [][3]string{
		{"docs/", "", ""}, {"docs_", "", ""}, {"docs%", "", ""}, {`docs\`, "", ""}, {"%", "", ""}, {"_", "", ""}, {`\%`, "", ""},
		{"", "not-a-uuid", ""}, {"", "", "!!"}, {"", "", base64.RawURLEncoding.EncodeToString([]byte(`{"a":"x","i":"y"}`))},
		{"a\x00", "", ""}, {"\xff", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	s := schematest.NewStore(f, "us-east")
	tn, err := s.CreateTenant(context.Background(), op, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"})
	if err != nil {
		f.Fatal(err)
	}
	sc := tn.Scope()
	resources := []string{"docs/a", "docs_a", "docs%a", `docs\a`, "docsXa", "%", "_", `\%x`, "other"}
	var ds []schema.Decision
	now := time.Now()
	for i, r := range resources {
		ds = append(ds, schema.Decision{ID: uuid.NewString(), TenantID: sc.TenantID, Region: sc.Region, At: now.Add(time.Duration(i) * time.Millisecond),
			PrincipalID: "p", Permission: "docs.document.read", Resource: r, Reason: "r", Revision: 1})
	}
	if err := s.WriteDecisions(context.Background(), ds); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, prefix, principal, token string) {
		got, _, err := s.ListDecisions(context.Background(), sc, schema.DecisionFilter{ResourcePrefix: prefix, PrincipalID: principal},
			time.Time{}, schema.Page{Token: token})
		if err != nil {
			var fe *schema.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("prefix %q principal %q token %q: %v, want a field error", prefix, principal, token, err)
			}
			return
		}
		if principal != "" || token != "" {
			return // a valid principal filter selects none of "p"'s; a valid token is a position
		}
		want := 0
		for _, r := range resources {
			if strings.HasPrefix(r, prefix) {
				want++
			}
		}
		for _, d := range got {
			if !strings.HasPrefix(d.Resource, prefix) {
				t.Fatalf("prefix %q matched %q", prefix, d.Resource)
			}
		}
		if len(got) != want {
			t.Fatalf("prefix %q matched %d decisions, want %d", prefix, len(got), want)
		}
	})
}
