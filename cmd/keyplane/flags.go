package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand of the keyplane binary.
type command struct {
	name    string
	summary string
	usage   string // extra text after the synopsis
	flags   *flag.FlagSet
	// fromArgs names the flags given on the command line (not from the environment),
	// once parsed.
	fromArgs map[string]bool
}

// newCommand makes a subcommand whose --help and flag errors go to out.
func newCommand(out io.Writer, name, summary, usage string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	c := &command{name: name, summary: summary, usage: usage, flags: fs}
	fs.Usage = func() { c.printUsage(fs.Output()) }
	return c
}

// envName is the environment variable that sets flag name: --db → KEYPLANE_DB.
func envName(name string) string {
	return "KEYPLANE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: keyplane %s [flags]\n\n%s\n", c.name, c.summary)
	if c.usage != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.usage))
	}
	fmt.Fprintf(w, "\nFlags (each can also be set with the environment variable shown):\n")
	c.flags.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s  [%s]\n      %s%s\n", f.Name, envName(f.Name), f.Usage, def)
	})
}

// parse parses args, then fills every flag not given on the command line from its
// KEYPLANE_* environment variable.
func (c *command) parse(args []string) error {
	if err := c.flags.Parse(args); err != nil {
		return err
	}
	if c.flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see keyplane %s --help)", c.flags.Arg(0), c.name)
	}
	set := map[string]bool{}
	c.flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.fromArgs = set
	var err error
	c.flags.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !set[f.Name] && err == nil {
			if e := c.flags.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ";") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// onlyRun answers a command whose one subcommand is run when args do not start with
// it: the usage line, and a usage error unless help was asked for.
func onlyRun(stdout io.Writer, args []string, usage string) error {
	fmt.Fprintln(stdout, usage)
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		return nil
	}
	return usageErr("want a subcommand: run")
}
