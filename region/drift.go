package region

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/keyplane/keyplane/region/authz"
	"github.com/keyplane/keyplane/schema"
)

// driftChecker compares how this node decides with how the others do. Each round,
// for every active tenant (at most maxTenants per round, taking turns), it takes a
// deterministic sample, the tenant's newest DriftSample decisions made before the
// start of the current DriftEvery period, re-evaluates them against its own policy
// snapshot at the tenant's current revision, and writes the digest of the outcomes
// with the revision and the sample's id. A node whose digest of the same revision and
// sample differs from another's has drifted (a stale or corrupted policy cache, a
// different engine version): that raises a policy_drift alert, once (suppressed like
// any alert). Conditions are judged with the sampled decision's time and entry region
// and without request context (IP, device, caller context), so every node evaluates
// the same inputs. Used by one goroutine.
type driftChecker struct {
	n          *Node
	a          *analytics
	log        *slog.Logger
	every      time.Duration
	sample     int
	maxTenants int
	next       int
}

func newDriftChecker(n *Node, a *analytics) *driftChecker {
	return &driftChecker{n: n, a: a, log: n.log, every: n.cfg.Analytics.DriftEvery, sample: n.cfg.Analytics.DriftSample, maxTenants: 100}
}

// run compares every d.every (jittered) until ctx is done; analytics off or a
// negative interval does nothing.
func (d *driftChecker) run(ctx context.Context) {
	if d.n.cfg.Analytics.Off || d.every < 0 {
		return
	}
	for {
		t := time.NewTimer(d.every/2 + rand.N(d.every/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := d.round(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("policy drift round", "err", err)
		}
	}
}

// round compares up to maxTenants tenants.
func (d *driftChecker) round(ctx context.Context) error {
	ts, err := d.n.store.AllTenants(ctx)
	if err != nil || len(ts) == 0 {
		return err
	}
	start := d.next % len(ts)
	d.next = start + 1
	for i := range min(len(ts), d.maxTenants) {
		sc := ts[(start+i)%len(ts)]
		if _, err := d.compare(ctx, sc.TenantID); err != nil {
			return fmt.Errorf("tenant %s: %w", sc.TenantID, err)
		}
	}
	return nil
}

// compare writes this node's digest for one tenant and raises an alert when another
// node's differs; it reports whether it raised one.
func (d *driftChecker) compare(ctx context.Context, tenantID string) (bool, error) {
	t, err := d.n.store.GetTenant(ctx, tenantID)
	if err != nil {
		return false, err
	}
	cutoff := d.n.now().Truncate(d.every)
	ds, _, err := d.n.store.ListDecisions(ctx, t.Scope(), schema.DecisionFilter{End: cutoff}, cutoff.Add(-t.DecisionRetention), schema.Page{Size: d.sample})
	if err != nil || len(ds) == 0 {
		return false, err
	}
	snap, err := d.n.policies.snapshot(ctx, t, consistency{})
	if err != nil {
		return false, err
	}
	ids := make([]string, 0, len(ds))
	for _, x := range ds {
		if x.PrincipalID != "" {
			ids = append(ids, x.PrincipalID)
		}
	}
	identities, err := d.n.store.GetIdentities(ctx, t.Scope(), ids)
	if err != nil {
		return false, err
	}
	sampleID, digest := driftDigest(snap, ds, identities)
	others, err := d.n.store.RecordDrift(ctx, t.Scope(), schema.DriftDigest{Revision: snap.Revision(), SampleID: sampleID, Digest: digest})
	if err != nil || len(others) == 0 {
		return false, err
	}
	o := others[0]
	return d.a.raise(ctx, t.Scope(), schema.Alert{Kind: AlertPolicyDrift, Value: fmt.Sprintf("%d/%s", snap.Revision(), sampleID),
		Reason: fmt.Sprintf("at policy revision %d, nodes decide %d sampled checks differently: %s/%s (digest %.12s) and %s/%s (digest %.12s)",
			snap.Revision(), len(ds), d.n.cfg.Region, d.n.cfg.NodeID, digest, o.Region, o.Node, o.Digest)})
}

// driftDigest re-evaluates the sampled decisions against snap and returns the
// sample's id (a hash of the decisions' ids) and the digest of the outcomes (allowed
// or not, and the deciding bindings, per decision, in the sample's order).
func driftDigest(snap *authz.Snapshot, ds []schema.Decision, identities map[string]schema.Identity) (string, string) {
	sample, out := sha256.New(), sha256.New()
	for _, x := range ds {
		fmt.Fprintf(sample, "%s\n", x.ID)
		i := identities[x.PrincipalID]
		dec := snap.Check(authz.Request{PrincipalID: x.PrincipalID, PrincipalKind: authz.KindIdentity, IdentityKind: i.Kind, PrincipalAttrs: i.Attributes,
			Permission: x.Permission, Resource: x.Resource, Time: x.At, Region: x.EntryRegion, ServingRegion: x.ServingRegion})
		bindings := slices.Clone(dec.BindingIDs)
		slices.Sort(bindings)
		fmt.Fprintf(out, "%s %t %s\n", x.ID, dec.Allowed, strings.Join(bindings, ","))
	}
	return hex.EncodeToString(sample.Sum(nil))[:16], hex.EncodeToString(out.Sum(nil))
}
