package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keyplane/keyplane/chaos"
)

func runChaos(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "run" {
		return onlyRun(stdout, args, "Usage: keyplane chaos run [flags]   run failure drills against a local three-region cluster under load")
	}
	c := newCommand(stdout, "chaos run", "Start a local three-region cluster (2 nodes per region, simulated WAN), run a steady mixed load from every region through the app-side client, inject faults, and check the recorded history: linearizable revocation, no lost acknowledged write, fail closed. Exits 1 when an invariant breaks.", `
Drills: `+strings.Join(chaos.DrillNames(), ", ")+`.

For a real environment, replace a drill's fault or recovery step with your own command
(the load and the checkers stay the same); with --state-file the run uses the cluster
the file describes, and every drill needs both commands:
  --fault-cmd 'node-kill=kubectl delete pod keyplane-us-east-0'
  --recover-cmd 'node-kill=kubectl wait --for=condition=ready pod -l app=keyplane'

Examples:
  keyplane chaos run --all --report chaos/reports/latest
  keyplane chaos run --drill node-kill,db-outage --duration 10s`)
	fs := c.flags
	drill := fs.String("drill", "", "drill(s) to run, comma-separated")
	all := fs.Bool("all", false, "run every drill")
	var cfg chaos.Config
	fs.DurationVar(&cfg.Hold, "duration", 4*time.Second, "how long each fault lasts")
	fs.DurationVar(&cfg.Steady, "steady", 2*time.Second, "steady load before and after each fault")
	fs.IntVar(&cfg.Workers, "workers", 2, "application instances per region")
	report := fs.String("report", "", "write report.json, report.md and a timeline SVG per drill into this directory")
	fs.StringVar(&cfg.StateFile, "state-file", "", "run against the cluster this file describes (as `keyplane demo --state-file` writes it) instead of starting one; every drill then needs --fault-cmd and --recover-cmd")
	var faults, recovers listFlag
	fs.Var(&faults, "fault-cmd", "NAME=COMMAND: run COMMAND instead of drill NAME's fault step (repeatable)")
	fs.Var(&recovers, "recover-cmd", "NAME=COMMAND: run COMMAND instead of drill NAME's recovery step (repeatable)")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	switch {
	case *all && *drill != "":
		return usageErr("give --all or --drill, not both")
	case *all:
		cfg.Drills = []string{"all"}
	case *drill != "":
		cfg.Drills = splitList(*drill)
	default:
		return usageErr("say which drills: --all or --drill NAME[,NAME]")
	}
	var err error
	if cfg.Commands.Fault, err = chaos.ParseCommands(faults); err != nil {
		return usageErr("--fault-cmd: %v", err)
	}
	if cfg.Commands.Recover, err = chaos.ParseCommands(recovers); err != nil {
		return usageErr("--recover-cmd: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	cfg.Progress = os.Stderr
	rep, err := chaos.Run(ctx, cfg)
	rep.Command = "keyplane chaos " + strings.Join(args, " ")
	if *report != "" && len(rep.Drills) > 0 {
		if werr := chaos.WriteReport(*report, rep); werr != nil {
			return werr
		}
		fmt.Fprintf(stdout, "report: %s/report.md\n", *report)
	}
	if err != nil {
		return err
	}
	if err := chaos.WriteSummary(stdout, rep); err != nil {
		return err
	}
	if !rep.Passed() {
		return fmt.Errorf("an invariant broke; see the report")
	}
	return nil
}
