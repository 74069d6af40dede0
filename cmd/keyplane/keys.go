package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

func runKeys(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "new-kek" && args[0] != "new-gossip-key") {
		fmt.Fprintln(stdout, "Usage: keyplane keys rotate [flags]   publish a new signing key for a region")
		fmt.Fprintln(stdout, "       keyplane keys new-kek          print a new key-encryption key")
		fmt.Fprintln(stdout, "       keyplane keys new-gossip-key   print a new gossip key")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return usageErr("want a subcommand: rotate, new-kek or new-gossip-key")
	}
	if args[0] == "new-gossip-key" {
		c := newCommand(stdout, "keys new-gossip-key", "Print a new random gossip key (base64 of 32 bytes). Every node of a cluster needs it: KEYPLANE_GOSSIP_KEYS or --gossip-key-file. docs/security.md says how to rotate it.", "")
		if err := c.parse(args[1:]); err != nil {
			return parseErr(err)
		}
		fmt.Fprintln(stdout, routing.NewGossipKey())
		return nil
	}
	if args[0] == "new-kek" {
		c := newCommand(stdout, "keys new-kek", "Print a new random key-encryption key (base64 of 32 bytes). Store it in a secret manager; every node needs the same one.", "")
		if err := c.parse(args[1:]); err != nil {
			return parseErr(err)
		}
		k, err := kek.Generate()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k)
		return nil
	}
	c := newCommand(stdout, "keys rotate", "Publish a new token-signing key for a region. It is in JWKS at once and starts signing after --publish-delay; the region's current key then retires and stays published until every token it signed has expired.", `
Example:
  KEYPLANE_KEK=... keyplane keys rotate --db-file db-url --region us-east --publish-delay 10m`)
	fs := c.flags
	dbf := addDBFlags(c)
	regionName := fs.String("region", "", "region whose signing key to rotate (required)")
	kekFile := fs.String("kek-file", "", "file holding the key-encryption key (or KEYPLANE_KEK)")
	delay := fs.Duration("publish-delay", 10*time.Minute, "how long the new key is published before it signs (longer than any JWKS cache)")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	if *regionName == "" {
		return usageErr("--region is required")
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	if *delay < 0 {
		return usageErr("--publish-delay must not be negative")
	}
	k, err := loadKEK(*kekFile)
	if err != nil {
		return err
	}
	if k == nil {
		return usageErr("a key-encryption key is required: --kek-file or KEYPLANE_KEK")
	}
	pool, err := schema.Open(ctx, db, schema.PoolConfig{MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	store := schema.New(pool, schema.Config{Region: *regionName, Node: "keys-rotate"})
	if err := store.CheckRegion(ctx, *regionName); err != nil {
		if errors.Is(err, schema.ErrNotFound) {
			return usageErr("%v", err)
		}
		return err
	}
	kid, err := region.AddSigningKey(ctx, store, k, *regionName, *delay, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published signing key %s for region %s; it signs from %s\n", kid, *regionName, time.Now().Add(*delay).UTC().Format(time.RFC3339))
	return nil
}
