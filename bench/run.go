package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/routing/client"
)

// Config configures a bench run.
type Config struct {
	Workloads   []string      // names from Workloads; empty means mixed
	Mode        string        // closed (default), open or ladder
	Concurrency int           // closed loop workers, open loop max in flight; 0 means 16
	Rate        float64       // open loop arrivals per second; the ladder's first rung
	Duration    time.Duration // per workload (per rung for the ladder); 0 means 30s
	Warmup      time.Duration // unmeasured load before each workload; 0 means 3s
	P99Target   time.Duration // ladder: highest acceptable p99; 0 means 10ms
	ReloadEvery int           // check-reload: a policy write every N checks; 0 means 100
	Identities  int           // per tenant; 0 means 10,000
	Roles       int           // per tenant; 0 means 100
	Resources   int           // per tenant; 0 means 10,000
	MultiRegion bool          // three regions with the simulated WAN; workers placed in each
	Binary      string        // keyplane executable for the nodes; "" means this process
	Version     string
	Progress    io.Writer // live progress line and seeding log; nil for none
	// History runs the linearizability pass after the workloads (historyPass): probe
	// revocations under the full load of validations and checks, checked for
	// violations.
	History bool
	// ProfileDir, when set, receives a CPU profile of the first node per workload
	// (<workload>.pprof), taken during the measured run.
	ProfileDir string
}

func (c *Config) defaults() {
	if len(c.Workloads) == 0 {
		c.Workloads = []string{"mixed"}
	}
	if len(c.Workloads) == 1 && c.Workloads[0] == "all" {
		c.Workloads = Workloads
	}
	c.Mode = cmp.Or(c.Mode, "closed")
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.Duration = cmp.Or(c.Duration, 30*time.Second)
	c.Warmup = cmp.Or(c.Warmup, 3*time.Second)
	c.P99Target = cmp.Or(c.P99Target, 10*time.Millisecond)
	c.ReloadEvery = cmp.Or(c.ReloadEvery, 100)
	c.Identities = cmp.Or(c.Identities, 10_000)
	c.Roles = cmp.Or(c.Roles, 100)
	c.Resources = cmp.Or(c.Resources, 10_000)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	for _, w := range c.Workloads {
		if w != "all" && !slices.Contains(Workloads, w) {
			return fmt.Errorf("workload: %q is not one of %s, all", w, strings.Join(Workloads, ", "))
		}
	}
	switch c.Mode {
	case "", "closed", "ladder":
	case "open":
		if c.Rate <= 0 {
			return errors.New("rate: the open loop needs --rate > 0 (operations per second)")
		}
	default:
		return fmt.Errorf("mode: %q is not closed, open or ladder", c.Mode)
	}
	switch {
	case c.Concurrency < 0 || c.Concurrency > 1024:
		return errors.New("concurrency: between 1 and 1024")
	case c.Rate < 0 || c.Rate > 1e6:
		return errors.New("rate: between 0 and 1,000,000 per second")
	case c.Duration < 0 || c.Duration > 24*time.Hour || (c.Duration > 0 && c.Duration < time.Second):
		return errors.New("duration: between 1s and 24h")
	case c.Warmup < 0 || c.Warmup > time.Hour:
		return errors.New("warmup: between 0 and 1h")
	case c.Identities < 0 || c.Identities > 1_000_000, c.Resources < 0 || c.Resources > 1_000_000:
		return errors.New("identities, resources: at most 1,000,000")
	case c.Roles < 0 || c.Roles > 10_000 || (c.Roles > 0 && c.Roles < 3):
		return errors.New("roles: between 3 and 10,000")
	case c.ReloadEvery < 0:
		return errors.New("reload-every: positive")
	}
	return nil
}

// Run starts a local cluster (one region, or three with the simulated WAN), seeds it,
// runs every workload with its baseline, and returns the report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg.defaults()
	rep := Report{Started: time.Now().UTC(), Machine: describeMachine(cfg.Version)}
	regions := deploy.DefaultRegions[:1]
	if cfg.MultiRegion {
		regions = deploy.DefaultRegions
	}
	fmt.Fprintf(cfg.Progress, "starting PostgreSQL and %d keyplane node(s)…\n", len(regions))
	// The bench's whole load comes from one address, which is what per-address and
	// per-tenant rate limits exist to stop: lift the token-minting and introspection
	// ones, which its workloads run at full speed.
	cl, err := deploy.Start(ctx, deploy.Config{Binary: cfg.Binary, Regions: regions, NodesPerRegion: 1, Durable: true,
		ServeArgs: []string{"--token-rate-per-ip", "off", "--token-rate-per-tenant", "off",
			"--introspect-rate-per-ip", "off", "--introspect-rate-per-tenant", "off",
			"--decision-rate-per-tenant", "off", "--write-rate-per-tenant", "off"}})
	if err != nil {
		return rep, err
	}
	defer cl.Stop()
	pcfg, err := pgxpool.ParseConfig(cl.DatabaseURL)
	if err != nil {
		return rep, fmt.Errorf("baseline pool: %w", err)
	}
	pcfg.MaxConns = int32(cfg.Concurrency)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return rep, fmt.Errorf("baseline pool: %w", err)
	}
	defer pool.Close()
	if rep.Machine.Postgres == "" {
		_ = pool.QueryRow(ctx, "SHOW server_version").Scan(&rep.Machine.Postgres)
		rep.Machine.Postgres = "PostgreSQL " + rep.Machine.Postgres + " (private, fsync on)"
	}
	hc := &http.Client{Transport: newTransport()}
	e := &env{cl: cl, hc: hc, pool: pool, multi: cfg.MultiRegion, regions: regions,
		operator: connect.WithInterceptors(client.Bearer(cl.OperatorSecret), client.Tenant())}
	if err := seedAll(ctx, e, cfg, cfg.Progress); err != nil {
		return rep, fmt.Errorf("%w%s", err, nodeErrors(cl))
	}
	for _, name := range cfg.Workloads {
		res, err := runWorkload(ctx, e, cfg, name)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
		rep.Results = append(rep.Results, res)
	}
	if cfg.History {
		fmt.Fprintf(cfg.Progress, "history: revoking probe tokens and bindings under full load for %s…\n", cfg.Duration)
		h, err := historyPass(ctx, e, cfg)
		if err != nil {
			return rep, fmt.Errorf("history: %w%s", err, nodeErrors(cl))
		}
		rep.History = h
	}
	return rep, nil
}

func runWorkload(ctx context.Context, e *env, cfg Config, name string) (Result, error) {
	if name == "noisy-neighbour" { // tenants of its own, three open-loop passes (noisy.go)
		return noisyNeighbour(ctx, e, cfg)
	}
	res := Result{Workload: name, Mode: cfg.Mode, Concurrency: cfg.Concurrency}
	if cfg.Mode == "open" {
		res.Rate = cfg.Rate
	}
	if name == "revoke" || name == "mixed" {
		per := int(min(200_000, max(2_000, 3000*(cfg.Duration+cfg.Warmup).Seconds())))
		if name == "mixed" {
			per = min(per, 20_000)
		}
		fmt.Fprintf(cfg.Progress, "minting %d tokens per tenant to revoke…\n", per)
		if err := mintForRevoke(ctx, e, per); err != nil {
			return res, err
		}
	}
	var writes atomic.Int64
	f, err := e.workload(name, cfg.Concurrency, cfg.ReloadEvery, &writes)
	if err != nil {
		return res, err
	}
	if cfg.Warmup > 0 {
		closedLoop(ctx, cfg.Concurrency, cfg.Warmup, f, newRecorder())
	}
	writes.Store(0)
	reloadsBefore := e.policyReloads(ctx)
	usage := startUsage(e.cl)
	profiled := e.profile(ctx, cfg, name)
	var probe *overshootProbe
	if cfg.MultiRegion && cfg.Mode != "open" {
		// A forward's two links: a client's to its own region, and to another region
		// (the proxies' overshoot depends on how loaded the machine is, not on the
		// delay: one pair of round trips stands for every route).
		if probe, err = startOvershootProbe(ctx, e.cl.RTT(e.regions[0], e.regions[0]), e.cl.RTT(e.regions[0], e.regions[1])); err != nil {
			return res, err
		}
	}
	rec, elapsed := measure(ctx, cfg, name, f)
	if probe != nil {
		over, err := probe.stop()
		if err != nil {
			return res, err
		}
		res.ProxyOvershootMS = &over
	}
	res.Nodes = usage.stop()
	if err := <-profiled; err != nil {
		fmt.Fprintf(cfg.Progress, "profile of %s: %v\n", name, err)
	}
	rec.fill(&res, elapsed)
	res.WarmupS = cfg.Warmup.Seconds()
	if name == "check-reload" {
		res.ReloadEvery = cfg.ReloadEvery
	}
	if cfg.Mode == "ladder" {
		res.Ladder, res.MaxRate = ladder(ctx, cfg, name, f)
		res.P99TargetMS = float64(cfg.P99Target.Microseconds()) / 1000
	}
	if name == "check-reload" || name == "mixed" {
		res.Writes = writes.Load()
		res.Reloads = e.policyReloads(ctx) - reloadsBefore
	}
	if kind := floorOf[name]; kind != "" {
		b, err := runBaseline(ctx, e, cfg, name+" floor", kind)
		if err != nil {
			return res, err
		}
		res.Baseline = b
		res.Ratio = res.Throughput / b.Throughput
		res.P99DiffMS = res.Latency.P99 - b.Latency.P99
	}
	if kind := secondOf[name]; kind != "" {
		b, err := runBaseline(ctx, e, cfg, name+" "+kind, kind)
		if err != nil {
			return res, err
		}
		res.BindingsBaseline = b
		res.BindingsRatio = res.Throughput / b.Throughput
	}
	// The zero-latency pass would use up revoke's minted tokens; it needs forwards.
	if cfg.MultiRegion && name != "revoke" && hasForwarded(res.Routes) && res.Throughput > 0 {
		z, err := zeroLatency(ctx, e, cfg, name, f, res.Throughput)
		if err != nil {
			return res, err
		}
		res.ZeroLatency = z
		compareZeroLatency(&res)
	}
	res.Targets = targets(res, cfg, len(e.cl.Nodes))
	return res, nil
}

// runBaseline measures a raw read under the configured load model.
func runBaseline(ctx context.Context, e *env, cfg Config, label, kind string) (*Baseline, error) {
	rec, elapsed := measure(ctx, cfg, label, e.baselineOp(kind))
	var b Result
	rec.fill(&b, elapsed)
	if len(b.Errors) > 0 {
		return nil, fmt.Errorf("baseline %s failed: %v", kind, b.Errors)
	}
	return &Baseline{Query: baselineQuery[kind], Ops: b.Ops, Throughput: b.Throughput, Latency: b.Latency}, nil
}

// zeroLatencyFor bounds the zero-latency pass.
const zeroLatencyFor = 5 * time.Second

// zeroLatency runs f again with every simulated round trip set to 0 (the same
// proxies, the same forwards), open loop at rate, the main run's throughput, so the
// nodes do the same work per second as in the main run and latencies compare: what
// remains of a forwarded p50 minus its round trip beyond this pass's p50 is what the
// WAN costs beyond its configured delay. The round trips are restored before it
// returns.
func zeroLatency(ctx context.Context, e *env, cfg Config, name string, f op, rate float64) (z *ZeroLatency, err error) {
	saved := map[[2]string]time.Duration{}
	defer func() {
		for pair, rtt := range saved {
			if rerr := e.cl.SetRTT(pair[0], pair[1], rtt); rerr != nil && err == nil {
				err = fmt.Errorf("restore the simulated round trip %s-%s: %w", pair[0], pair[1], rerr)
			}
		}
	}()
	for i, a := range e.regions {
		for _, b := range e.regions[i:] {
			saved[[2]string{a, b}] = e.cl.RTT(a, b)
			if err := e.cl.SetRTT(a, b, 0); err != nil {
				return nil, fmt.Errorf("zero-latency pass: %w", err)
			}
		}
	}
	c := cfg
	c.Mode, c.Rate, c.Duration = "open", rate, min(cfg.Duration, zeroLatencyFor)
	// A second unmeasured at the same rate: connections through the changed proxies.
	openLoop(ctx, rate, time.Second, c.Concurrency*4, f, newRecorder())
	rec, elapsed := measure(ctx, c, name+" zero latency", f)
	var r Result
	rec.fill(&r, elapsed)
	z = &ZeroLatency{Rate: rate, DurationS: r.DurationS, Routes: r.Routes}
	if len(r.Errors) > 0 {
		z.Errors = r.Errors
	}
	return z, nil
}

func hasForwarded(routes map[string]Route) bool {
	for k := range routes {
		if kind, _, _ := strings.Cut(k, " "); kind == routing.RouteForwarded {
			return true
		}
	}
	return false
}

// compareZeroLatency sets each forwarded route's zero-latency p50 and overhead.
func compareZeroLatency(res *Result) {
	if res.ZeroLatency == nil {
		return
	}
	zero, ok := res.ZeroLatency.Routes[routing.RouteForwarded]
	if !ok || zero.Ops == 0 {
		return
	}
	for k, rt := range res.Routes {
		if kind, _, _ := strings.Cut(k, " "); kind != routing.RouteForwarded || rt.Ops == 0 {
			continue
		}
		p50, over := zero.Latency.P50, rt.Latency.P50-rt.RTTms-zero.Latency.P50
		rt.ZeroLatencyP50, rt.OverheadMS = &p50, &over
		if res.ProxyOvershootMS != nil {
			net := over - *res.ProxyOvershootMS
			rt.NetOverheadMS = &net
		}
		res.Routes[k] = rt
	}
}

// measure runs f under the configured load model (the ladder's measured run is a
// closed loop) with a live progress line.
func measure(ctx context.Context, cfg Config, label string, f op) (*recorder, time.Duration) {
	rec := newRecorder()
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go progress(pctx, cfg.Progress, label, rec, done)
	start := time.Now()
	if cfg.Mode == "open" {
		openLoop(ctx, cfg.Rate, cfg.Duration, cfg.Concurrency*4, f, rec)
	} else {
		closedLoop(ctx, cfg.Concurrency, cfg.Duration, f, rec)
	}
	elapsed := time.Since(start)
	stop()
	<-done
	return rec, elapsed
}

// ladder runs open-loop rungs, doubling the rate while p99 stays under the target and
// nothing fails (at most 12 rungs), and returns them with the highest good rate.
func ladder(ctx context.Context, cfg Config, name string, f op) ([]Step, float64) {
	rate := cfg.Rate
	if rate <= 0 {
		rate = 100
	}
	rung := min(cfg.Duration, 10*time.Second)
	var steps []Step
	var best float64
	for range 12 {
		c := cfg
		c.Mode, c.Rate, c.Duration = "open", rate, rung
		rec, elapsed := measure(ctx, c, fmt.Sprintf("%s ladder %.0f/s", name, rate), f)
		var r Result
		rec.fill(&r, elapsed)
		s := Step{Rate: rate, Throughput: r.Throughput, Latency: r.Latency, Errors: sum(r.Errors)}
		s.OK = s.Errors == 0 && s.Latency.P99 <= float64(cfg.P99Target.Microseconds())/1000 && s.Throughput >= 0.9*rate
		steps = append(steps, s)
		if !s.OK || ctx.Err() != nil {
			break
		}
		best = rate
		rate *= 2
	}
	return steps, best
}

// newTransport keeps a connection per worker (HTTP/1.1: measured faster here than
// h2c, which multiplexes every worker over one connection).
func newTransport() *http.Transport { return &http.Transport{MaxIdleConnsPerHost: 256} }

// nodeErrors returns the last error lines of the nodes' logs, for a failure report.
func nodeErrors(cl *deploy.Cluster) string {
	var out []string
	for _, n := range cl.Nodes {
		b, err := os.ReadFile(n.LogFile)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		var errs []string
		for _, l := range lines {
			if strings.Contains(l, `"level":"ERROR"`) {
				errs = append(errs, l)
			}
		}
		if len(errs) > 3 {
			errs = errs[len(errs)-3:]
		}
		for _, l := range errs {
			out = append(out, n.ID+": "+l)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "\nnode log errors:\n" + strings.Join(out, "\n")
}

// profile fetches a CPU profile of the first node during the measured run.
func (e *env) profile(ctx context.Context, cfg Config, name string) <-chan error {
	done := make(chan error, 1)
	if cfg.ProfileDir == "" {
		done <- nil
		return done
	}
	go func() {
		secs := max(1, int(cfg.Duration.Seconds())-1)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.cl.Nodes[0].OperatorURL+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
		if err != nil {
			done <- err
			return
		}
		req.Header.Set("Authorization", "Bearer "+e.cl.OperatorSecret)
		resp, err := e.hc.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("profile: %s", resp.Status)
			return
		}
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			done <- err
			return
		}
		f, err := os.Create(filepath.Join(cfg.ProfileDir, name+".pprof"))
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return done
}

// policyReloads sums keyplane_policy_reloads_total over every running node.
func (e *env) policyReloads(ctx context.Context) int64 {
	var total int64
	for _, n := range e.cl.Nodes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.OperatorURL+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := e.hc.Do(req)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "keyplane_policy_reloads_total"); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v[strings.LastIndexByte(v, ' ')+1:]), 64)
				total += int64(f)
			}
		}
		resp.Body.Close()
	}
	return total
}

// floorTargets are the least throughput over the floor each decision workload must
// reach (issue 18); each also keeps its p99 within the floor's p99 + 1 ms.
var floorTargets = map[string]float64{"validate": 0.5, "introspect": 0.4, "check": 0.5, "check-token": 0.5}

// forwardedOverheadMS is the most a forwarded p50 may exceed its configured round trip
// plus the zero-latency pass's forwarded p50.
const forwardedOverheadMS = 1.0

// targets checks the targets that apply to this result. A missed one says by
// how much.
func targets(r Result, cfg Config, nodes int) []Target {
	var out []Target
	if want, ok := floorTargets[r.Workload]; ok && r.Baseline != nil && !cfg.MultiRegion {
		ratio := Target{Name: "throughput vs floor", Want: fmt.Sprintf("≥ %.2f", want), Got: fmt.Sprintf("%.2f", r.Ratio), Met: r.Ratio >= want}
		if !ratio.Met {
			ratio.Got += fmt.Sprintf(" (short by %.2f)", want-r.Ratio)
		}
		p99 := Target{Name: "p99 vs floor p99", Want: "≤ +1.00 ms", Got: fmt.Sprintf("%+.2f ms", r.P99DiffMS), Met: r.P99DiffMS <= 1}
		if !p99.Met {
			p99.Got += fmt.Sprintf(" (over by %.2f ms)", r.P99DiffMS-1)
		}
		out = append(out, ratio, p99)
	}
	if r.Writes > 0 {
		per := float64(r.Reloads) / float64(r.Writes*int64(nodes))
		out = append(out, Target{Name: "policy reloads per node per change", Want: "≤ 1.2",
			Got: fmt.Sprintf("%.2f (%d reloads, %d changes, %d nodes)", per, r.Reloads, r.Writes, nodes), Met: per <= 1.2})
	}
	var keys []string
	for k := range r.Routes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fw := r.Routes[k]
		if !strings.HasPrefix(k, routing.RouteForwarded) || fw.Ops == 0 || fw.OverheadMS == nil || fw.ZeroLatencyP50 == nil {
			continue
		}
		over := *fw.OverheadMS
		t := Target{Name: k + ": p50 over RTT + zero-latency p50", Want: fmt.Sprintf("≤ %.2f ms", forwardedOverheadMS),
			Got: fmt.Sprintf("%.2f ms (p50 %.2f − RTT %.2f − zero-latency p50 %.2f)", over, fw.Latency.P50, fw.RTTms, *fw.ZeroLatencyP50)}
		if fw.NetOverheadMS != nil && r.ProxyOvershootMS != nil {
			over = *fw.NetOverheadMS
			t.Name = k + ": p50 over RTT + zero-latency p50 + the proxies' overshoot"
			t.Got = fmt.Sprintf("%.2f ms (p50 %.2f − RTT %.2f − zero-latency p50 %.2f − the proxies' overshoot %.2f)", over, fw.Latency.P50, fw.RTTms,
				*fw.ZeroLatencyP50, *r.ProxyOvershootMS)
		}
		t.Met = over <= forwardedOverheadMS
		if !t.Met {
			t.Got += fmt.Sprintf(", over by %.2f ms", over-forwardedOverheadMS)
		}
		out = append(out, t)
	}
	if t, ok := noisyTarget(r); ok {
		out = append(out, t)
	}
	for _, n := range r.Nodes {
		growth := n.RSSEndM - n.RSSStartM
		t := Target{Name: "RSS growth of " + n.Node, Want: "≤ max(16 MiB, 10%)",
			Got: fmt.Sprintf("%+.1f MiB over %.0fs", growth, r.DurationS), Met: growth <= max(16, 0.1*n.RSSStartM)}
		if !t.Met {
			t.Got += fmt.Sprintf(" (over by %.1f MiB)", growth-max(16, 0.1*n.RSSStartM))
		}
		out = append(out, t)
	}
	return out
}
