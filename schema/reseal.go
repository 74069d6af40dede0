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
	TOTP  func(tenantID, identityID string, sealed []byte) (resealed []byte, changed bool, err error)
	KEKID string
}

// ResealCounts says what ResealSecrets did in one region.
type ResealCounts struct {
	SigningKeys, TOTPSeeds int // resealed
	Unchanged              int // already under the primary KEK
	Skipped                int // changed or moved while being resealed: run again
}

// resealBatch is how many rows one read of the walk returns.
const resealBatch = 200

// ResealSecrets walks every secret of region sealed under a key-encryption key (the
// signing keys' private halves, unrevoked TOTP seeds) and stores what reseal returns
// for each one it changed. Each TOTP seed is replaced in a transaction of its own with
// its audit event, and only if the stored blob is still the one read (a concurrent
// re-enrolment wins and is counted as skipped). Run it after making a new KEK the
// primary on every node, and before removing the old one; it is safe to run again.
func (s *Store) ResealSecrets(ctx context.Context, c Change, region string, reseal Reseal) (ResealCounts, error) {
	var out ResealCounts
	if reseal.SigningKey == nil || reseal.TOTP == nil || reseal.KEKID == "" {
		return out, errors.New("reseal: both functions and the KEK id are required")
	}
	if err := s.resealSigningKeys(ctx, region, reseal, &out); err != nil {
		return out, err
	}
	return out, s.resealTOTP(ctx, c, region, reseal, &out)
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

func (s *Store) resealTOTP(ctx context.Context, c Change, region string, reseal Reseal, out *ResealCounts) error {
	type row struct {
		tenantID, id, identityID string
		sealed                   []byte
	}
	afterTenant, afterID := "", "00000000-0000-0000-0000-000000000000"
	for {
		rows, err := s.pool.Query(ctx, `
SELECT tenant_id, id::TEXT, identity_id::TEXT, secret_encrypted FROM credentials
WHERE crdb_region = $1 AND kind = 'totp' AND revoked_at IS NULL AND secret_encrypted IS NOT NULL
  AND (tenant_id, id) > ($2, $3::UUID)
ORDER BY tenant_id, id LIMIT $4`, region, afterTenant, afterID, resealBatch)
		if err != nil {
			return classify(fmt.Errorf("read TOTP seeds of %s: %w", region, err))
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.tenantID, &x.id, &x.identityID, &x.sealed)
		})
		if err != nil {
			return classify(fmt.Errorf("read TOTP seeds of %s: %w", region, err))
		}
		for _, r := range batch {
			blob, changed, err := reseal.TOTP(r.tenantID, r.identityID, r.sealed)
			if err != nil {
				return fmt.Errorf("TOTP seed %s of tenant %s: %w", r.id, r.tenantID, err)
			}
			if !changed {
				out.Unchanged++
				continue
			}
			sc := Scope{TenantID: r.tenantID, Region: region}
			replaced := false
			err = s.tx(ctx, func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, `UPDATE credentials SET secret_encrypted = $4
WHERE tenant_id = $1 AND crdb_region = $2 AND id = $3 AND revoked_at IS NULL AND secret_encrypted = $5`, r.tenantID, region, r.id, blob, r.sealed)
				if err != nil {
					return fmt.Errorf("reseal TOTP seed %s: %w", r.id, err)
				}
				if replaced = tag.RowsAffected() == 1; !replaced {
					return nil
				}
				return s.writeAudit(ctx, tx, sc, c, audit{action: "credential.reseal", targetKind: "credential", targetID: r.id,
					after: map[string]any{"kind": "totp", "identity_id": r.identityID, "kek_id": reseal.KEKID}})
			})
			switch {
			case errors.Is(err, ErrMoved) || (err == nil && !replaced):
				out.Skipped++
			case err != nil:
				return classify(err)
			default:
				out.TOTPSeeds++
			}
		}
		if len(batch) < resealBatch {
			return nil
		}
		afterTenant, afterID = batch[len(batch)-1].tenantID, batch[len(batch)-1].id
	}
}
