package chaos

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/keyplane/keyplane/chaos/history"
	"github.com/keyplane/keyplane/deploy"
)

// Drill is one failure drill: it injects its faults into a running cluster while the
// load runs, and says which windows the checkers must know about.
type Drill struct {
	Name string
	// What the drill proves, for the report.
	Doc string
	// Target is the failover target checked on the drill's recoveries.
	Target string
	run    func(ctx context.Context, h *harness) error
	judge  func(r *DrillResult)
}

// harness is what a drill acts on.
type harness struct {
	cl      *deploy.Cluster // nil against a cluster from a state file
	tg      *target
	hold    time.Duration // how long a fault lasts
	cmds    Commands
	drill   string
	windows []history.Window
	blind   []history.Window // the database could not be read
	faultAt time.Time
	victims []string            // clients whose region the fault hit (region-outage)
	serve   map[string][]string // residency-strict tenants' regions
}

// Commands replace a drill's built-in fault and recovery steps with the SRE's own
// (for real environments): keyed by drill name.
type Commands struct {
	Fault   map[string]string
	Recover map[string]string
}

// ParseCommands parses Commands.Fault or Commands.Recover from their flag form, one
// NAME=COMMAND entry each (as --fault-cmd and --recover-cmd take them).
func ParseCommands(list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, e := range list {
		name, cmd, ok := strings.Cut(e, "=")
		if !ok || name == "" || cmd == "" {
			return nil, fmt.Errorf("%q is not NAME=COMMAND", e)
		}
		out[name] = cmd
	}
	return out, nil
}

// fault runs the drill's fault step: the SRE's command when one is configured, else
// builtin. It records the fault time.
func (h *harness) fault(ctx context.Context, builtin func() error) error {
	h.faultAt = time.Now()
	if cmd := h.cmds.Fault[h.drill]; cmd != "" {
		return shell(ctx, cmd)
	}
	return builtin()
}

// recover runs the recovery step likewise.
func (h *harness) recover(ctx context.Context, builtin func() error) error {
	if cmd := h.cmds.Recover[h.drill]; cmd != "" {
		return shell(ctx, cmd)
	}
	return builtin()
}

func shell(ctx context.Context, cmd string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%q: %w: %s", cmd, err, out)
	}
	return nil
}

func (h *harness) window(label string, from time.Time) {
	h.windows = append(h.windows, history.Window{Label: label, From: from, To: time.Now()})
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// settle waits until the cluster routes normally again after a recovery.
func (h *harness) settle(ctx context.Context) error { return h.tg.settle(ctx) }

// commandDrill is every drill against a cluster from a state file: the SRE's fault
// command, the hold, the SRE's recovery command, then wait until every node is ready.
func commandDrill(ctx context.Context, h *harness) error {
	fail := func() error { return errNeedsCommand }
	if err := h.fault(ctx, fail); err != nil {
		return err
	}
	if err := sleep(ctx, h.hold); err != nil {
		return err
	}
	h.window(h.drill+" (--fault-cmd)", h.faultAt)
	if err := h.recover(ctx, fail); err != nil {
		return err
	}
	return h.settle(ctx)
}

// Drills are every drill, in the order --all runs them.
var Drills = []Drill{
	{Name: "node-kill", Doc: "SIGKILL one node of us-east mid-load, restart it later.",
		Target: "no failed call (writes carry idempotency keys, so every call is safe to retry)",
		run: func(ctx context.Context, h *harness) error {
			n := h.cl.RegionNodes("us-east")[0]
			if err := h.fault(ctx, func() error { return n.Signal(syscall.SIGKILL) }); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold); err != nil {
				return err
			}
			h.window(n.ID+" killed", h.faultAt)
			if err := h.recover(ctx, func() error { return h.cl.StartNode(ctx, n) }); err != nil {
				return err
			}
			return h.settle(ctx)
		},
		judge: func(r *DrillResult) {
			r.target(sum(r.Errors) == 0, fmt.Sprintf("%d failed calls (%d of them safe to retry)", sum(r.Errors), r.SafeErrors))
		}},
	{Name: "region-outage", Doc: "Kill every node of eu-west: its clients fail over, its tenant is served degraded elsewhere; then bring the region back.",
		Target: "eu-west clients succeed again within 3 s",
		run: func(ctx context.Context, h *harness) error {
			nodes := h.cl.RegionNodes("eu-west")
			if err := h.fault(ctx, func() error {
				var errs []error
				for _, n := range nodes {
					errs = append(errs, n.Signal(syscall.SIGKILL))
				}
				return errors.Join(errs...)
			}); err != nil {
				return err
			}
			h.victims = []string{"eu-west"}
			if err := sleep(ctx, h.hold); err != nil {
				return err
			}
			h.window("eu-west down", h.faultAt)
			if err := h.recover(ctx, func() error {
				var errs []error
				for _, n := range nodes {
					errs = append(errs, h.cl.StartNode(ctx, n))
				}
				return errors.Join(errs...)
			}); err != nil {
				return err
			}
			return h.settle(ctx)
		},
		judge: func(r *DrillResult) {
			worst := time.Duration(0)
			ok := true
			for _, rec := range r.Recoveries {
				if rec.Victim {
					if rec.FirstSuccessMS < 0 {
						ok = false
					}
					worst = max(worst, time.Duration(rec.FirstSuccessMS*float64(time.Millisecond)))
				}
			}
			r.target(ok && worst < 3*time.Second, fmt.Sprintf("slowest eu-west client: %s", worst.Round(time.Millisecond)))
		}},
	{Name: "partition", Doc: "Cut us-east from eu-west both ways, heal, then one way (us-east → eu-west), heal.",
		Target: "no wrong answer; requests across the cut served degraded",
		run: func(ctx context.Context, h *harness) error {
			if err := h.fault(ctx, func() error { return h.cl.Partition("us-east", "eu-west", false) }); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold/2); err != nil {
				return err
			}
			h.window("us-east ⇹ eu-west", h.faultAt)
			if err := h.recover(ctx, func() error { return h.cl.Heal("us-east", "eu-west") }); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold/4); err != nil {
				return err
			}
			from := time.Now()
			if err := h.cl.Partition("us-east", "eu-west", true); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold/2); err != nil {
				return err
			}
			h.window("us-east → eu-west cut", from)
			return h.cl.Heal("us-east", "eu-west")
		},
		judge: func(r *DrillResult) { r.target(true, fmt.Sprintf("%d degraded answers", r.Routes["degraded"])) }},
	{Name: "db-outage", Doc: "Freeze PostgreSQL (SIGSTOP), resume it; then crash it (SIGKILL) and restart it. Nodes must answer unavailable and go not ready, then recover by themselves.",
		Target: "nothing granted while the database was unreadable; recovery without restarts",
		run: func(ctx context.Context, h *harness) error {
			pg := h.cl.Postgres
			if pg == nil {
				return errors.New("db-outage needs the cluster's own PostgreSQL")
			}
			// The postmaster and every backend.
			group := pg.SignalAll
			if err := h.fault(ctx, func() error { return group(syscall.SIGSTOP) }); err != nil {
				return err
			}
			// The database is blind only once every process has stopped: signalling
			// them walks /proc, and meanwhile running backends still answer (a read
			// served then is no fail-open). The fault window shows the whole step.
			frozen := time.Now()
			if err := sleep(ctx, h.hold/2); err != nil {
				_ = group(syscall.SIGCONT)
				return err
			}
			resumed := time.Now()
			if err := h.recover(ctx, func() error { return group(syscall.SIGCONT) }); err != nil {
				return err
			}
			h.window("database frozen", h.faultAt)
			h.windows[len(h.windows)-1].To = resumed
			h.blind = append(h.blind, history.Window{Label: "frozen", From: frozen, To: resumed})
			if err := sleep(ctx, h.hold/4); err != nil {
				return err
			}
			crashing := time.Now()
			pg.Crash()
			crashed := time.Now() // every process is gone only now
			if err := sleep(ctx, h.hold/2); err != nil {
				return err
			}
			restarted := time.Now()
			if err := pg.Restart(ctx); err != nil {
				return err
			}
			h.windows = append(h.windows, history.Window{Label: "database crashed", From: crashing, To: time.Now()})
			h.blind = append(h.blind, history.Window{Label: "crashed", From: crashed, To: restarted})
			return h.settle(ctx)
		},
		judge: func(r *DrillResult) {
			r.target(len(r.FailOpen) == 0, fmt.Sprintf("%d reads granted while blind", len(r.FailOpen)))
		}},
	{Name: "latency-spike", Doc: "Add 500 ms to the us-east ↔ ap-south link; timeouts and hedging hold.",
		Target: "no failed call that is safe to retry",
		run: func(ctx context.Context, h *harness) error {
			base := h.cl.RTT("us-east", "ap-south")
			if err := h.fault(ctx, func() error { return h.cl.SetRTT("us-east", "ap-south", base+500*time.Millisecond) }); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold); err != nil {
				return err
			}
			h.window("+500 ms us-east ↔ ap-south", h.faultAt)
			return h.recover(ctx, func() error { return h.cl.SetRTT("us-east", "ap-south", base) })
		},
		judge: func(r *DrillResult) {
			r.target(r.SafeErrors == 0, fmt.Sprintf("%d failed safe calls", r.SafeErrors))
		}},
	{Name: "rolling-restart", Doc: "Restart every node, one at a time (SIGTERM, start, wait until routed), under load.",
		Target: "no failed call (writes carry idempotency keys, so every call is safe to retry)",
		run: func(ctx context.Context, h *harness) error {
			h.faultAt = time.Now()
			for _, n := range h.cl.Nodes {
				from := time.Now()
				if cmd := h.cmds.Fault[h.drill]; cmd != "" {
					if err := shell(ctx, cmd); err != nil {
						return err
					}
				} else {
					n.Stop()
					if err := h.cl.StartNode(ctx, n); err != nil {
						return err
					}
				}
				if err := h.settle(ctx); err != nil {
					return err
				}
				h.window("restart "+n.ID, from)
			}
			return nil
		},
		judge: func(r *DrillResult) {
			r.target(sum(r.Errors) == 0, fmt.Sprintf("%d failed calls (%d of them safe to retry)", sum(r.Errors), r.SafeErrors))
		}},
	{Name: "revocation-race", Doc: "Revokes in us-east and validations everywhere, racing, while eu-west is cut off from us-east and the ap-south link is slow.",
		Target: "no read granted after an acknowledged revoke",
		run: func(ctx context.Context, h *harness) error {
			base := h.cl.RTT("us-east", "ap-south")
			if err := h.fault(ctx, func() error {
				return errors.Join(h.cl.Partition("us-east", "eu-west", false), h.cl.SetRTT("us-east", "ap-south", base+300*time.Millisecond))
			}); err != nil {
				return err
			}
			if err := sleep(ctx, h.hold); err != nil {
				return err
			}
			h.window("us-east ⇹ eu-west, +300 ms to ap-south", h.faultAt)
			return h.recover(ctx, func() error {
				return errors.Join(h.cl.Heal("us-east", "eu-west"), h.cl.SetRTT("us-east", "ap-south", base))
			})
		},
		judge: func(r *DrillResult) {
			r.target(len(r.Violations) == 0, fmt.Sprintf("%d reads after revoke checked", r.ReadsAfterRevoke))
		}},
}
