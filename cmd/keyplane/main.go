// Command keyplane is the keyplane binary: region nodes, migrations, the local demo
// cluster and operator tools. Run `keyplane help` for the list of commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type runner func(ctx context.Context, args []string, stdout io.Writer) error

var commands = []struct {
	name, summary string
	run           runner
}{
	{"serve", "run a region node", runServe},
	{"migrate", "create or upgrade the database schema and record its regions", runMigrate},
	{"demo", "start a local cluster on a private PostgreSQL and print a tour", runDemo},
	{"keys", "rotate token-signing keys, make key-encryption keys", runKeys},
	{"audit", "export a tenant's audit events as JSON lines", runAudit},
	{"decisions", "list a tenant's logged permission decisions as JSON lines", runDecisions},
	{"governance", "report on a tenant's non-human identities: the inventory and its findings", runGovernance},
	{"campaign", "create, list and export access review campaigns", runCampaign},
	{"rehome", "move a large tenant to another region in batches, behind a fence", runRehome},
	{"bench", "load-test a local cluster next to raw-SQL baselines", runBench},
	{"chaos", "run failure drills under load and check the invariants", runChaos},
	{"canary", "watch revocation across regions from outside, with metrics", runCanary},
	{"front", "run a global front: one issuer URL over every region's healthy nodes", runFront},
	{"version", "print the version", runVersion},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "keyplane — a multi-region, geo-partitioned IAM data plane")
	fmt.Fprintln(w, "\nUsage: keyplane <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `keyplane <command> --help` for a command's flags. Every flag can also be set")
	fmt.Fprintln(w, "with an environment variable: --db is KEYPLANE_DB, --operator-secret-file is")
	fmt.Fprintln(w, "KEYPLANE_OPERATOR_SECRET_FILE, and so on.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := c.run(ctx, args[1:], stdout)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "keyplane %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "keyplane %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "keyplane: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage marks errors in how the command was called (exit status 2).
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}
