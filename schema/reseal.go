package schema

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Reseal is what ResealSecrets asks of the caller for each sealed secret: the blob
// sealed under the primary key-encryption key, and whether it changed. schema never
// holds the KEK; region builds each secret's associated data.
type Reseal struct {
	// SigningKey reseals a signing key's private half; kekID is the primary KEK's id.
	SigningKey func(kid string, sealed []byte) (resealed []byte, changed bool, err error)
	// TOTP reseals a TOTP seed.
	TOTP func(tenantID, identityID string, sealed []byte) (resealed []byte, changed bool, err error)
	// UpstreamSecret reseals an upstream OIDC provider's client secret.
	UpstreamSecret func(tenantID, providerID string, sealed []byte) (resealed []byte, changed bool, err error)
	// SAMLKey reseals keyplane's SP private key for a SAML IdP.
	SAMLKey func(tenantID, idpID string, sealed []byte) (resealed []byte, changed bool, err error)
	// WebhookSecret reseals an alert webhook's signing secret.
	WebhookSecret func(tenantID, webhookID string, sealed []byte) (resealed []byte, changed bool, err error)
	// IdempotentResponse reseals a response recorded for an idempotency key.
	IdempotentResponse func(tenantID, key string, sealed []byte) (resealed []byte, changed bool, err error)
	KEKID              string
}

// ResealCounts says what ResealSecrets did in one region.
type ResealCounts struct {
	SigningKeys, TOTPSeeds, UpstreamSecrets, SAMLKeys, WebhookSecrets int // resealed
	IdempotentResponses                                               int // resealed
	Unchanged                                                         int // already under the primary KEK
	Skipped                                                           int // changed or moved while being resealed: run again
}

// resealBatch is how many rows one read of the walk returns.
const resealBatch = 200

// ResealSecrets walks every secret of region sealed under a key-encryption key (the
// signing keys' private halves, unrevoked TOTP seeds, upstream OIDC client secrets,
// SAML SP keys, alert webhook secrets, unexpired responses recorded for idempotency
// keys) and stores what reseal returns for each one it changed. Each per-tenant secret
// is replaced in a transaction of its own with its audit event, and only if the stored
// blob is still the one read (a concurrent re-enrolment wins and is counted as
// skipped). Run it after making a new KEK the primary on every node, and before
// removing the old one; it is safe to run again.
func (s *Store) ResealSecrets(ctx context.Context, c Change, region string, reseal Reseal) (ResealCounts, error) {
	var out ResealCounts
	if reseal.SigningKey == nil || reseal.TOTP == nil || reseal.UpstreamSecret == nil || reseal.SAMLKey == nil || reseal.WebhookSecret == nil ||
		reseal.IdempotentResponse == nil || reseal.KEKID == "" {
		return out, errors.New("reseal: every function and the KEK id are required")
	}
	if err := s.resealSigningKeys(ctx, region, reseal, &out); err != nil {
		return out, err
	}
	for _, col := range s.sealedColumns(reseal, &out) {
		if err := s.resealColumn(ctx, c, region, reseal.KEKID, col, &out); err != nil {
			return out, err
		}
	}
	return out, s.resealIdempotentResponses(ctx, region, reseal, &out)
}

// resealIdempotentResponses reseals the unexpired responses recorded for idempotency
// keys, each only if it is still the one read. These rows record calls whose changes
// were audited when they were made, and are dropped after 24 hours: resealing one
// writes no audit event.
func (s *Store) resealIdempotentResponses(ctx context.Context, region string, reseal Reseal, out *ResealCounts) error {
	type row struct {
		tenantID, key string
		sealed        []byte
	}
	afterTenant, afterKey := "", ""
	for {
		rows, err := s.pool.Query(ctx, `SELECT tenant_id, key, response FROM idempotency_keys
WHERE crdb_region = $1 AND expires_at > now() AND (tenant_id, key) > ($2, $3)
ORDER BY tenant_id, key LIMIT $4`, region, afterTenant, afterKey, resealBatch)
		if err != nil {
			return classify(fmt.Errorf("read idempotency records of %s: %w", region, err))
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.tenantID, &x.key, &x.sealed)
		})
		if err != nil {
			return classify(fmt.Errorf("read idempotency records of %s: %w", region, err))
		}
		for _, r := range batch {
			blob, changed, err := reseal.IdempotentResponse(r.tenantID, r.key, r.sealed)
			if err != nil {
				return fmt.Errorf("idempotency record %q of tenant %s: %w", r.key, r.tenantID, err)
			}
			if !changed {
				out.Unchanged++
				continue
			}
			tag, err := s.pool.Exec(ctx, `UPDATE idempotency_keys SET response = $4
WHERE tenant_id = $1 AND crdb_region = $2 AND key = $3 AND response = $5`, r.tenantID, region, r.key, blob, r.sealed)
			if err != nil {
				return classify(fmt.Errorf("reseal idempotency record %q of tenant %s: %w", r.key, r.tenantID, err))
			}
			if tag.RowsAffected() == 1 {
				out.IdempotentResponses++
			} else {
				out.Skipped++
			}
		}
		if len(batch) < resealBatch {
			return nil
		}
		afterTenant, afterKey = batch[len(batch)-1].tenantID, batch[len(batch)-1].key
	}
}

func (s *Store) resealSigningKeys(ctx context.Context, region string, reseal Reseal, out *ResealCounts) error {
	type row struct {
		kid    string
		sealed []byte
	}
	after := ""
	for {
		rows, err := s.pool.Query(ctx, `SELECT kid, sealed FROM signing_key_secrets WHERE crdb_region = $1 AND kid > $2 ORDER BY kid LIMIT $3`,
			region, after, resealBatch)
		if err != nil {
			return classify(fmt.Errorf("read signing keys of %s: %w", region, err))
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.kid, &x.sealed)
		})
		if err != nil {
			return classify(fmt.Errorf("read signing keys of %s: %w", region, err))
		}
		for _, r := range batch {
			blob, changed, err := reseal.SigningKey(r.kid, r.sealed)
			if err != nil {
				return fmt.Errorf("signing key %s: %w", r.kid, err)
			}
			if !changed {
				out.Unchanged++
				continue
			}
			tag, err := s.pool.Exec(ctx, `UPDATE signing_key_secrets SET sealed = $3, kek_id = $4 WHERE crdb_region = $1 AND kid = $2 AND sealed = $5`,
				region, r.kid, blob, reseal.KEKID, r.sealed)
			if err != nil {
				return classify(fmt.Errorf("reseal signing key %s: %w", r.kid, err))
			}
			if tag.RowsAffected() == 1 {
				out.SigningKeys++
			} else {
				out.Skipped++
			}
		}
		if len(batch) < resealBatch {
			return nil
		}
		after = batch[len(batch)-1].kid
	}
}

// sealedColumn is a column of per-tenant rows (keyed by tenant_id, id) holding a
// blob sealed under a key-encryption key.
type sealedColumn struct {
	what          string // for errors: "TOTP seed"
	table, column string
	filter        string // rows to walk, ANDed to the region's
	extra         string // an expression passed to reseal with the tenant id: what the blob's associated data names
	kind, action  string // the audit event's target kind and action
	reseal        func(tenantID, extra string, sealed []byte) ([]byte, bool, error)
	after         func(extra, kekID string) map[string]any
	count         *int
}

func (s *Store) sealedColumns(reseal Reseal, out *ResealCounts) []sealedColumn {
	byID := func(string, string) map[string]any { return nil }
	return []sealedColumn{
		{what: "TOTP seed", table: "credentials", column: "secret_encrypted",
			filter: "kind = 'totp' AND revoked_at IS NULL AND secret_encrypted IS NOT NULL", extra: "identity_id::TEXT",
			kind: "credential", action: "credential.reseal", reseal: reseal.TOTP, count: &out.TOTPSeeds,
			after: func(identityID, kekID string) map[string]any {
				return map[string]any{"kind": "totp", "identity_id": identityID, "kek_id": kekID}
			}},
		{what: "upstream OIDC client secret", table: "upstream_oidc_providers", column: "client_secret", filter: "true", extra: "id::TEXT",
			kind: "upstream_provider", action: "upstream.provider.reseal", reseal: reseal.UpstreamSecret, count: &out.UpstreamSecrets, after: byID},
		{what: "SAML SP key", table: "saml_idps", column: "sp_key_sealed", filter: "true", extra: "id::TEXT",
			kind: "saml_idp", action: "saml.idp.reseal", reseal: reseal.SAMLKey, count: &out.SAMLKeys, after: byID},
		{what: "webhook secret", table: "analytics_webhooks", column: "secret_sealed", filter: "true", extra: "id::TEXT",
			kind: "webhook", action: "analytics.webhook.reseal", reseal: reseal.WebhookSecret, count: &out.WebhookSecrets, after: byID},
	}
}

// resealColumn walks col's rows in region and replaces each blob reseal changed, in a
// transaction of its own with its audit event, and only if the stored blob is still
// the one read (a concurrent change wins and is counted as skipped).
func (s *Store) resealColumn(ctx context.Context, c Change, region, kekID string, col sealedColumn, out *ResealCounts) error {
	type row struct {
		tenantID, id, extra string
		sealed              []byte
	}
	afterTenant, afterID := "", "00000000-0000-0000-0000-000000000000"
	for {
		rows, err := s.pool.Query(ctx, `SELECT tenant_id, id::TEXT, `+col.extra+`, `+col.column+` FROM `+col.table+`
WHERE crdb_region = $1 AND (`+col.filter+`) AND (tenant_id, id) > ($2, $3::UUID)
ORDER BY tenant_id, id LIMIT $4`, region, afterTenant, afterID, resealBatch)
		if err != nil {
			return classify(fmt.Errorf("read %ss of %s: %w", col.what, region, err))
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.tenantID, &x.id, &x.extra, &x.sealed)
		})
		if err != nil {
			return classify(fmt.Errorf("read %ss of %s: %w", col.what, region, err))
		}
		for _, r := range batch {
			blob, changed, err := col.reseal(r.tenantID, r.extra, r.sealed)
			if err != nil {
				return fmt.Errorf("%s %s of tenant %s: %w", col.what, r.id, r.tenantID, err)
			}
			if !changed {
				out.Unchanged++
				continue
			}
			sc := Scope{TenantID: r.tenantID, Region: region}
			replaced := false
			err = s.tx(ctx, func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, `UPDATE `+col.table+` SET `+col.column+` = $4
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND (`+col.filter+`) AND `+col.column+` = $5`, r.tenantID, region, r.id, blob, r.sealed)
				if err != nil {
					return fmt.Errorf("reseal %s %s: %w", col.what, r.id, err)
				}
				if replaced = tag.RowsAffected() == 1; !replaced {
					return nil
				}
				after := col.after(r.extra, kekID)
				if after == nil {
					after = map[string]any{"kek_id": kekID}
				}
				return s.writeAudit(ctx, tx, sc, c, audit{action: col.action, targetKind: col.kind, targetID: r.id, after: after})
			})
			switch {
			case errors.Is(err, ErrMoved) || (err == nil && !replaced):
				out.Skipped++
			case err != nil:
				return classify(err)
			default:
				*col.count++
			}
		}
		if len(batch) < resealBatch {
			return nil
		}
		afterTenant, afterID = batch[len(batch)-1].tenantID, batch[len(batch)-1].id
	}
}
