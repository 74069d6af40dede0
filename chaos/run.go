package chaos

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/chaos/history"
	"github.com/keyplane/keyplane/deploy"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// Config configures a chaos run.
type Config struct {
	Drills  []string      // names from Drills; empty means all
	Hold    time.Duration // how long each fault lasts; 0 means 4s
	Steady  time.Duration // load before and after each fault; 0 means 2s
	Workers int           // application instances per region; 0 means 2
	Pace    time.Duration // pause between a worker's calls; 0 means 20ms
	Binary  string        // keyplane executable for the nodes; "" means this process
	// StateFile, when set, runs against the cluster it describes (the file
	// `keyplane demo --state-file` writes) instead of starting one; every drill then
	// needs Commands for its fault and recovery steps.
	Commands       Commands
	Progress       io.Writer
	NodesPerRegion int // nodes per region; 0 means 2
	StateFile      string
}

// DrillResult is one drill's outcome.
type DrillResult struct {
	Name             string           `json:"name"`
	Doc              string           `json:"doc"`
	Target           string           `json:"target"`
	TargetMet        bool             `json:"target_met"`
	TargetGot        string           `json:"target_got"`
	Ops              int              `json:"ops"`
	Errors           map[string]int   `json:"errors"` // by call name and code
	SafeErrors       int              `json:"safe_errors"`
	Routes           map[string]int   `json:"routes"`
	ReadsAfterRevoke int              `json:"reads_after_revoke"`
	Writes           int              `json:"acknowledged_writes"`
	Violations       []string         `json:"revocation_violations"`
	LostWrites       []string         `json:"lost_writes"`
	AppliedTwice     []string         `json:"applied_twice"`
	OutsideResidency []string         `json:"served_outside_residency"`
	Attempted        int              `json:"attempted_writes"`
	FailOpen         []string         `json:"fail_open"`
	Recoveries       []RecoveryResult `json:"recoveries"`
	Windows          []WindowResult   `json:"windows"`
	Timeline         []Point          `json:"timeline"`
	Failed           string           `json:"failed,omitempty"` // the drill could not run
	start            time.Time
}

// RecoveryResult is one client's failover, in milliseconds (-1: no success after).
type RecoveryResult struct {
	Client         string  `json:"client"`
	Victim         bool    `json:"victim"` // its own region was hit
	FirstSuccessMS float64 `json:"first_success_ms"`
	Errors         int     `json:"errors"`
}

// WindowResult is a fault window relative to the drill's start.
type WindowResult struct {
	Label string  `json:"label"`
	FromS float64 `json:"from_s"`
	ToS   float64 `json:"to_s"`
}

// Point is one second of a drill.
type Point struct {
	T      float64 `json:"t_s"`
	OK     int     `json:"ok"`
	Errors int     `json:"errors"`
	P99MS  float64 `json:"p99_ms"`
}

// Passed reports whether every invariant held (targets are reported, not enforced,
// except through the invariants they restate).
func (r *DrillResult) Passed() bool {
	return r.Failed == "" && len(r.Violations) == 0 && len(r.LostWrites) == 0 && len(r.AppliedTwice) == 0 && len(r.OutsideResidency) == 0 && len(r.FailOpen) == 0
}

func (r *DrillResult) target(met bool, got string) { r.TargetMet, r.TargetGot = met, got }

// Report is a whole chaos run.
type Report struct {
	Started time.Time     `json:"started"`
	Command string        `json:"command"`
	Drills  []DrillResult `json:"drills"`
}

// Passed reports whether every drill kept every invariant.
func (r Report) Passed() bool {
	for i := range r.Drills {
		if !r.Drills[i].Passed() {
			return false
		}
	}
	return true
}

func (c *Config) defaults() {
	if len(c.Drills) == 0 || slices.Contains(c.Drills, "all") {
		c.Drills = DrillNames()
	}
	c.Hold = cmp.Or(c.Hold, 4*time.Second)
	c.Steady = cmp.Or(c.Steady, 2*time.Second)
	c.Workers = cmp.Or(c.Workers, 2)
	c.Pace = cmp.Or(c.Pace, 20*time.Millisecond)
	c.NodesPerRegion = cmp.Or(c.NodesPerRegion, 2)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	for _, name := range c.Drills {
		if name != "all" && !slices.ContainsFunc(Drills, func(d Drill) bool { return d.Name == name }) {
			return fmt.Errorf("drill: %q is not one of %s, all", name, strings.Join(DrillNames(), ", "))
		}
	}
	for _, m := range []map[string]string{c.Commands.Fault, c.Commands.Recover} {
		for name := range m {
			if !slices.Contains(DrillNames(), name) {
				return fmt.Errorf("fault-cmd: %q is not a drill (%s)", name, strings.Join(DrillNames(), ", "))
			}
		}
	}
	if c.StateFile != "" {
		for _, name := range c.Drills {
			for _, d := range Drills {
				if (name == "all" || name == d.Name) && (c.Commands.Fault[d.Name] == "" || c.Commands.Recover[d.Name] == "") {
					return fmt.Errorf("state-file: drill %s: %w", d.Name, errNeedsCommand)
				}
			}
		}
	}
	switch {
	case c.Hold < 0 || c.Hold > 10*time.Minute:
		return fmt.Errorf("duration: between 1s and 10m")
	case c.Workers < 0 || c.Workers > 50:
		return fmt.Errorf("workers: between 1 and 50 per region")
	}
	return nil
}

// DrillNames lists the drills in the order --all runs them.
func DrillNames() []string {
	var out []string
	for _, d := range Drills {
		out = append(out, d.Name)
	}
	return out
}

// Run starts a three-region cluster (2 nodes per region, the simulated WAN), seeds a
// tenant per region, runs the load from every region through the app-side client, and
// runs each drill in turn, checking its history.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg.defaults()
	rep := Report{Started: time.Now().UTC()}
	var tg *target
	if cfg.StateFile != "" {
		var err error
		if tg, err = loadTarget(cfg.StateFile); err != nil {
			return rep, err
		}
	} else {
		fmt.Fprintf(cfg.Progress, "starting PostgreSQL and %d keyplane nodes in 3 regions…\n", 3*cfg.NodesPerRegion)
		cl, err := deploy.Start(ctx, deploy.Config{Binary: cfg.Binary, Regions: deploy.DefaultRegions, NodesPerRegion: cfg.NodesPerRegion, Durable: true})
		if err != nil {
			return rep, err
		}
		defer cl.Stop()
		tg = localTarget(cl)
	}
	tenants, err := seedTenants(ctx, tg)
	if err != nil {
		return rep, err
	}
	rec := &recorder{}
	var seq atomic.Int64
	var workers []*worker
	for _, region := range tg.regions {
		for i := range cfg.Workers {
			w, err := newWorker(tg, region, i+1, tenants, rec, &seq)
			if err != nil {
				return rep, err
			}
			defer w.c.Close()
			workers = append(workers, w)
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(loadCtx, cfg.Pace) }()
	}
	defer func() { stopLoad(); wg.Wait() }()
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, tg.adminURL[tg.regions[0]], connect.WithInterceptors(client.Bearer(tg.secret), client.Tenant()))
	if err := sleep(ctx, cfg.Steady); err != nil {
		return rep, err
	}
	rec.take() // warm-up history is not judged
	for _, name := range cfg.Drills {
		d := Drills[slices.IndexFunc(Drills, func(d Drill) bool { return d.Name == name })]
		res := runDrill(ctx, tg, cfg, d, rec, admin, workers, tenants)
		fmt.Fprintf(cfg.Progress, "%-16s %s: %d calls, %d errors, target %s: %s\n", d.Name, verdict(&res), res.Ops, sum(res.Errors), d.Target, res.TargetGot)
		rep.Drills = append(rep.Drills, res)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

func verdict(r *DrillResult) string {
	if r.Passed() {
		return "ok"
	}
	return "FAILED"
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// runDrill runs one drill between two steady phases and judges its history.
func runDrill(ctx context.Context, tg *target, cfg Config, d Drill, rec *recorder, admin keyplanev1connect.AdminServiceClient,
	workers []*worker, tenants []*tenant) DrillResult {
	res := DrillResult{Name: d.Name, Doc: d.Doc, Target: d.Target, start: time.Now()}
	h := &harness{cl: tg.local, tg: tg, hold: cfg.Hold, cmds: cfg.Commands, drill: d.Name, serve: map[string][]string{}}
	for _, t := range tenants {
		if t.serve != nil {
			h.serve[t.id] = t.serve
		}
	}
	pctx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go progress(pctx, cfg.Progress, d.Name, res.start, rec, progressDone)
	var raceDone chan struct{}
	stopRace := func() {}
	if d.Name == "revocation-race" {
		var rctx context.Context
		rctx, stopRace = context.WithCancel(ctx)
		raceDone = make(chan struct{})
		var revoker *worker
		var readers []*worker
		for _, w := range workers {
			if w.region == "us-east" && revoker == nil {
				revoker = w
			} else if w.region != "us-east" {
				readers = append(readers, w)
			}
		}
		go func() { defer close(raceDone); race(rctx, revoker, readers, tenants) }()
	}
	_ = sleep(ctx, cfg.Steady)
	run := d.run
	if tg.local == nil {
		run = commandDrill // the SRE's commands against a cluster from a state file
	}
	if err := run(ctx, h); err != nil {
		res.Failed = err.Error()
	}
	_ = sleep(ctx, cfg.Steady)
	stopRace()
	if raceDone != nil {
		<-raceDone
	}
	stopProgress()
	<-progressDone
	ops, writes, attempted := rec.take()
	judge(&res, h, ops, writes, attempted, admin)
	switch {
	case tg.local == nil:
		res.target(len(res.Violations)+len(res.LostWrites)+len(res.AppliedTwice)+len(res.OutsideResidency)+len(res.FailOpen) == 0, "judged on the invariants only (remote cluster)")
	case d.judge != nil && res.Failed == "":
		d.judge(&res)
	}
	return res
}

// progress prints a live line every second until ctx ends.
func progress(ctx context.Context, w io.Writer, name string, start time.Time, rec *recorder, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\033[K")
			return
		case <-t.C:
			calls, errs := rec.counts()
			fmt.Fprintf(w, "\r%-16s %4.0fs  %6d calls  %5d errors", name, time.Since(start).Seconds(), calls, errs)
		}
	}
}

// judge runs the checkers over a drill's history.
func judge(res *DrillResult, h *harness, ops []history.Op, writes, attempted []history.Write, admin keyplanev1connect.AdminServiceClient) {
	res.Ops, res.Writes = len(ops), len(writes)
	res.Errors, res.Routes = map[string]int{}, map[string]int{}
	for _, op := range ops {
		if !op.OK {
			res.Errors[op.Name+":"+op.Err]++
			if op.Safe {
				res.SafeErrors++
			}
		} else if op.Route != "" {
			res.Routes[op.Route]++
		}
	}
	for _, v := range history.CheckRevocations(ops) {
		res.Violations = append(res.Violations, v.String())
	}
	res.ReadsAfterRevoke = history.ReadsAfterRevoke(ops)
	res.OutsideResidency = history.CheckResidency(ops, h.serve)
	for _, op := range history.CheckFailClosed(ops, h.blind) {
		res.FailOpen = append(res.FailOpen, fmt.Sprintf("%s of %s by %s on %s granted at %s, inside a window with the database unreadable",
			op.Name, op.Key, op.Client, op.Node, op.End.Format("15:04:05.000")))
	}
	found, applied, err := readBack(admin, writes, attempted)
	if err != nil {
		res.Failed = strings.TrimSpace(res.Failed + " read-back: " + err.Error())
	}
	for _, l := range history.CheckWrites(writes, found) {
		res.LostWrites = append(res.LostWrites, l.String())
	}
	res.Attempted = len(attempted)
	res.AppliedTwice = history.CheckAppliedOnce(attempted, applied)
	if !h.faultAt.IsZero() {
		for _, r := range history.Failover(ops, h.faultAt) {
			region, _, _ := strings.Cut(r.Client, "/")
			ms := float64(r.FirstSuccess.Microseconds()) / 1000
			if r.FirstSuccess < 0 {
				ms = -1
			}
			res.Recoveries = append(res.Recoveries, RecoveryResult{Client: r.Client, Victim: slices.Contains(h.victims, region),
				FirstSuccessMS: ms, Errors: r.Errors})
		}
	}
	for _, w := range h.windows {
		res.Windows = append(res.Windows, WindowResult{Label: w.Label, FromS: w.From.Sub(res.start).Seconds(), ToS: w.To.Sub(res.start).Seconds()})
	}
	res.Timeline = timeline(ops, res.start)
}

// timeline buckets calls by the second they ended in.
func timeline(ops []history.Op, start time.Time) []Point {
	type bucket struct {
		ok, errs int
		lat      []time.Duration
	}
	var bs []bucket
	for _, op := range ops {
		i := int(op.End.Sub(start) / time.Second)
		if i < 0 {
			continue
		}
		for len(bs) <= i {
			bs = append(bs, bucket{})
		}
		if op.OK {
			bs[i].ok++
			bs[i].lat = append(bs[i].lat, op.End.Sub(op.Start))
		} else {
			bs[i].errs++
		}
	}
	out := make([]Point, len(bs))
	for i, b := range bs {
		p := Point{T: float64(i + 1), OK: b.ok, Errors: b.errs}
		if len(b.lat) > 0 {
			sort.Slice(b.lat, func(x, y int) bool { return b.lat[x] < b.lat[y] })
			p.P99MS = float64(b.lat[min(len(b.lat)-1, len(b.lat)*99/100)].Microseconds()) / 1000
		}
		out[i] = p
	}
	return out
}

// readBack finds every acknowledged write (the identity exists, and how many
// identity.create audit events name it) and counts the identities of every attempted
// write's name (Tenant + "/" + Name).
// retryUnavailable calls read until it succeeds, fails with another code than
// unavailable, or ctx ends. The read-back runs while the load goes on, right after a
// drill, on a machine the drill just starved: an "unavailable; retry later" answer
// (a database connection not made within its timeout) is the API telling the caller
// to retry, and says nothing about whether a write was lost. Reads only.
func retryUnavailable[T any](ctx context.Context, read func() (T, error)) (T, error) {
	pause := 100 * time.Millisecond
	for {
		out, err := read()
		if connect.CodeOf(err) != connect.CodeUnavailable {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("%w (retried until the read-back's deadline)", err)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

func readBack(admin keyplanev1connect.AdminServiceClient, writes, attempted []history.Write) (map[string]history.Found, map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	found, applied := map[string]history.Found{}, map[string]int{}
	tenants, names := map[string]bool{}, map[string]bool{}
	for _, w := range writes {
		tenants[w.Tenant] = true
	}
	for _, w := range attempted {
		tenants[w.Tenant], names[w.Tenant+"/"+w.Name] = true, true
	}
	for tenant := range tenants {
		page := ""
		for range 10_000 {
			resp, err := retryUnavailable(ctx, func() (*connect.Response[keyplanev1.ListIdentitiesResponse], error) {
				return admin.ListIdentities(ctx, connect.NewRequest(&keyplanev1.ListIdentitiesRequest{TenantId: tenant, PageSize: 1000, PageToken: page}))
			})
			if err != nil {
				return found, applied, fmt.Errorf("list identities of %s: %w", tenant, err)
			}
			for _, id := range resp.Msg.Identities {
				f := found[tenant+"/"+id.Id]
				f.Present = true
				found[tenant+"/"+id.Id] = f
				if name := tenant + "/" + id.DisplayName; names[name] {
					applied[name]++
				}
			}
			if page = resp.Msg.NextPageToken; page == "" {
				break
			}
		}
		page = ""
		for range 100_000 {
			resp, err := retryUnavailable(ctx, func() (*connect.Response[keyplanev1.ListAuditEventsResponse], error) {
				return admin.ListAuditEvents(ctx, connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: tenant, PageSize: 1000, PageToken: page}))
			})
			if err != nil {
				return found, applied, fmt.Errorf("list audit events of %s: %w", tenant, err)
			}
			for _, ev := range resp.Msg.Events {
				if ev.Action == "identity.create" {
					f := found[tenant+"/"+ev.TargetId]
					f.AuditEvents++
					found[tenant+"/"+ev.TargetId] = f
				}
			}
			if page = resp.Msg.NextPageToken; page == "" {
				break
			}
		}
	}
	return found, applied, nil
}
