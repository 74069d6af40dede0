package region

import (
	"context"
	"sync"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// tenantCache remembers where tenants live (their home region, hence the partition
// their rows are in) for validation's hot path. Nothing that revocation depends on is
// taken from it: validation reads the tenant's status with the session and identity
// in one statement. An entry lives ttl; a stale home region after a rehome makes the
// session read miss, which fails closed. Safe for concurrent use.
type tenantCache struct {
	store *schema.Store
	ttl   time.Duration

	mu sync.Mutex
	m  map[string]cachedTenant
}

type cachedTenant struct {
	t  schema.Tenant
	at time.Time
}

func (c *tenantCache) get(ctx context.Context, id string) (schema.Tenant, error) {
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.t, nil
	}
	t, err := c.store.GetTenant(ctx, id)
	if err != nil {
		return schema.Tenant{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) > 100_000 {
		c.m = map[string]cachedTenant{}
	}
	c.m[id] = cachedTenant{t: t, at: time.Now()}
	return t, nil
}

// forget drops a tenant's entry (it moved).
func (c *tenantCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}
