package main

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/schema"
)

func runReseal(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "keys reseal", "Reseal every secret stored under an older key of the key-encryption key (signing keys' private halves, TOTP seeds, sign-in providers' and webhooks' secrets, responses recorded for idempotency keys) under its first key, in every region. This is step 3 of a KEK rotation (docs/security.md): run it once every node has the new key first in its KEK and the old one after it; then remove the old key. It is safe to run again; each per-tenant secret it reseals writes an audit event (the idempotency records, whose calls were audited when made, do not).", `
The KEK is read from KEYPLANE_KEK or --kek-file: base64 keys, one a line, the new one
first and the old one(s) after it.

Example:
  KEYPLANE_KEK="$(cat new.kek old.kek)" keyplane keys reseal --db-file db-url`)
	fs := c.flags
	dbf := addDBFlags(c)
	kekFile := fs.String("kek-file", "", "file holding the key-encryption keys, the new one first (or KEYPLANE_KEK)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	db, err := dbf.resolve(c)
	if err != nil {
		return err
	}
	k, err := loadKEK(*kekFile)
	if err != nil {
		return err
	}
	if k == nil {
		return usageErr("a key-encryption key is required: --kek-file or KEYPLANE_KEK, the new key first and the old one after it")
	}
	store, closeDB, err := openStore(ctx, db, 2, schema.Config{Node: "keys-reseal"})
	if err != nil {
		return err
	}
	defer closeDB()
	counts, err := region.ResealSecrets(ctx, store, k, schema.Change{Actor: "operator", RequestID: "keys-reseal"})
	regions := make([]string, 0, len(counts))
	for name := range counts {
		regions = append(regions, name)
	}
	slices.Sort(regions)
	skipped := 0
	for _, name := range regions {
		n := counts[name]
		skipped += n.Skipped
		fmt.Fprintf(stdout, "%s: resealed %d signing keys, %d TOTP seeds, %d upstream OIDC client secrets, %d SAML SP keys, %d webhook secrets and %d idempotency records under KEK %s; %d already were; %d changed meanwhile\n",
			name, n.SigningKeys, n.TOTPSeeds, n.UpstreamSecrets, n.SAMLKeys, n.WebhookSecrets, n.IdempotentResponses, k.ID(), n.Unchanged, n.Skipped)
	}
	if err != nil {
		return err
	}
	if skipped > 0 {
		return fmt.Errorf("%d secrets changed while being resealed: run keys reseal again", skipped)
	}
	return nil
}
