package routing

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keyplane/keyplane/schema"
)

// Placement is where a tenant lives: its home region and the placement epoch, which
// grows every time the tenant is rehomed.
type Placement struct {
	Tenant string
	Home   string
	Epoch  int64
	// ServeRegions are the only regions whose nodes may serve a residency-strict
	// tenant; nil means any (docs/residency.md).
	ServeRegions []string
}

// MayServe reports whether a node of region may serve the tenant.
func (p Placement) MayServe(region string) bool {
	return p.ServeRegions == nil || slices.Contains(p.ServeRegions, region)
}

// TenantReader reads a tenant from the GLOBAL tenants table. *schema.Store satisfies it.
type TenantReader interface {
	GetTenant(ctx context.Context, id string) (schema.Tenant, error)
}

// Directory maps tenants to their home region. Entries are cached for a TTL; a
// forwarded request that carries a newer placement epoch than the cached one
// invalidates the entry, so a rehome is seen at once by the nodes it touches. Routing
// only uses it to pick where to send a request: the node that serves reads the
// tenant row itself, and every write checks the home region in its own transaction,
// so a stale entry costs a detour, never a wrong answer. Safe for concurrent use.
type Directory struct {
	src   TenantReader
	ttl   time.Duration
	reads singleflight.Group // one read of a tenant's row at a time, shared by every caller waiting for it

	mu sync.Mutex
	m  map[string]cachedPlacement
}

type cachedPlacement struct {
	t  schema.Tenant
	p  Placement // placementOf(t), made once per read of the row
	at time.Time
}

func placementOf(t schema.Tenant) Placement {
	p := Placement{Tenant: t.ID, Home: t.HomeRegion, Epoch: t.PlacementEpoch}
	if t.ServeRegions != "" {
		p.ServeRegions = strings.Split(t.ServeRegions, ",")
	}
	return p
}

// NewDirectory returns a directory reading src; ttl 0 means 5 seconds.
func NewDirectory(src TenantReader, ttl time.Duration) *Directory {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	return &Directory{src: src, ttl: ttl, m: map[string]cachedPlacement{}}
}

// maxEntries bounds the cache; when full it starts over (tenants are few compared
// with requests, so a reset costs one read per tenant).
const maxEntries = 100_000

// Lookup returns the tenant's placement. minEpoch > 0 refuses a cached entry older
// than that epoch.
func (d *Directory) Lookup(ctx context.Context, tenant string, minEpoch int64) (Placement, error) {
	e, err := d.entry(ctx, tenant, minEpoch)
	if err != nil {
		return Placement{}, err
	}
	return e.p, nil
}

// Tenant returns the tenant row as cached (at most the TTL old, and at least at
// minEpoch). Only what changes by rehoming may be taken from it: the home region (the
// partition of its rows) and the epoch. Revocation state, status and policy revision
// are read fresh by the callers that need them.
func (d *Directory) Tenant(ctx context.Context, tenant string, minEpoch int64) (schema.Tenant, error) {
	e, err := d.entry(ctx, tenant, minEpoch)
	return e.t, err
}

// entry is the tenant's cache entry, read again when missing, older than the TTL or
// than minEpoch.
func (d *Directory) entry(ctx context.Context, tenant string, minEpoch int64) (cachedPlacement, error) {
	d.mu.Lock()
	e, ok := d.m[tenant]
	d.mu.Unlock()
	if ok && time.Since(e.at) < d.ttl && e.t.PlacementEpoch >= minEpoch {
		return e, nil
	}
	e, err := d.read(ctx, tenant)
	if err == nil && e.t.PlacementEpoch < minEpoch {
		// The shared read began before the move that minEpoch names committed: read
		// again, alone.
		var t schema.Tenant
		if t, err = d.src.GetTenant(ctx, tenant); err == nil {
			e = d.put(tenant, t)
		}
	}
	return e, err
}

// sharedReadTimeout bounds a tenant read shared by several callers: it is not bound
// to any one caller's context (the first caller leaving must not fail the others),
// and each caller waits for it at most until its own context ends.
const sharedReadTimeout = 5 * time.Second

// read reads the tenant's row and caches it. Concurrent callers share one read: when
// a busy tenant's entry expires, or the database is slow or down, its in-flight
// requests must not each send a query (and hold a connection) for the same row.
func (d *Directory) read(ctx context.Context, tenant string) (cachedPlacement, error) {
	ch := d.reads.DoChan(tenant, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedReadTimeout)
		defer cancel()
		t, err := d.src.GetTenant(rctx, tenant)
		if err != nil {
			return cachedPlacement{}, err
		}
		return d.put(tenant, t), nil
	})
	select {
	case r := <-ch:
		return r.Val.(cachedPlacement), r.Err
	case <-ctx.Done():
		return cachedPlacement{}, ctx.Err()
	}
}

// put caches the row just read of tenant.
func (d *Directory) put(tenant string, t schema.Tenant) cachedPlacement {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.m) >= maxEntries {
		d.m = map[string]cachedPlacement{}
	}
	e := cachedPlacement{t: t, p: placementOf(t), at: time.Now()}
	d.m[tenant] = e
	return e
}

// Forget drops a tenant's entry (after a rehome, or a misdirected forward).
func (d *Directory) Forget(tenant string) {
	d.mu.Lock()
	delete(d.m, tenant)
	d.mu.Unlock()
}
