package region

import (
	"context"
	"fmt"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
)

// ResealSecrets moves every secret sealed under an older key of k (signing keys'
// private halves, TOTP seeds, upstream OIDC client secrets, SAML SP keys, alert
// webhook secrets) to k's primary key, region by region, and returns what
// it did per region. Run it once every node seals with the new key (it is first in
// their KEK) and before the old key is removed; docs/security.md has the procedure.
func ResealSecrets(ctx context.Context, store *schema.Store, k *kek.KEK, c schema.Change) (map[string]schema.ResealCounts, error) {
	regions, err := store.ListRegions(ctx)
	if err != nil {
		return nil, err
	}
	r := schema.Reseal{
		KEKID: k.ID(),
		SigningKey: func(kid string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, []byte(kid))
		},
		TOTP: func(tenantID, identityID string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, totpAD(tenantID, identityID))
		},
		UpstreamSecret: func(tenantID, providerID string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, schema.UpstreamSecretAD(tenantID, providerID))
		},
		SAMLKey: func(tenantID, idpID string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, samlKeyAD(tenantID, idpID))
		},
		WebhookSecret: func(tenantID, webhookID string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, schema.WebhookSecretAD(tenantID, webhookID))
		},
		IdempotentResponse: func(tenantID, key string, sealed []byte) ([]byte, bool, error) {
			return k.Reseal(sealed, idempotencyAD(schema.Scope{TenantID: tenantID}, key))
		},
	}
	out := map[string]schema.ResealCounts{}
	for _, reg := range regions {
		counts, err := store.ResealSecrets(ctx, c, reg.Name, r)
		out[reg.Name] = counts
		if err != nil {
			return out, fmt.Errorf("region %s: %w", reg.Name, err)
		}
	}
	return out, nil
}
