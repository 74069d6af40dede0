package schema_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

var op = schema.Change{Actor: "operator", RequestID: "req-1"}

func mustTenant(t *testing.T, s *schema.Store, id, region string) schema.Tenant {
	t.Helper()
	tn, err := s.CreateTenant(context.Background(), op, schema.NewTenant{ID: id, Name: "Tenant " + id, HomeRegion: region})
	if err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
	return tn
}

func mustHuman(t *testing.T, s *schema.Store, sc schema.Scope, name string) schema.Identity {
	t.Helper()
	i, err := s.CreateIdentity(context.Background(), op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: name})
	if err != nil {
		t.Fatalf("create human %s: %v", name, err)
	}
	return i
}

func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var fe *schema.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a FieldError on %s", err, field)
	}
	if fe.Field != field {
		t.Fatalf("got FieldError on %q (%v), want field %q", fe.Field, err, field)
	}
}

// auditActions lists the tenant's audit actions, oldest first.
func auditActions(t *testing.T, s *schema.Store, sc schema.Scope) []string {
	t.Helper()
	evs, _, err := s.ListAuditEvents(context.Background(), sc, schema.AuditFilter{}, schema.Page{Size: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e.Action
		if e.Region != "us-east" || e.Node != "us-east-test" || e.RequestID != "req-1" || e.Actor != "operator" {
			t.Errorf("audit event %s: region %q node %q request %q actor %q", e.Action, e.Region, e.Node, e.RequestID, e.Actor)
		}
	}
	return out
}

func TestTenantLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tn := mustTenant(t, s, "acme", "eu-west")
	if tn.HomeRegion != "eu-west" || tn.Residency != schema.ResidencyRegion || tn.Status != schema.StatusActive || tn.PolicyRevision != 1 {
		t.Fatalf("created tenant: %+v", tn)
	}
	if _, err := s.CreateTenant(ctx, op, schema.NewTenant{ID: "acme", Name: "again", HomeRegion: "us-east"}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("duplicate tenant: got %v, want ErrConflict", err)
	}
	got, err := s.GetTenant(ctx, "acme")
	if err != nil || got.Name != "Tenant acme" {
		t.Fatalf("get tenant: %+v %v", got, err)
	}
	if _, err := s.GetTenant(ctx, "nobody"); !errors.Is(err, schema.ErrNotFound) {
		t.Fatalf("get missing tenant: got %v, want ErrNotFound", err)
	}
	name := "Acme Corp"
	up, err := s.UpdateTenant(ctx, op, "acme", schema.TenantUpdate{Name: &name})
	if err != nil || up.Name != name || !up.UpdatedAt.After(tn.UpdatedAt) && !up.UpdatedAt.Equal(tn.UpdatedAt) {
		t.Fatalf("update tenant: %+v %v", up, err)
	}
	for range 2 { // the second disable is a no-op without an audit event
		if d, err := s.SetTenantStatus(ctx, op, "acme", schema.StatusDisabled); err != nil || d.Status != schema.StatusDisabled {
			t.Fatalf("disable tenant: %+v %v", d, err)
		}
	}
	if _, err := s.SetTenantStatus(ctx, op, "acme", schema.StatusActive); err != nil {
		t.Fatal(err)
	}
	got2 := auditActions(t, s, tn.Scope())
	want := []string{"tenant.create", "tenant.update", "tenant.disable", "tenant.enable"}
	if strings.Join(got2, ",") != strings.Join(want, ",") {
		t.Fatalf("audit actions: got %v, want %v", got2, want)
	}
}

func TestCreateTenantBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	tests := []struct {
		name  string
		in    schema.NewTenant
		field string
	}{
		{"empty id", schema.NewTenant{Name: "x", HomeRegion: "us-east"}, "id"},
		{"uppercase id", schema.NewTenant{ID: "Acme", Name: "x", HomeRegion: "us-east"}, "id"},
		{"long id", schema.NewTenant{ID: strings.Repeat("a", 64), Name: "x", HomeRegion: "us-east"}, "id"},
		{"empty name", schema.NewTenant{ID: "acme", Name: " ", HomeRegion: "us-east"}, "name"},
		{"long name", schema.NewTenant{ID: "acme", Name: strings.Repeat("n", 201), HomeRegion: "us-east"}, "name"},
		{"control char", schema.NewTenant{ID: "acme", Name: "a\x00b", HomeRegion: "us-east"}, "name"},
		{"no region", schema.NewTenant{ID: "acme", Name: "x"}, "home_region"},
		{"unknown region", schema.NewTenant{ID: "acme", Name: "x", HomeRegion: "mars-1"}, "home_region"},
		{"bad residency", schema.NewTenant{ID: "acme", Name: "x", HomeRegion: "us-east", Residency: "planet"}, "residency"},
		{"super region residency outside one", schema.NewTenant{ID: "acme", Name: "x", HomeRegion: "us-east", Residency: schema.ResidencySuperRegion}, "residency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateTenant(ctx, op, tt.in)
			wantField(t, err, tt.field)
		})
	}
	if ts, _, err := s.ListTenants(ctx, schema.Page{}); err != nil || len(ts) != 0 {
		t.Fatalf("after bad input: %d tenants (%v), want none written", len(ts), err)
	}
}

func TestListTenantsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	for _, id := range []string{"t3", "t1", "t5", "t2", "t4"} {
		mustTenant(t, s, id, "us-east")
	}
	var ids []string
	tok := ""
	for pages := 0; ; pages++ {
		ts, next, err := s.ListTenants(ctx, schema.Page{Size: 2, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ts {
			ids = append(ids, x.ID)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		tok = next
	}
	if strings.Join(ids, ",") != "t1,t2,t3,t4,t5" {
		t.Fatalf("paged ids: %v", ids)
	}
	_, _, err := s.ListTenants(ctx, schema.Page{Token: "!!"})
	wantField(t, err, "page_token")
	_, _, err = s.ListTenants(ctx, schema.Page{Size: 5000})
	wantField(t, err, "page_size")
}

func TestIdentityLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	alice, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Alice",
		Email: "alice@example.com", Attributes: map[string]any{"dept": "eng"}})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Microsecond)
	bot, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindServiceAccount, DisplayName: "ci-bot",
		OwnerID: alice.ID, Purpose: "deploys", ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if bot.OwnerID != alice.ID || !bot.ExpiresAt.Equal(exp) || bot.Status != schema.StatusActive {
		t.Fatalf("created NHI: %+v", bot)
	}
	got, err := s.GetIdentity(ctx, sc, alice.ID)
	if err != nil || got.Email != "alice@example.com" || got.Attributes["dept"] != "eng" {
		t.Fatalf("get identity: %+v %v", got, err)
	}
	if _, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "Alice 2", Email: "ALICE@example.com"}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("duplicate email (case-insensitive): got %v, want ErrConflict", err)
	}
	// Alice owns an active NHI, so she cannot be disabled until it has another owner.
	if _, err := s.SetIdentityStatus(ctx, op, sc, alice.ID, schema.StatusDisabled); !errors.Is(err, schema.ErrPrecondition) {
		t.Fatalf("disable an owner of active NHIs: got %v, want ErrPrecondition", err)
	}
	bob := mustHuman(t, s, sc, "Bob")
	purpose := "deploys to production"
	bot, err = s.UpdateIdentity(ctx, op, sc, bot.ID, schema.IdentityUpdate{OwnerID: &bob.ID, Purpose: &purpose})
	if err != nil || bot.OwnerID != bob.ID || bot.Purpose != purpose {
		t.Fatalf("reassign owner: %+v %v", bot, err)
	}
	before := time.Now()
	dis, err := s.SetIdentityStatus(ctx, op, sc, alice.ID, schema.StatusDisabled)
	if err != nil || dis.Status != schema.StatusDisabled || dis.TokensValidAfter.Before(before.Add(-time.Second)) {
		t.Fatalf("disable: %+v %v", dis, err)
	}
	en, err := s.SetIdentityStatus(ctx, op, sc, alice.ID, schema.StatusActive)
	if err != nil || en.Status != schema.StatusActive || !en.TokensValidAfter.Equal(dis.TokensValidAfter) {
		t.Fatalf("enable keeps the watermark: %+v %v", en, err)
	}
	list, next, err := s.ListIdentities(ctx, sc, schema.Page{})
	if err != nil || len(list) != 3 || next != "" {
		t.Fatalf("list: %d identities, next %q, %v", len(list), next, err)
	}
	got2 := auditActions(t, s, sc)
	want := "tenant.create,identity.create,identity.create,identity.create,identity.update,identity.disable,identity.enable"
	if strings.Join(got2, ",") != want {
		t.Fatalf("audit actions:\n got %v\nwant %v", strings.Join(got2, ","), want)
	}
}

func TestCreateIdentityBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	sc := mustTenant(t, s, "acme", "us-east").Scope()
	other := mustTenant(t, s, "other", "us-east").Scope()
	owner := mustHuman(t, s, sc, "Owner")
	foreign := mustHuman(t, s, other, "Foreign")
	soon := time.Now().Add(time.Hour)
	bot, err := s.CreateIdentity(ctx, op, sc, schema.NewIdentity{Kind: schema.KindAgent, DisplayName: "agent", OwnerID: owner.ID, Purpose: "p", ExpiresAt: soon})
	if err != nil {
		t.Fatal(err)
	}
	nhi := func(mod func(*schema.NewIdentity)) schema.NewIdentity {
		n := schema.NewIdentity{Kind: schema.KindWorkload, DisplayName: "job", OwnerID: owner.ID, Purpose: "batch", ExpiresAt: soon}
		mod(&n)
		return n
	}
	tests := []struct {
		name  string
		in    schema.NewIdentity
		field string
	}{
		{"unknown kind", schema.NewIdentity{Kind: "robot", DisplayName: "x"}, "kind"},
		{"empty name", schema.NewIdentity{Kind: schema.KindHuman}, "display_name"},
		{"long name", schema.NewIdentity{Kind: schema.KindHuman, DisplayName: strings.Repeat("x", 201)}, "display_name"},
		{"bad email", schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "x", Email: "Alice <a@b.c>"}, "email"},
		{"huge attributes", schema.NewIdentity{Kind: schema.KindHuman, DisplayName: "x", Attributes: map[string]any{"k": strings.Repeat("v", 17<<10)}}, "attributes"},
		{"nhi without owner", nhi(func(n *schema.NewIdentity) { n.OwnerID = "" }), "owner_id"},
		{"nhi without expiry", nhi(func(n *schema.NewIdentity) { n.ExpiresAt = time.Time{} }), "expire_time"},
		{"nhi without purpose", nhi(func(n *schema.NewIdentity) { n.Purpose = "" }), "purpose"},
		{"expiry in the past", nhi(func(n *schema.NewIdentity) { n.ExpiresAt = time.Now().Add(-time.Minute) }), "expire_time"},
		{"expiry too far", nhi(func(n *schema.NewIdentity) { n.ExpiresAt = time.Now().Add(6 * 365 * 24 * time.Hour) }), "expire_time"},
		{"owner not a uuid", nhi(func(n *schema.NewIdentity) { n.OwnerID = "alice" }), "owner_id"},
		{"owner missing", nhi(func(n *schema.NewIdentity) { n.OwnerID = "00000000-0000-4000-8000-000000000000" }), "owner_id"},
		{"owner of another tenant", nhi(func(n *schema.NewIdentity) { n.OwnerID = foreign.ID }), "owner_id"},
		{"owner not human", nhi(func(n *schema.NewIdentity) { n.OwnerID = bot.ID }), "owner_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateIdentity(ctx, op, sc, tt.in)
			wantField(t, err, tt.field)
		})
	}
	list, _, err := s.ListIdentities(ctx, sc, schema.Page{})
	if err != nil || len(list) != 2 {
		t.Fatalf("after bad input: %d identities (%v), want 2 (nothing written)", len(list), err)
	}
}

// TestTenantIsolation: tenant B can never read or change tenant A's rows, whichever
// region or id it names.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := schematest.NewStore(t, "us-east")
	a := mustTenant(t, s, "tenant-a", "us-east").Scope()
	b := mustTenant(t, s, "tenant-b", "us-east").Scope()
	alice := mustHuman(t, s, a, "Alice")
	name := "stolen"
	for _, sc := range []schema.Scope{b, {TenantID: b.TenantID, Region: "eu-west"}, {TenantID: a.TenantID, Region: "eu-west"}} {
		if _, err := s.GetIdentity(ctx, sc, alice.ID); !errors.Is(err, schema.ErrNotFound) {
			t.Errorf("get A's identity through %+v: got %v, want ErrNotFound", sc, err)
		}
		if _, err := s.UpdateIdentity(ctx, op, sc, alice.ID, schema.IdentityUpdate{DisplayName: &name}); !errors.Is(err, schema.ErrNotFound) {
			t.Errorf("update A's identity through %+v: got %v, want ErrNotFound", sc, err)
		}
		if _, err := s.SetIdentityStatus(ctx, op, sc, alice.ID, schema.StatusDisabled); !errors.Is(err, schema.ErrNotFound) {
			t.Errorf("disable A's identity through %+v: got %v, want ErrNotFound", sc, err)
		}
	}
	if list, _, err := s.ListIdentities(ctx, b, schema.Page{}); err != nil || len(list) != 0 {
		t.Errorf("B lists %d identities (%v), want 0", len(list), err)
	}
	if evs, _, err := s.ListAuditEvents(ctx, b, schema.AuditFilter{}, schema.Page{}); err != nil || len(evs) != 1 {
		t.Errorf("B sees %d audit events (%v), want only its own tenant.create", len(evs), err)
	}
	got, err := s.GetIdentity(ctx, a, alice.ID)
	if err != nil || got.DisplayName != "Alice" || got.Status != schema.StatusActive {
		t.Fatalf("A's identity changed: %+v %v", got, err)
	}
}

func TestUnavailableWhenDatabaseGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, "postgres://nobody:x@127.0.0.1:1/none?sslmode=disable", schema.PoolConfig{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := schema.New(pool, schema.Config{})
	if _, err := s.GetTenant(ctx, "acme"); !errors.Is(err, schema.ErrUnavailable) {
		t.Fatalf("get tenant with no database: got %v, want ErrUnavailable", err)
	}
	if _, err := s.CreateTenant(ctx, op, schema.NewTenant{ID: "acme", Name: "x", HomeRegion: "us-east"}); !errors.Is(err, schema.ErrUnavailable) {
		t.Fatalf("create tenant with no database: got %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, schema.ErrUnavailable) {
		t.Fatalf("ping: got %v, want ErrUnavailable", err)
	}
}

// A statement whose context ends is cancelled on the server and keeps its connection:
// a statement that outlives its deadline (pg_sleep) costs no new connection, and the
// pool serves the next statement.
func TestCancelledStatementsKeepTheirConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The cancel request must be answered within CancelTimeout for the connection to
	// be kept. With the default (2 s) a loaded machine (a race-enabled suite starting
	// many PostgreSQL servers on 2 cores) can miss it, and the connection is closed as
	// designed: this test is about keeping it, so it leaves the server ample time.
	pool, err := schema.Open(ctx, schematest.NewDatabase(t), schema.PoolConfig{MaxConns: 2, CancelDelay: 20 * time.Millisecond,
		CancelTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	before := pool.Stat().NewConnsCount()
	for range 5 {
		short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		_, err := pool.Exec(short, "SELECT pg_sleep(30)")
		cancel()
		if err == nil {
			t.Fatal("a 30 s sleep finished within a 5 ms deadline")
		}
	}
	if opened := pool.Stat().NewConnsCount() - before; opened != 0 {
		t.Fatalf("5 cancelled statements opened %d new connections, want 0", opened)
	}
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a statement after the cancelled ones: %v", err)
	}
}

// A transaction whose context ends after its statements, before COMMIT, is rolled
// back (nothing committed, for certain) and keeps its connection; pgx alone would
// close it.
func TestTransactionPastItsDeadlineKeepsItsConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := schema.Open(ctx, schematest.NewDatabase(t), schema.PoolConfig{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := schema.New(pool, schema.Config{Region: "us-east", Node: "test"})
	if _, err := pool.Exec(ctx, "CREATE TABLE marks (n INT)"); err != nil {
		t.Fatal(err)
	}
	before := pool.Stat().NewConnsCount()
	for i := range 5 {
		short, cancel := context.WithCancel(ctx)
		err := s.RunTx(short, func(tx pgx.Tx) error {
			if _, err := tx.Exec(short, "INSERT INTO marks VALUES ($1)", i); err != nil {
				return err
			}
			cancel() // the caller gives up after the work, before the commit
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("transaction cancelled before commit: %v, want context.Canceled", err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM marks").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows committed by cancelled transactions: %d %v, want 0", n, err)
	}
	if opened := pool.Stat().NewConnsCount() - before; opened != 0 {
		t.Fatalf("5 cancelled transactions opened %d new connections, want 0", opened)
	}
}

func TestOpenRefusesACancelTimeoutWithinTheDelay(t *testing.T) {
	t.Parallel()
	_, err := schema.Open(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?sslmode=disable",
		schema.PoolConfig{CancelDelay: time.Second, CancelTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "cancel timeout") {
		t.Fatalf("cancel timeout equal to the delay: %v, want an error naming the cancel timeout", err)
	}
}
