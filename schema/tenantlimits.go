package schema

import (
	"context"
	"math"
	"strconv"
)

// TenantRate is one of a tenant's request-rate limits: a token bucket of PerSecond
// requests a second on average and bursts of up to Burst, per node. PerSecond 0 means
// the node's default for the class, a negative PerSecond no limit at all; Burst 0
// means twice PerSecond (at least 1).
type TenantRate struct {
	PerSecond float64
	Burst     int64
}

// TenantLimits are a tenant's request-rate limits per node, one per class of request.
// The zero value is "the node's defaults for every class".
type TenantLimits struct {
	Decisions TenantRate // ValidateToken, Check, CheckBulk, WhoCan, …, introspection, userinfo
	Tokens    TenantRate // token issuance: the OAuth token endpoint, ExchangeAPIKey, Refresh, sign-in pages
	Writes    TenantRate // admin and SCIM mutations
}

// Bounds of a tenant's rate limits.
const (
	MaxTenantRate  = 1_000_000  // requests a second
	MaxTenantBurst = 10_000_000 // requests
)

// Custom reports whether any class has a limit of the tenant's own.
func (l TenantLimits) Custom() bool { return l != TenantLimits{} }

func checkTenantRate(field string, r TenantRate) error {
	switch {
	case math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) || r.PerSecond > MaxTenantRate:
		return fieldErr(field+".per_second", "must be at most %d (0: the node's default; -1: no limit)", MaxTenantRate)
	case r.PerSecond < 0 && r.PerSecond != -1:
		return fieldErr(field+".per_second", "must be -1 (no limit), 0 (the node's default) or a positive rate")
	case r.Burst < 0 || r.Burst > MaxTenantBurst:
		return fieldErr(field+".burst", "must be between 0 (twice the rate) and %d", MaxTenantBurst)
	case r.PerSecond <= 0 && r.Burst != 0:
		return fieldErr(field+".burst", "must be 0 when per_second is 0 (the node's default) or -1 (no limit)")
	}
	return nil
}

// CheckTenantLimits validates l, naming the offending field (limits.decisions.per_second, …).
func CheckTenantLimits(l TenantLimits) error {
	for _, c := range []struct {
		field string
		r     TenantRate
	}{{"limits.decisions", l.Decisions}, {"limits.tokens", l.Tokens}, {"limits.writes", l.Writes}} {
		if err := checkTenantRate(c.field, c.r); err != nil {
			return err
		}
	}
	return nil
}

func (r TenantRate) String() string {
	switch {
	case r.PerSecond == 0:
		return "default"
	case r.PerSecond < 0:
		return "off"
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + ":" + strconv.FormatInt(r.Burst, 10)
}

// SetTenantLimits replaces a tenant's rate limits, with its audit event
// (tenant.limits) in the same transaction. Setting the limits it already has changes
// nothing and writes no event.
func (s *Store) SetTenantLimits(ctx context.Context, c Change, id string, l TenantLimits) (Tenant, error) {
	if err := checkTenantID("id", id); err != nil {
		return Tenant{}, err
	}
	if err := CheckTenantLimits(l); err != nil {
		return Tenant{}, err
	}
	return s.changeTenant(ctx, c, id, "tenant.limits", func(t *Tenant) { t.Limits = l })
}
