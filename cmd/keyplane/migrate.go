package main

import (
	"context"
	"fmt"
	"io"

	"github.com/keyplane/keyplane/schema"
)

func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "migrate", "Create or upgrade the schema and record the database's regions. Safe to run again: applied migrations are skipped.", `
The engine (CockroachDB or PostgreSQL) is detected from the server. On CockroachDB the
first region becomes the PRIMARY REGION, the others are added, and --survive,
--super-region and --placement become ALTER DATABASE statements; on PostgreSQL the
regions are recorded in the regions table and crdb_region is an ordinary column.

The database URL, password included, comes from --db-file or KEYPLANE_DB (--db only
takes a URL without a password: argv shows in ps).

Examples:
  keyplane migrate --db-file /etc/keyplane/db-url --regions us-east,eu-west,ap-south
  KEYPLANE_DB=$URL keyplane migrate --regions us-east1,europe-west1,europe-west2 \
      --survive region --super-region eu=europe-west1,europe-west2`)
	fs := c.flags
	dbf := addDBFlags(c)
	regions := fs.String("regions", "", "comma-separated regions, primary first (required on a new database)")
	survive := fs.String("survive", "zone", "CockroachDB survival goal: zone or region")
	placement := fs.String("placement", "default", "CockroachDB placement: default or restricted")
	var supers listFlag
	fs.Var(&supers, "super-region", "NAME=REGION,REGION... (repeatable, or ';'-separated in the environment; CockroachDB super regions for residency)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	cfg := schema.MigrateConfig{Regions: splitList(*regions), Survive: *survive, Placement: *placement}
	if cfg.SuperRegions, err = schema.ParseSuperRegions(supers); err != nil {
		return usageErr("%v", err)
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	pool, err := schema.Open(ctx, db, schema.PoolConfig{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := schema.Migrate(ctx, pool, cfg)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, res)
	return nil
}
