package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/chaos/history"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// History is the linearizability pass (--history): the bench's full load of
// validations and fresh checks runs at --concurrency while probe tokens are revoked
// and probe bindings removed, and every probe call is recorded and checked by the
// drills' checkers (chaos/history): no read that started after a revocation was
// acknowledged may grant access.
type History struct {
	DurationS float64 `json:"duration_s"`
	// LoadOps and LoadThroughput are the load's own operations (validate and check,
	// half each) during the pass, errors included in ops.
	LoadOps        int64            `json:"load_ops"`
	LoadThroughput float64          `json:"load_throughput"`
	LoadErrors     map[string]int64 `json:"load_errors"`
	Tokens         HistoryCheck     `json:"tokens"`   // ValidateToken against RevokeToken
	Bindings       HistoryCheck     `json:"bindings"` // fresh Check against DeleteBinding
}

// HistoryCheck is one checker's verdict over a recorded history.
type HistoryCheck struct {
	Reads   int `json:"reads"`
	Revokes int `json:"revokes"`
	// ReadsAfterRevoke are the reads that started after their key's revocation was
	// acknowledged: the ones that test the guarantee.
	ReadsAfterRevoke int    `json:"reads_after_revoke"`
	FailedReads      int    `json:"failed_reads"`
	Violations       int    `json:"violations"`
	FirstViolation   string `json:"first_violation,omitempty"`
}

const (
	historyTokens   = 48 // probe tokens revoked during the pass
	historyBindings = 12 // probe bindings removed during the pass (each a policy change every node reloads)
	historyReaders  = 4  // probe readers per checker, next to the load's workers
)

// historyPass runs the linearizability pass on the first tenant.
func historyPass(ctx context.Context, e *env, cfg Config) (*History, error) {
	t := e.tenants[0]
	home := e.cl.RegionNodes(t.home)[0].URL
	admin := keyplanev1connect.NewAdminServiceClient(e.hc, home, e.operator)
	auth := keyplanev1connect.NewAuthServiceClient(e.hc, home, e.operator)
	tokens := make([]string, historyTokens)
	if err := parallel(ctx, len(tokens), 8, func(ctx context.Context, i int) error {
		r, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey}))
		if err != nil {
			return err
		}
		tokens[i] = r.Msg.Token.AccessToken
		return nil
	}); err != nil {
		return nil, fmt.Errorf("probe tokens: %w", err)
	}
	// Probe bindings: role 0 bound directly to one identity on a scope of its own, so
	// each grants exactly one (identity, resource) pair until removed. Policy writes
	// serialize on the tenant's revision: one writer.
	type probe struct{ binding, identity, resource string }
	probes := make([]probe, min(historyBindings, len(t.identities)))
	if err := parallel(ctx, len(probes), 1, func(ctx context.Context, i int) error {
		p := probe{identity: t.identities[i], resource: fmt.Sprintf("probe/%d/doc", i)}
		r, err := admin.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: t.id,
			Effect: keyplanev1.Effect_EFFECT_ALLOW, PrincipalKind: "identity", PrincipalId: p.identity, RoleId: t.roles[0],
			Scope: fmt.Sprintf("probe/%d/", i)}))
		if err != nil {
			return err
		}
		p.binding = r.Msg.Binding.Id
		probes[i] = p
		return nil
	}); err != nil {
		return nil, fmt.Errorf("probe bindings: %w", err)
	}

	// The load: validations and fresh checks, half each, at full concurrency.
	validate, err := e.workload("validate", cfg.Concurrency, cfg.ReloadEvery, nil)
	if err != nil {
		return nil, err
	}
	check, err := e.workload("check", cfg.Concurrency, cfg.ReloadEvery, nil)
	if err != nil {
		return nil, err
	}
	load := func(ctx context.Context, w int) (string, time.Duration, error) {
		if w%2 == 0 {
			return validate(ctx, w)
		}
		return check(ctx, w)
	}

	var mu sync.Mutex
	var tokenOps, bindingOps []history.Op
	record := func(ops *[]history.Op, op history.Op) {
		mu.Lock()
		*ops = append(*ops, op)
		mu.Unlock()
	}
	// Probe clients are spread over the nodes the load uses (every region's, with
	// --multi-region: forwarded reads are probed too).
	probeAuth := func(w int) (keyplanev1connect.AuthServiceClient, string) {
		u := e.url(w)
		return keyplanev1connect.NewAuthServiceClient(e.hc, u, e.operator), u
	}
	probeCheck := func(w int) (keyplanev1connect.CheckServiceClient, string) {
		u := e.url(w)
		return keyplanev1connect.NewCheckServiceClient(e.hc, u, e.operator), u
	}

	rec := newRecorder()
	pctx, cancel := context.WithTimeout(ctx, cfg.Duration+30*time.Second)
	defer cancel()
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	wg.Go(func() { closedLoop(pctx, cfg.Concurrency, cfg.Duration, load, rec) })
	for r := range historyReaders {
		wg.Go(func() {
			c, u := probeAuth(r)
			for n := 0; n < 1_000_000 && time.Now().Before(deadline) && pctx.Err() == nil; n++ {
				tok := tokens[rand.IntN(len(tokens))]
				op := history.Op{Kind: history.Read, Name: "validate", Key: tok[len(tok)-16:], Node: u, Start: time.Now()}
				resp, err := c.ValidateToken(pctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: t.id, Token: tok}))
				op.End, op.OK = time.Now(), err == nil
				op.Granted = err == nil && resp.Msg.Active
				record(&tokenOps, op)
			}
		})
		wg.Go(func() {
			c, u := probeCheck(r + 1)
			for n := 0; n < 1_000_000 && time.Now().Before(deadline) && pctx.Err() == nil; n++ {
				p := probes[rand.IntN(len(probes))]
				op := history.Op{Kind: history.Read, Name: "check", Key: p.binding, Node: u, Start: time.Now()}
				resp, err := c.Check(pctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.id,
					Principal: &keyplanev1.CheckRequest_IdentityId{IdentityId: p.identity}, Permission: benchPermission, Resource: p.resource}))
				op.End, op.OK = time.Now(), err == nil
				op.Granted = err == nil && resp.Msg.Allowed
				record(&bindingOps, op)
			}
		})
	}
	// The revoker: every probe token and binding revoked once, spread over the first
	// four fifths of the pass, each from a node of its own choosing.
	start := time.Now()
	var revokeErr error
	wg.Go(func() {
		order := rand.Perm(len(tokens) + len(probes))
		step := cfg.Duration * 4 / 5 / time.Duration(len(order))
		for k, i := range order {
			if d := time.Until(start.Add(time.Duration(k+1) * step)); d > 0 {
				select {
				case <-time.After(d):
				case <-pctx.Done():
					return
				}
			}
			w := rand.IntN(cfg.Concurrency)
			if i < len(tokens) {
				c, u := probeAuth(w)
				op := history.Op{Kind: history.Revoke, Name: "revoke", Key: tokens[i][len(tokens[i])-16:], Node: u, Start: time.Now()}
				_, err := c.RevokeToken(pctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: t.id, Token: tokens[i]}))
				op.End, op.OK = time.Now(), err == nil
				record(&tokenOps, op)
				if err != nil && revokeErr == nil {
					revokeErr = fmt.Errorf("revoke a probe token: %w", err)
				}
				continue
			}
			p := probes[i-len(tokens)]
			op := history.Op{Kind: history.Revoke, Name: "delete binding", Key: p.binding, Node: home, Start: time.Now()}
			_, err := admin.DeleteBinding(pctx, connect.NewRequest(&keyplanev1.DeleteBindingRequest{TenantId: t.id, BindingId: p.binding}))
			op.End, op.OK = time.Now(), err == nil
			record(&bindingOps, op)
			if err != nil && revokeErr == nil {
				revokeErr = fmt.Errorf("delete a probe binding: %w", err)
			}
		}
	})
	wg.Wait()
	elapsed := time.Since(start)
	if revokeErr != nil {
		return nil, revokeErr
	}
	var res Result
	rec.fill(&res, elapsed)
	h := &History{DurationS: elapsed.Seconds(), LoadOps: res.Ops, LoadThroughput: res.Throughput, LoadErrors: res.Errors,
		Tokens: verdict(tokenOps), Bindings: verdict(bindingOps)}
	return h, nil
}

// verdict checks a history for revocation violations.
func verdict(ops []history.Op) HistoryCheck {
	var c HistoryCheck
	for _, op := range ops {
		switch {
		case op.Kind == history.Revoke:
			c.Revokes++
		case !op.OK:
			c.FailedReads++
		default:
			c.Reads++
		}
	}
	vs := history.CheckRevocations(ops)
	c.Violations, c.ReadsAfterRevoke = len(vs), history.ReadsAfterRevoke(ops)
	if len(vs) > 0 {
		c.FirstViolation = vs[0].String()
	}
	return c
}
