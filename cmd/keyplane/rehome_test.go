package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestRehomeCommand: a rehome stopped half way shows in `rehome status`; `rehome run`
// continues it and finishes; bad flags are refused naming the flag.
func TestRehomeCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := schematest.NewDatabase(t)
	pool, err := schema.Open(ctx, url, schema.PoolConfig{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := schema.New(pool, schema.Config{Region: "us-east", Node: "test"})
	op := schema.Change{Actor: "operator"}
	tn, err := store.CreateTenant(ctx, op, schema.NewTenant{ID: "acme", Name: "Acme", HomeRegion: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Alice", "Bob", "Carol", "Dan"} {
		if _, err := store.CreateIdentity(ctx, op, tn.Scope(), schema.NewIdentity{Kind: schema.KindHuman, DisplayName: name}); err != nil {
			t.Fatal(err)
		}
	}
	// A run that stops after its first batch.
	cctx, cancel := context.WithCancel(ctx)
	_, _, err = store.RehomeTenantBatched(cctx, op, "acme", "eu-west", schema.RehomeOptions{BatchSize: 1, Progress: func(schema.RehomeProgress) { cancel() }})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want it cancelled", err)
	}
	db := dbFile(t, url)

	code, out, errs := runCLI(t, "rehome", "status", "--db-file", db, "--tenant", "acme")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["to"] != "eu-west" || st["home_region"] != "us-east" || st["rows_left_in_old_home"] == float64(0) {
		t.Fatalf("status of the stopped rehome: exit %d %v\n%s%s", code, st, out, errs)
	}
	code, _, errs = runCLI(t, "rehome", "run", "--db-file", db, "--tenant", "acme", "--to", "ap-south", "--fence-wait", "0s")
	if code != 1 || !strings.Contains(errs, "home_region: tenant \"acme\" is being rehomed to eu-west") {
		t.Fatalf("a rehome elsewhere while one is stopped: exit %d\n%s", code, errs)
	}
	code, out, errs = runCLI(t, "rehome", "run", "--db-file", db, "--tenant", "acme", "--to", "eu-west", "--batch-size", "2", "--fence-wait", "0s", "--progress", "0s")
	if code != 0 || !strings.Contains(out, "resumed run done: home eu-west, placement epoch "+strconv.FormatInt(tn.PlacementEpoch+2, 10)) || !strings.Contains(out, "move ") {
		t.Fatalf("resumed run: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "rehome", "status", "--db-file", db, "--tenant", "acme")
	if code != 0 || !strings.Contains(out, `"home_region":"eu-west"`) || !strings.Contains(out, `"to":""`) {
		t.Fatalf("status after the move: exit %d\n%s%s", code, out, errs)
	}

	for _, tt := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"rehome"}, 2, "want a subcommand: run or status"},
		{[]string{"rehome", "move"}, 2, `unknown subcommand "move"`},
		{[]string{"rehome", "run", "--db-file", db, "--to", "eu-west"}, 2, "--tenant: required"},
		{[]string{"rehome", "run", "--db-file", db, "--tenant", "acme"}, 2, "--to: required"},
		{[]string{"rehome", "run", "--db-file", db, "--tenant", "acme", "--to", "eu-west", "--batch-size", "0"}, 2, "--batch-size: want 1 to"},
		{[]string{"rehome", "run", "--db-file", db, "--tenant", "acme", "--to", "eu-west", "--fence-wait", "-1s"}, 2, "--fence-wait"},
		{[]string{"rehome", "run", "--db-file", db, "--tenant", "acme", "--to", "mars", "--fence-wait", "0s"}, 1, "home_region"},
		{[]string{"rehome", "run", "--db-file", db, "--tenant", "nobody", "--to", "us-east", "--fence-wait", "0s"}, 1, "not found"},
		{[]string{"rehome", "status", "--db-file", db}, 2, "--tenant: required"},
		{[]string{"rehome", "run", "--tenant", "acme", "--to", "eu-west"}, 2, "a database is required"},
	} {
		code, out, errs := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errs, tt.contains) {
			t.Errorf("%v: exit %d (want %d); output lacks %q:\n%s%s", tt.args, code, tt.code, tt.contains, out, errs)
		}
	}
}
