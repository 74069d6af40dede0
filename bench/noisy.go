package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// The noisy-neighbour workload (issue 20): quietTenants tenants validate tokens at a
// steady rate each, one more tenant at noisyFactor times that rate, all on the first
// node; every tenant has a decisions limit of limitFactor times the quiet rate (its
// "plan", set with SetTenantLimits). The quiet tenants' p99 is measured alone, with the
// noisy tenant, and with the noisy tenant's limit lifted (to show what the limit
// holds back).
const (
	quietTenants     = 3
	noisyFactor      = 10
	limitFactor      = 2
	defaultQuietRate = 50 // per quiet tenant per second, without --rate
	noisyRounds      = 10 // the passes interleave, each round --duration/noisyRounds
	// noisyP99Target is the target: the quiet tenants' p99 with the noisy tenant at
	// most 20 % above their p99 alone.
	noisyP99Target = 1.2
)

// NoisyNeighbour is the noisy-neighbour workload's result (Result.NoisyNeighbour).
type NoisyNeighbour struct {
	QuietTenants int     `json:"quiet_tenants"`
	QuietRate    float64 `json:"quiet_rate"` // per quiet tenant, per second
	NoisyRate    float64 `json:"noisy_rate"`
	// Limit is every bench tenant's decisions limit per node (per second; burst twice).
	Limit float64 `json:"limit"`
	// Alone, WithNoisy and Unlimited are the three passes: the quiet tenants alone,
	// with the noisy tenant under its limit, and with the noisy tenant's limit lifted.
	Alone     NoisyPass  `json:"alone"`
	WithNoisy NoisyPass  `json:"with_noisy"`
	Unlimited *NoisyPass `json:"with_noisy_unlimited,omitempty"`
	// P99Ratio is the quiet tenants' p99 with the noisy tenant over their p99 alone,
	// over the whole passes.
	P99Ratio float64 `json:"p99_ratio"`
	// RoundRatios are the same ratio round by round (the passes interleave in rounds),
	// and MedianRoundRatio their median: how much the ratio moves with the machine's
	// other load (a round's p99 rests on few calls; the target judges P99Ratio).
	RoundRatios      []float64 `json:"round_p99_ratios"`
	MedianRoundRatio float64   `json:"median_round_p99_ratio"`
}

// NoisyPass is one pass: the quiet tenants' calls together, and the noisy tenant's.
type NoisyPass struct {
	Quiet NoisyCalls  `json:"quiet"`
	Noisy *NoisyCalls `json:"noisy,omitempty"`
}

// NoisyCalls are one side's calls in a pass.
type NoisyCalls struct {
	Ops        int64            `json:"ops"`
	Throughput float64          `json:"throughput"` // successful calls per second
	Latency    Latency          `json:"latency_ms"`
	Errors     map[string]int64 `json:"errors"` // resource_exhausted: refused by the tenant's limit
}

// noisyTenant is a small tenant of the workload: tokens to validate.
type noisyTenant struct {
	id     string
	tokens []string
}

// seedNoisy creates the workload's tenants in the first region, each with a service
// account, an API key and 32 access tokens, and sets every tenant's decisions limit.
func seedNoisy(ctx context.Context, e *env, limit float64) ([]*noisyTenant, error) {
	home := e.regions[0]
	u := e.cl.RegionNodes(home)[0].URL
	admin := keyplanev1connect.NewAdminServiceClient(e.hc, u, e.operator)
	auth := keyplanev1connect.NewAuthServiceClient(e.hc, u, e.operator)
	out := make([]*noisyTenant, quietTenants+1)
	for i := range out {
		id := "nn-quiet-" + strconv.Itoa(i+1)
		if i == quietTenants {
			id = "nn-noisy"
		}
		st, err := seed.NewTenant(ctx, admin, seed.Spec{ID: id, Home: home, OwnerName: "bench owner", Purpose: "noisy neighbour", ServiceName: "bench client"})
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", id, err)
		}
		key, err := st.APIKey(ctx, admin)
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", id, err)
		}
		t := &noisyTenant{id: id, tokens: make([]string, 32)}
		for j := range t.tokens {
			r, err := auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: id, ApiKey: key}))
			if err != nil {
				return nil, fmt.Errorf("seed %s: %w", id, err)
			}
			t.tokens[j] = r.Msg.Token.AccessToken
		}
		if err := setDecisionLimit(ctx, admin, id, limit); err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func setDecisionLimit(ctx context.Context, admin keyplanev1connect.AdminServiceClient, tenant string, perSecond float64) error {
	var burst int64
	if perSecond > 0 {
		burst = int64(2 * perSecond)
	}
	_, err := admin.SetTenantLimits(ctx, connect.NewRequest(&keyplanev1.SetTenantLimitsRequest{Id: tenant,
		Limits: &keyplanev1.TenantLimits{Decisions: &keyplanev1.RateLimit{PerSecond: perSecond, Burst: burst}}}))
	if err != nil {
		return fmt.Errorf("limit %s: %w", tenant, err)
	}
	return nil
}

// noisyNeighbour runs the workload's three passes, each for cfg.Duration in all (in
// noisyRounds interleaved rounds), open loop.
func noisyNeighbour(ctx context.Context, e *env, cfg Config) (Result, error) {
	quiet := cfg.Rate
	if quiet <= 0 {
		quiet = defaultQuietRate
	}
	nn := &NoisyNeighbour{QuietTenants: quietTenants, QuietRate: quiet, NoisyRate: noisyFactor * quiet, Limit: limitFactor * quiet}
	res := Result{Workload: "noisy-neighbour", Mode: "open", Rate: quiet * (quietTenants + noisyFactor), Concurrency: cfg.Concurrency}
	fmt.Fprintf(cfg.Progress, "noisy-neighbour: seeding %d tenants with a decisions limit of %g/s each…\n", quietTenants+1, nn.Limit)
	tenants, err := seedNoisy(ctx, e, nn.Limit)
	if err != nil {
		return res, err
	}
	u := e.cl.RegionNodes(e.regions[0])[0].URL
	auth := keyplanev1connect.NewAuthServiceClient(e.hc, u, e.operator)
	validate := func(t *noisyTenant) op {
		return func(ctx context.Context, _ int) (string, time.Duration, error) {
			r, err := auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: t.id,
				Token: t.tokens[rand.IntN(len(t.tokens))]}))
			if err == nil && !r.Msg.Active {
				err = inactiveError{"a live token validated inactive: " + r.Msg.Reason}
			}
			return "", 0, err
		}
	}
	quietOps := make([]op, quietTenants)
	for i := range quietOps {
		quietOps[i] = validate(tenants[i])
	}
	noisyOp := validate(tenants[quietTenants])
	inFlight := max(4, cfg.Concurrency)
	admin := keyplanev1connect.NewAdminServiceClient(e.hc, u, e.operator)
	// The passes run interleaved, noisyRounds rounds of the three, so that other load
	// on the machine (the bench shares it with the database and whatever else runs)
	// falls on all three alike rather than on whichever pass it coincides with.
	type passRec struct {
		label        string
		noisy, limit bool
		quiet, loud  *recorder
		rounds       []*recorder // the quiet calls of each round
		elapsed      time.Duration
	}
	passes := []*passRec{{label: "alone"}, {label: "with the noisy tenant", noisy: true, limit: true},
		{label: "with the noisy tenant unlimited", noisy: true}}
	for _, p := range passes {
		p.quiet, p.loud = newRecorder(), newRecorder()
	}
	round := max(time.Second, cfg.Duration/noisyRounds)
	// An unmeasured second to warm connections and caches.
	openLoop(ctx, quiet, time.Second, inFlight, quietOps[0], newRecorder())
	usage := startUsage(e.cl)
	for r := range noisyRounds {
		for _, p := range passes {
			if p.noisy {
				limit := -1.0
				if p.limit {
					limit = nn.Limit
				}
				if err := setDecisionLimit(ctx, admin, tenants[quietTenants].id, limit); err != nil {
					return res, err
				}
			}
			fmt.Fprintf(cfg.Progress, "noisy-neighbour round %d/%d: %s…\n", r+1, noisyRounds, p.label)
			start := time.Now()
			rrec := newRecorder()
			p.rounds = append(p.rounds, rrec)
			var wg sync.WaitGroup
			for _, f := range quietOps {
				wg.Go(func() { openLoop(ctx, quiet, round, inFlight, f, rrec) })
			}
			if p.noisy {
				wg.Go(func() { openLoop(ctx, noisyFactor*quiet, round, noisyFactor*inFlight, noisyOp, p.loud) })
			}
			wg.Wait()
			p.elapsed += time.Since(start)
			mergeInto(p.quiet, rrec)
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
	}
	res.Nodes = usage.stop()
	pass := func(p *passRec) NoisyPass {
		out := NoisyPass{Quiet: callsOf(p.quiet, p.elapsed)}
		if p.noisy {
			c := callsOf(p.loud, p.elapsed)
			out.Noisy = &c
		}
		return out
	}
	nn.Alone, nn.WithNoisy = pass(passes[0]), pass(passes[1])
	unlimited := pass(passes[2])
	nn.Unlimited = &unlimited
	if nn.Alone.Quiet.Latency.P99 > 0 {
		nn.P99Ratio = nn.WithNoisy.Quiet.Latency.P99 / nn.Alone.Quiet.Latency.P99
	}
	for r := range noisyRounds {
		alone, with := callsOf(passes[0].rounds[r], round), callsOf(passes[1].rounds[r], round)
		if alone.Latency.P99 > 0 {
			nn.RoundRatios = append(nn.RoundRatios, with.Latency.P99/alone.Latency.P99)
		}
	}
	nn.MedianRoundRatio = median(nn.RoundRatios)
	// The result's own figures are the quiet tenants' with the noisy tenant.
	q := nn.WithNoisy.Quiet
	res.DurationS, res.Ops, res.Throughput, res.Latency, res.Errors = cfg.Duration.Seconds(), q.Ops, q.Throughput, q.Latency, q.Errors
	res.Timeline = []Point{}
	res.NoisyNeighbour = nn
	res.Targets = targets(res, cfg, len(e.cl.Nodes))
	return res, nil
}

// mergeInto adds what src recorded to dst (latencies and errors; not the timeline).
func mergeInto(dst, src *recorder) {
	src.mu.Lock()
	defer src.mu.Unlock()
	dst.mu.Lock()
	defer dst.mu.Unlock()
	dst.all.Merge(src.all)
	dst.ok += src.ok
	for k, v := range src.errors {
		dst.errors[k] += v
	}
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func callsOf(rec *recorder, elapsed time.Duration) NoisyCalls {
	var r Result
	rec.fill(&r, elapsed)
	return NoisyCalls{Ops: r.Ops, Throughput: r.Throughput, Latency: r.Latency, Errors: r.Errors}
}

// noisyTarget is the noisy-neighbour target, when r has the workload's figures.
func noisyTarget(r Result) (Target, bool) {
	nn := r.NoisyNeighbour
	if nn == nil || nn.P99Ratio == 0 {
		return Target{}, false
	}
	t := Target{Name: "quiet tenants' p99 with a noisy tenant at 10× their load, over their p99 alone", Want: fmt.Sprintf("≤ %.2f", noisyP99Target),
		Got: fmt.Sprintf("%.2f (%.2f ms over %.2f ms; median of the rounds' ratios %.2f)", nn.P99Ratio, nn.WithNoisy.Quiet.Latency.P99,
			nn.Alone.Quiet.Latency.P99, nn.MedianRoundRatio),
		Met: nn.P99Ratio <= noisyP99Target}
	if !t.Met {
		t.Got += fmt.Sprintf(", over by %.2f", nn.P99Ratio-noisyP99Target)
	}
	return t, true
}

// writeNoisy is the workload's section of the Markdown report.
func writeNoisy(b *strings.Builder, nn *NoisyNeighbour) {
	fmt.Fprintf(b, "### Noisy neighbour\n\n%d quiet tenants at %g validations/s each and one noisy tenant at %g/s on one node; every tenant's decisions limit %g/s (burst %g).\n\n",
		nn.QuietTenants, nn.QuietRate, nn.NoisyRate, nn.Limit, 2*nn.Limit)
	t := table{head: []string{"pass", "quiet ops", "quiet p50", "quiet p99", "quiet errors", "noisy ops", "noisy served/s", "noisy refused", "noisy p99"}, left: 1}
	row := func(name string, p NoisyPass) {
		cells := []string{name, strconv.FormatInt(p.Quiet.Ops, 10), fmtMS(p.Quiet.Latency.P50), fmtMS(p.Quiet.Latency.P99), strconv.FormatInt(sum(p.Quiet.Errors), 10)}
		if n := p.Noisy; n != nil {
			cells = append(cells, strconv.FormatInt(n.Ops, 10), fmtCount(n.Throughput), strconv.FormatInt(n.Errors["resource_exhausted"], 10), fmtMS(n.Latency.P99))
		} else {
			cells = append(cells, "—", "—", "—", "—")
		}
		t.add(cells...)
	}
	row("alone", nn.Alone)
	row("with the noisy tenant (limited)", nn.WithNoisy)
	if nn.Unlimited != nil {
		row("with the noisy tenant (limit lifted)", *nn.Unlimited)
	}
	t.write(b)
	ratios := make([]string, len(nn.RoundRatios))
	for i, r := range nn.RoundRatios {
		ratios[i] = fmt.Sprintf("%.2f", r)
	}
	fmt.Fprintf(b, "Quiet p99 with the noisy tenant over alone: %.2f over the whole passes; by round (interleaved) %s, median %.2f.\n\n",
		nn.P99Ratio, strings.Join(ratios, ", "), nn.MedianRoundRatio)
}
