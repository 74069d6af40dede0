package schema

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Webhook is an endpoint a tenant's alerts are delivered to. The caller (region) has
// validated the URL; SealedSecret is the signing secret sealed under the KEK with
// WebhookSecretAD.
type Webhook struct {
	ID           string
	URL          string
	Description  string
	SealedSecret []byte
	CreatedAt    time.Time
}

// MaxWebhooks is how many webhooks a tenant may have.
const MaxWebhooks = 100

// NewWebhookID returns a fresh webhook id (the secret is sealed with it before the
// row is written).
func NewWebhookID() string { return uuid.NewString() }

// WebhookSecretAD is the associated data a webhook's secret is sealed with: a sealed
// secret cannot be moved to another tenant or webhook.
func WebhookSecretAD(tenantID, webhookID string) []byte {
	return []byte("analytics-webhook-secret/" + tenantID + "/" + webhookID)
}

// CreateWebhook adds w (its ID from NewWebhookID) with its audit event; a tenant has
// at most MaxWebhooks.
func (s *Store) CreateWebhook(ctx context.Context, c Change, sc Scope, w Webhook) (Webhook, error) {
	if _, err := parseID("id", w.ID); err != nil {
		return Webhook{}, err
	}
	if len(w.Description) > 200 || !utf8.ValidString(w.Description) {
		return Webhook{}, fieldErr("webhook.description", "at most 200 bytes of UTF-8")
	}
	if len(w.SealedSecret) == 0 {
		return Webhook{}, errors.New("create webhook: no sealed secret")
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM analytics_webhooks WHERE crdb_region = $1 AND tenant_id = $2`, sc.Region, sc.TenantID).Scan(&n); err != nil {
			return fmt.Errorf("count webhooks: %w", err)
		}
		if n >= MaxWebhooks {
			return fmt.Errorf("%w: the tenant has %d webhooks, the most allowed", ErrPrecondition, n)
		}
		if err := tx.QueryRow(ctx, `INSERT INTO analytics_webhooks (tenant_id, id, crdb_region, url, description, secret_sealed)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at`, sc.TenantID, w.ID, sc.Region, w.URL, w.Description, w.SealedSecret).Scan(&w.CreatedAt); err != nil {
			return fmt.Errorf("insert webhook: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "analytics.webhook.create", targetKind: "webhook", targetID: w.ID,
			after: map[string]any{"url": w.URL, "description": w.Description}})
	})
	return w, err
}

// ListWebhooks lists the tenant's webhooks, oldest first.
func (s *Store) ListWebhooks(ctx context.Context, sc Scope) ([]Webhook, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::TEXT, url, description, secret_sealed, created_at FROM analytics_webhooks
WHERE crdb_region = $1 AND tenant_id = $2 ORDER BY created_at, id`, sc.Region, sc.TenantID)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Webhook, error) {
		var w Webhook
		err := r.Scan(&w.ID, &w.URL, &w.Description, &w.SealedSecret, &w.CreatedAt)
		return w, err
	})
	return out, classify(err)
}

// DeleteWebhook deletes a webhook and its deliveries not yet made, with its audit
// event.
func (s *Store) DeleteWebhook(ctx context.Context, c Change, sc Scope, id string) error {
	if _, err := parseID("id", id); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		var url string
		err := tx.QueryRow(ctx, `DELETE FROM analytics_webhooks WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3 RETURNING url`,
			sc.Region, sc.TenantID, id).Scan(&url)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: webhook %s", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("delete webhook: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM analytics_deliveries WHERE crdb_region = $1 AND tenant_id = $2 AND webhook_id = $3 AND state IN ('pending', 'sending')`,
			sc.Region, sc.TenantID, id); err != nil {
			return fmt.Errorf("drop deliveries: %w", err)
		}
		return s.writeAudit(ctx, tx, sc, c, audit{action: "analytics.webhook.delete", targetKind: "webhook", targetID: id,
			before: map[string]any{"url": url}})
	})
}

// ClaimedDelivery is a delivery a node claimed, with what sending it needs.
type ClaimedDelivery struct {
	Delivery
	URL          string
	SealedSecret []byte
	Alert        Alert
}

// ClaimDeliveries claims up to limit due deliveries of the tenant for this node, for
// lease: one conditional UPDATE takes rows that are pending and
// due, or whose sending claim expired (a node died sending), re-checking the
// condition on each row it updates, so two nodes never both hold one. Each claim
// counts an attempt. A claimed delivery whose webhook was deleted meanwhile is left
// out.
func (s *Store) ClaimDeliveries(ctx context.Context, sc Scope, lease time.Duration, limit int) ([]ClaimedDelivery, error) {
	const due = `((state = 'pending' AND next_at <= now()) OR (state = 'sending' AND claimed_until < now()))`
	var ds []Delivery
	// One statement, in a transaction only so that a serialization failure (another
	// node claiming at the same moment) is retried.
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE analytics_deliveries SET state = 'sending', claimed_by = $3, claimed_until = now() + make_interval(secs => $4),
  attempts = attempts + 1
WHERE crdb_region = $1 AND tenant_id = $2 AND `+due+` AND (alert_id, webhook_id) IN (
  SELECT alert_id, webhook_id FROM analytics_deliveries WHERE crdb_region = $1 AND tenant_id = $2 AND `+due+` ORDER BY next_at LIMIT $5)
RETURNING alert_id::TEXT, webhook_id::TEXT, state, attempts, last_error, delivered_at`, sc.Region, sc.TenantID, s.node, lease.Seconds(), limit)
		if err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		if ds, err = pgx.CollectRows(rows, scanDelivery); err != nil {
			return fmt.Errorf("claim deliveries: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]ClaimedDelivery, 0, len(ds))
	for _, d := range ds {
		cd := ClaimedDelivery{Delivery: d}
		err := s.pool.QueryRow(ctx, `SELECT w.url, w.secret_sealed, a.id::TEXT, a.at, a.identity_id, a.kind, a.value, a.reason, a.region, a.node
FROM analytics_webhooks w, analytics_alerts a
WHERE w.crdb_region = $1 AND w.tenant_id = $2 AND w.id = $3 AND a.crdb_region = $1 AND a.tenant_id = $2 AND a.id = $4`,
			sc.Region, sc.TenantID, d.WebhookID, d.AlertID).Scan(&cd.URL, &cd.SealedSecret, &cd.Alert.ID, &cd.Alert.At, &cd.Alert.IdentityID,
			&cd.Alert.Kind, &cd.Alert.Value, &cd.Alert.Reason, &cd.Alert.Region, &cd.Alert.Node)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // the webhook was deleted meanwhile
		}
		if err != nil {
			return nil, classify(err)
		}
		cd.Alert.TenantID = sc.TenantID
		out = append(out, cd)
	}
	return out, nil
}

// FinishDelivery records the outcome of a claimed delivery, if this node still holds
// the claim: delivered; or, on failure (errText non-empty), pending again after
// backoff, or failed for good once maxAttempts were made. It returns the state
// recorded ("" when the claim was lost).
func (s *Store) FinishDelivery(ctx context.Context, sc Scope, d Delivery, errText string, backoff time.Duration, maxAttempts int) (string, error) {
	state := "delivered"
	switch {
	case errText == "":
	case d.Attempts >= maxAttempts:
		state = "failed"
	default:
		state = "pending"
	}
	if len(errText) > 500 {
		errText = errText[:500]
	}
	tag, err := s.pool.Exec(ctx, `UPDATE analytics_deliveries SET state = $5, last_error = $6, claimed_until = NULL,
  next_at = now() + make_interval(secs => $7), delivered_at = CASE WHEN $5 = 'delivered' THEN now() END
WHERE crdb_region = $1 AND tenant_id = $2 AND alert_id = $3 AND webhook_id = $4 AND state = 'sending' AND claimed_by = $8 AND attempts = $9`,
		sc.Region, sc.TenantID, d.AlertID, d.WebhookID, state, errText, backoff.Seconds(), s.node, d.Attempts)
	if err != nil {
		return "", classify(err)
	}
	if tag.RowsAffected() == 0 {
		return "", nil
	}
	return state, nil
}

// PendingDeliveryTenants lists the tenants homed in region that have deliveries due
// or whose claims expired.
func (s *Store) PendingDeliveryTenants(ctx context.Context, region string) ([]Scope, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT tenant_id FROM analytics_deliveries
WHERE crdb_region = $1 AND ((state = 'pending' AND next_at <= now()) OR (state = 'sending' AND claimed_until < now())) ORDER BY tenant_id`, region)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Scope, error) {
		sc := Scope{Region: region}
		err := r.Scan(&sc.TenantID)
		return sc, err
	})
	return out, classify(err)
}
