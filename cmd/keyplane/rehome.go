package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/keyplane/keyplane/schema"
)

const rehomeUsage = `Usage: keyplane rehome <run|status> [flags]
  run      move a tenant to another home region in batches, behind a fence (resumable)
  status   print a tenant's rehome in progress as JSON`

func runRehome(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stdout, rehomeUsage)
		return usageErr("want a subcommand: run or status")
	}
	switch args[0] {
	case "run":
		return rehomeRun(ctx, args[1:], stdout)
	case "status":
		return rehomeStatus(ctx, args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, rehomeUsage)
		return nil
	}
	fmt.Fprintln(stdout, rehomeUsage)
	return usageErr("unknown subcommand %q: want run or status", args[0])
}

func rehomeRun(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "rehome run", "Move a tenant to another home region in batches of rows, each its own short transaction, behind a fence (docs/decisions/0019-batched-rehome.md).", `
While the tenant moves, every node answers its calls with unavailable and Retry-After,
and the store refuses its changes. Stopped (Ctrl-C, a crash, a lost connection), the
tenant stays fenced: run the same command again and it continues where it stopped. A
second run while one is alive is refused. For a small tenant the AdminService
RehomeTenant call does the same in one transaction.

It talks to the database directly. Progress goes to stdout, a line per --progress.

Examples:
  keyplane rehome run --db-file /etc/keyplane/db-url --tenant acme --to eu-west
  keyplane rehome run --db-file db-url --tenant acme --to eu-west --batch-size 5000 --progress 10s`)
	fs := c.flags
	dbf := addDBFlags(c)
	tenant := fs.String("tenant", "", "tenant to move (required)")
	to := fs.String("to", "", "its new home region (required)")
	batch := fs.Int("batch-size", schema.DefaultRehomeBatch, fmt.Sprintf("rows of one table per batch transaction, 1 to %d", schema.MaxRehomeBatch))
	fenceWait := fs.Duration("fence-wait", 10*time.Second, "wait after raising the fence and after the flip, for every node's cached tenant row to expire (at least the nodes' 5s tenant cache)")
	every := fs.Duration("progress", 5*time.Second, "how often to print a progress line (0: after every batch)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *tenant == "" {
		return usageErr("--tenant: required")
	}
	if *to == "" {
		return usageErr("--to: required")
	}
	if *batch < 1 || *batch > schema.MaxRehomeBatch {
		return usageErr("--batch-size: want 1 to %d, got %d", schema.MaxRehomeBatch, *batch)
	}
	if *fenceWait < 0 {
		return usageErr("--fence-wait: must not be negative")
	}
	if *every < 0 {
		return usageErr("--progress: must not be negative")
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	store, closeDB, err := openStore(ctx, db, 4, schema.Config{Node: "keyplane-rehome"})
	if err != nil {
		return err
	}
	defer closeDB()
	start, last := time.Now(), time.Time{}
	fmt.Fprintf(stdout, "rehome %s to %s: raising the fence, then waiting %v for nodes to see it\n", *tenant, *to, *fenceWait)
	out, rep, err := store.RehomeTenantBatched(ctx, schema.Change{Actor: "operator", ActorKind: "operator", RequestID: "keyplane-rehome"}, *tenant, *to,
		schema.RehomeOptions{BatchSize: *batch, FenceWait: *fenceWait, Progress: func(p schema.RehomeProgress) {
			if now := time.Now(); now.Sub(last) >= *every {
				last = now
				el := now.Sub(start)
				fmt.Fprintf(stdout, "%s %-8s %-26s batch %5d rows in %-8v moved %9d rows in %v (%.0f rows/s)\n",
					now.UTC().Format(time.TimeOnly), p.Phase, p.Table, p.Rows, p.Took.Round(time.Millisecond),
					p.Moved, el.Round(time.Second), float64(p.Moved)/el.Seconds())
			}
		}})
	if err != nil {
		return fmt.Errorf("rehome %s: %w (the tenant stays fenced; run the same command again to continue)", *tenant, err)
	}
	how := "started"
	if rep.Resumed {
		how = "resumed"
	}
	fmt.Fprintf(stdout, "rehome %s: %s run done: home %s, placement epoch %d; %d rows in %d batches in %v, longest batch %v\n",
		out.ID, how, out.HomeRegion, out.PlacementEpoch, rep.Rows, rep.Batches, rep.Took.Round(time.Millisecond), rep.LongestBatch.Round(time.Millisecond))
	return nil
}

func rehomeStatus(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "rehome status", "Print a tenant's rehome as JSON: where it is going, since when, the run that holds it, and the rows left in the old home.", `
"to" is empty when no rehome is in progress. A rehome with no live "runner" has
stopped: run keyplane rehome run again to finish it.

Example:
  keyplane rehome status --db-file /etc/keyplane/db-url --tenant acme`)
	dbf := addDBFlags(c)
	tenant := c.flags.String("tenant", "", "tenant (required)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *tenant == "" {
		return usageErr("--tenant: required")
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	store, closeDB, err := openStore(ctx, db, 2, schema.Config{Node: "keyplane-rehome"})
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := store.TenantRehomeStatus(ctx, *tenant)
	if err != nil {
		return err
	}
	out := map[string]any{"tenant": st.TenantID, "home_region": st.HomeRegion, "to": st.To}
	if !st.StartedAt.IsZero() {
		out["started_at"] = st.StartedAt.UTC().Format(time.RFC3339)
	}
	if st.Runner != "" {
		out["runner"], out["lease_until"] = st.Runner, st.LeaseUntil.UTC().Format(time.RFC3339)
	}
	if st.To != "" && st.To != st.HomeRegion {
		out["rows_left_in_old_home"], out["two_parent_rows_held"] = st.LeftInOld, st.HeldTwoParts
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(b))
	return err
}
