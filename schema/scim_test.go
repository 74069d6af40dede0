package schema_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestSCIMUserConcurrentEdits: concurrent edits of one User each see the other's
// committed change (the row is locked and a serialization failure re-runs the edit on
// what is there now), so none is lost.
func TestSCIMUserConcurrentEdits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	u, err := s.CreateSCIMUser(ctx, op, sc, schema.SCIMUser{UserName: "bjensen", DisplayName: "Babs", Active: true, Data: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, _, _, err := s.UpdateSCIMUser(ctx, op, sc, u.ID, func(cur schema.SCIMUser) (schema.SCIMUser, error) {
				data := map[string]any{}
				for k, v := range cur.Data {
					data[k] = v
				}
				data[fmt.Sprintf("k%d", i)] = true
				cur.Data = data
				return cur, nil
			}, "")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetSCIMUser(ctx, sc, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != writers {
		t.Fatalf("after %d concurrent edits the user holds %d of them: %v", writers, len(got.Data), got.Data)
	}
}

// TestSCIMUserStore: uniqueness (userName without regard to case, externalId), a
// refused edit writes nothing, DELETE frees the names, and a listing past
// MaxSCIMScan is refused unless an indexed lookup narrows it.
func TestSCIMUserStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	mk := func(name, ext string) (schema.SCIMUser, error) {
		return s.CreateSCIMUser(ctx, op, sc, schema.SCIMUser{UserName: name, ExternalID: ext, DisplayName: name, Active: true, Data: map[string]any{}})
	}
	a, err := mk("alice", "a-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, ext, field string }{{"ALICE", "", "userName"}, {"bob", "a-1", "externalId"}} {
		_, err := mk(tt.name, tt.ext)
		var ce *schema.ConflictError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("create %s/%s: %v, want a conflict on %s", tt.name, tt.ext, err, tt.field)
		}
	}
	refused := errors.New("refused")
	if _, _, _, err := s.UpdateSCIMUser(ctx, op, sc, a.ID, func(u schema.SCIMUser) (schema.SCIMUser, error) {
		u.UserName = "changed"
		return u, refused
	}, ""); !errors.Is(err, refused) {
		t.Fatalf("refused edit: %v", err)
	}
	if got, _ := s.GetSCIMUser(ctx, sc, a.ID); got.UserName != "alice" {
		t.Fatalf("a refused edit wrote: %+v", got)
	}
	if _, err := s.DeleteSCIMUser(ctx, op, sc, a.ID, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSCIMUser(ctx, sc, a.ID); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	if _, err := mk("Alice", "a-1"); err != nil {
		t.Fatalf("rehire: %v", err)
	}

	if _, err := s.Pool().Exec(ctx, `INSERT INTO identities (tenant_id, crdb_region, kind, display_name, user_name)
SELECT $1, $2, 'human', 'u' || i, 'u' || i FROM generate_series(1, $3::INT) AS i`, sc.TenantID, sc.Region, schema.MaxSCIMScan); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListSCIMUsers(ctx, sc, schema.SCIMLookup{}); !errors.Is(err, schema.ErrTooMany) {
		t.Fatalf("listing %d users: %v, want ErrTooMany", schema.MaxSCIMScan+1, err)
	}
	us, err := s.ListSCIMUsers(ctx, sc, schema.SCIMLookup{Attr: "userName", Value: "U42"})
	if err != nil || len(us) != 1 || us[0].UserName != "u42" {
		t.Fatalf("lookup by userName: %v %v", us, err)
	}
}
