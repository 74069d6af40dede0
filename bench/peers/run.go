package peers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyplane/keyplane/bench"
)

// seed makes the pair streams (and the agreement sample) the same in every run.
const seed = 18

// mapping says how keyplane's data maps to the peers' model, for the report.
const mapping = "keyplane group j (the members of role j) → group:j, each membership → (user:i, member, group:j); " +
	"each binding of role j to group j on scope res/r/ → (group:j#member, viewer, resource:r); " +
	"every role grants the one permission checked, so view (SpiceDB) / can_view (OpenFGA) = viewer"

// system is one started system under test.
type system struct {
	name, version, api, consistency, process string
	check                                    checkFunc
	pid                                      func() int
}

// Run builds the peers (or finds them in BinDir), starts keyplane seeded with the
// shape and the peers loaded with the same relationships on the same PostgreSQL,
// checks that every system answers a sample of pairs alike, then measures each
// selected system in turn. Every process it starts is stopped before it returns,
// also when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg.defaults()
	log := cfg.Progress
	rep := Report{Started: time.Now().UTC(), Machine: bench.DescribeMachine(cfg.Version), Concurrency: cfg.Concurrency,
		WarmupS: cfg.Warmup.Seconds(), Rounds: cfg.Rounds, Mapping: mapping}
	rep.Machine.Note = "load generator, keyplane node, OpenFGA, SpiceDB and PostgreSQL share the machine"
	rep.LoadAvg[0] = loadAvg() // before anything of the run started: the machine's other work
	builds := map[string]Build{}
	for _, name := range []string{OpenFGA, SpiceDB} {
		if !slices.Contains(cfg.Systems, name) {
			continue
		}
		b, err := binary(ctx, cfg.BinDir, name, log)
		if err != nil {
			return rep, err
		}
		builds[name] = b
		rep.Builds = append(rep.Builds, b)
	}

	fmt.Fprintf(log, "starting PostgreSQL and a keyplane node, seeding %d identities, %d roles, %d resources…\n",
		cfg.Identities, cfg.Roles, cfg.Resources)
	target, err := bench.StartCheckTarget(ctx, bench.Config{Identities: cfg.Identities, Roles: cfg.Roles, Resources: cfg.Resources,
		Binary: cfg.Binary, Version: cfg.Version, Progress: log})
	if err != nil {
		return rep, fmt.Errorf("keyplane: %w", err)
	}
	defer target.Stop()
	if rep.Machine.Postgres == "" {
		rep.Machine.Postgres = "PostgreSQL (private, fsync on), one database per system"
	}
	pcfg, err := pgxpool.ParseConfig(target.Cluster.DatabaseURL)
	if err != nil {
		return rep, fmt.Errorf("floor pool: %w", err)
	}
	pcfg.MaxConns = int32(cfg.Concurrency)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return rep, fmt.Errorf("floor pool: %w", err)
	}
	defer pool.Close()
	var pgVersion string
	if err := pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err == nil {
		rep.Machine.Postgres = "PostgreSQL " + pgVersion + " (private, fsync on), one database per system"
	}
	shape, err := LoadShape(ctx, pool, Seeded{Tenant: target.Tenant, Region: target.Region, Identities: target.Identities,
		Groups: target.Groups, Roles: target.Roles, Resources: target.Resources})
	if err != nil {
		return rep, fmt.Errorf("read keyplane's data: %w", err)
	}
	tuples := shape.Tuples()
	rep.Shape = ShapeInfo{Identities: shape.Identities, Others: shape.Others, Roles: len(target.Roles), Resources: shape.Resources}
	for _, t := range tuples {
		if t.Relation == relMember {
			rep.Shape.Memberships++
		} else {
			rep.Shape.Grants++
		}
	}

	systems := map[string]*system{
		Keyplane: {name: Keyplane, version: cfg.Version, api: "Connect (HTTP/1.1, protobuf), CheckService.Check",
			consistency: "fully_consistent", process: "keyplane node", check: func(ctx context.Context, _, i, r int) (bool, error) {
				return target.Check(ctx, i, r)
			}, pid: target.NodePid},
		Floor: {name: Floor, version: "PostgreSQL " + strings.Fields(pgVersion + " ?")[0], api: "raw pgx: the identity row by primary key",
			consistency: "read committed", check: floorCheck(pool, target), pid: func() int { return 0 }},
	}
	logDir, err := os.MkdirTemp("", "keyplane-peers-")
	if err != nil {
		return rep, err
	}
	if slices.Contains(cfg.Systems, OpenFGA) {
		b := builds[OpenFGA]
		fmt.Fprintf(log, "starting OpenFGA %s and writing %d tuples…\n", b.Version, len(tuples))
		url, err := peerDatabase(ctx, target, OpenFGA)
		if err != nil {
			return rep, err
		}
		f, err := startOpenFGA(ctx, b.Path, url, logDir)
		if err != nil {
			return rep, fmt.Errorf("openfga %s: %w", b.Version, err)
		}
		defer f.stop()
		if err := f.load(ctx, tuples); err != nil {
			return rep, fmt.Errorf("openfga %s: %w", b.Version, err)
		}
		if err := analyze(ctx, url); err != nil {
			return rep, fmt.Errorf("openfga database: %w", err)
		}
		systems[OpenFGA] = &system{name: OpenFGA, version: b.Version, api: "HTTP/JSON (net/http), POST /stores/{id}/check",
			consistency: "HIGHER_CONSISTENCY", process: "openfga", check: f.check, pid: f.pid}
	}
	if slices.Contains(cfg.Systems, SpiceDB) {
		b := builds[SpiceDB]
		fmt.Fprintf(log, "starting SpiceDB %s and writing %d relationships…\n", b.Version, len(tuples))
		url, err := peerDatabase(ctx, target, SpiceDB)
		if err != nil {
			return rep, err
		}
		s, err := startSpiceDB(ctx, b.Path, url, logDir, cfg.Concurrency)
		if err != nil {
			return rep, fmt.Errorf("spicedb %s: %w", b.Version, err)
		}
		defer s.stop()
		if err := s.load(ctx, tuples); err != nil {
			return rep, fmt.Errorf("spicedb %s: %w", b.Version, err)
		}
		if err := analyze(ctx, url); err != nil {
			return rep, fmt.Errorf("spicedb database: %w", err)
		}
		systems[SpiceDB] = &system{name: SpiceDB, version: b.Version, api: "gRPC (authzed-go v1 client), PermissionsService.CheckPermission",
			consistency: "fully_consistent", process: "spicedb", check: s.check, pid: s.pid}
	}

	asked := []string{Keyplane}
	for _, n := range []string{OpenFGA, SpiceDB} {
		if systems[n] != nil {
			asked = append(asked, n)
		}
	}
	rep.Agreement = Agreement{Pairs: cfg.Pairs, Systems: asked}
	fmt.Fprintf(log, "checking that %s answer %d pairs alike…\n", strings.Join(asked, ", "), cfg.Pairs)
	n, err := agree(ctx, shape, cfg.Pairs, asked, systems)
	if err != nil {
		return rep, err
	}
	rep.Agreement.Allowed = n

	// The systems take turns: Rounds rounds of Duration/Rounds each, so load from
	// outside the run (a shared machine) falls on every system alike.
	accs := map[string]*measured{}
	for _, name := range cfg.Systems {
		accs[name] = &measured{t: tally{hist: newHist(), errors: map[string]int64{}}}
		if cfg.Warmup > 0 {
			fmt.Fprintf(log, "warming %s up for %s…\n", name, cfg.Warmup)
			closedLoop(ctx, cfg.Concurrency, cfg.Warmup, shape.Identities, shape.Resources, seed+1, systems[name].check)
		}
	}
	slice := cfg.Duration / time.Duration(cfg.Rounds)
	for round := range cfg.Rounds {
		for _, name := range cfg.Systems {
			sys, a := systems[name], accs[name]
			fmt.Fprintf(log, "round %d/%d: measuring %s for %s at c=%d…", round+1, cfg.Rounds, name, slice, cfg.Concurrency)
			u := bench.StartUsage(name, sys.pid())
			t := closedLoop(ctx, cfg.Concurrency, slice, shape.Identities, shape.Resources, seed+uint64(round)*1000, sys.check)
			nu := u.Stop()
			cpu, rs, re, rp := nu.CPUs, nu.RSSStartM, nu.RSSEndM, nu.RSSPeakM
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			fmt.Fprintf(log, " %.0f checks/s\n", float64(t.ok)/t.elapsed.Seconds())
			a.add(t, cpu, rs, re, rp, round == 0)
		}
	}
	rep.LoadAvg[1] = loadAvg()
	for _, name := range cfg.Systems {
		sys, a := systems[name], accs[name]
		t := a.t
		res := Result{System: name, Version: sys.version, API: sys.api, Consistency: sys.consistency, Ops: t.ok + sumErrors(t.errors),
			Throughput: float64(t.ok) / t.elapsed.Seconds(), Latency: latencyOf(t), Errors: t.errors, FirstError: t.firstErr,
			Process: sys.process}
		if name != Floor {
			f := float64(t.allowed) / float64(max(t.ok, 1))
			res.AllowedFraction = &f
			res.CPUSeconds, res.RSSStartM, res.RSSEndM, res.RSSPeakM = a.cpu, a.rssStart, a.rssEnd, a.rssPeak
		}
		rep.DurationS = t.elapsed.Seconds()
		rep.Results = append(rep.Results, res)
		fmt.Fprintf(log, "  %s: %.0f checks/s, p50 %.2f ms, p99 %.2f ms, errors %d\n", name, res.Throughput, res.Latency.P50, res.Latency.P99, sumErrors(t.errors))
	}
	var floor float64
	for _, r := range rep.Results {
		if r.System == Floor {
			floor = r.Throughput
		}
	}
	for i := range rep.Results {
		if floor > 0 {
			rep.Results[i].VsFloor = rep.Results[i].Throughput / floor
		}
	}
	_ = os.RemoveAll(logDir) // kept on failure, for the peers' logs
	return rep, nil
}

// measured sums a system's rounds.
type measured struct {
	t                         tally
	cpu                       float64
	rssStart, rssEnd, rssPeak float64
}

func (m *measured) add(t tally, cpu, rssStart, rssEnd, rssPeak float64, first bool) {
	m.t.hist.Merge(t.hist)
	m.t.ok += t.ok
	m.t.allowed += t.allowed
	for k, v := range t.errors {
		m.t.errors[k] += v
	}
	if m.t.firstErr == "" {
		m.t.firstErr = t.firstErr
	}
	m.t.elapsed += t.elapsed
	m.cpu += cpu
	if first {
		m.rssStart = rssStart
	}
	m.rssEnd = rssEnd
	m.rssPeak = max(m.rssPeak, rssPeak)
}

// floorCheck is the one point read a fresh decision must make: the identity's row by
// primary key. It answers nothing (allowed is always false).
func floorCheck(pool *pgxpool.Pool, t *bench.CheckTarget) checkFunc {
	return func(ctx context.Context, _, i, _ int) (bool, error) {
		var st string
		var exp, valid *time.Time
		err := pool.QueryRow(ctx, `SELECT status, expires_at, tokens_valid_after FROM identities
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, t.Region, t.Tenant, t.Identities[i]).Scan(&st, &exp, &valid)
		return false, err
	}
}

// peerDatabase creates the peer's own database on keyplane's PostgreSQL and returns
// its URL.
func peerDatabase(ctx context.Context, t *bench.CheckTarget, name string) (string, error) {
	pg := t.Cluster.Postgres
	if pg == nil {
		return "", errors.New("the keyplane target has no private PostgreSQL")
	}
	if err := pg.CreateDatabase(ctx, name, ""); err != nil {
		return "", err
	}
	return pg.URL(name), nil
}

// analyze gives a freshly loaded database its planner statistics, as keyplane's got
// after seeding.
func analyze(ctx context.Context, url string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	_, err = c.Exec(ctx, "ANALYZE")
	return err
}

// agree asks every system in names about n pairs (half uniform, half drawn from the
// allowed ones, so both answers are exercised) and fails on the first answer that
// differs from the shape's. It returns how many pairs the shape allows.
func agree(ctx context.Context, s *Shape, n int, names []string, systems map[string]*system) (int, error) {
	pairs := samplePairs(s, n)
	allowed := 0
	var diffs []string
	for _, p := range pairs {
		want := s.Allowed(p[0], p[1])
		if want {
			allowed++
		}
		for _, name := range names {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			got, err := systems[name].check(cctx, 0, p[0], p[1])
			cancel()
			if err != nil {
				return 0, fmt.Errorf("agreement: %s on identity %d, resource %d: %w", name, p[0], p[1], err)
			}
			if got != want {
				diffs = append(diffs, fmt.Sprintf("%s says %v for identity %d, resource %d (the data says %v)", name, got, p[0], p[1], want))
			}
		}
	}
	if len(diffs) > 0 {
		return allowed, fmt.Errorf("agreement: %d of %d answers differ:\n  %s", len(diffs), len(pairs)*len(names),
			strings.Join(diffs[:min(len(diffs), 10)], "\n  "))
	}
	return allowed, nil
}

// samplePairs returns n (identity, resource) pairs: the first half uniform, the rest
// allowed ones (uniform again when the shape allows nothing).
func samplePairs(s *Shape, n int) [][2]int {
	rng := rand.New(rand.NewPCG(seed, 0xa9))
	byGroup := make([][]int, s.Groups)
	for r, gs := range s.Grants {
		for _, g := range gs {
			byGroup[g] = append(byGroup[g], r)
		}
	}
	out := make([][2]int, 0, n)
	for k := range n {
		i, r := rng.IntN(s.Identities), rng.IntN(s.Resources)
		if k >= n/2 && len(s.Members[i]) > 0 {
			if rs := byGroup[s.Members[i][rng.IntN(len(s.Members[i]))]]; len(rs) > 0 {
				r = rs[rng.IntN(len(rs))]
			}
		}
		out = append(out, [2]int{i, r})
	}
	return out
}

func latencyOf(t tally) bench.Latency {
	ms := func(q float64) float64 { return float64(t.hist.ValueAtQuantile(q)) / 1000 }
	return bench.Latency{P50: ms(50), P90: ms(90), P99: ms(99), P999: ms(99.9), Max: float64(t.hist.Max()) / 1000}
}

func sumErrors(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
