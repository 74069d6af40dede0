package main

import (
	"context"
	"io"
	"strings"

	"github.com/keyplane/keyplane/deploy/demo"
)

func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := demoConfig(args, stdout)
	if err != nil {
		return err
	}
	return demo.Run(ctx, cfg)
}

// demoConfig parses the demo command's flags.
func demoConfig(args []string, stdout io.Writer) (demo.Config, error) {
	c := newCommand(stdout, "demo", "Start a local multi-region keyplane cluster on an automatically started private PostgreSQL, seed one tenant homed in each region, show a token issued, checked and revoked across regions, and run until Ctrl-C.", `
Regions talk through latency proxies (toxiproxy) that simulate a WAN: round trips
us-east↔eu-west 70 ms, us-east↔ap-south 200 ms, eu-west↔ap-south 150 ms, 1 ms inside a
region; clients placed in a region see the same latencies to the other regions.

Everything the demo starts (PostgreSQL, nodes, proxies, temporary directories) is
stopped and removed when it exits. PostgreSQL's server binaries must be installed (make
demo installs them).`)
	cfg := demo.DefaultConfig()
	fs := c.flags
	regions := fs.String("regions", strings.Join(cfg.Regions, ","), "comma-separated regions to run, primary first")
	fs.IntVar(&cfg.NodesPerRegion, "nodes-per-region", cfg.NodesPerRegion, "keyplane serve processes per region")
	fs.StringVar(&cfg.StateFile, "state-file", "", "write the cluster's URLs and credentials to this JSON file")
	if err := c.parse(args); err != nil {
		return demo.Config{}, parseErr(err)
	}
	cfg.Regions, cfg.Out = splitList(*regions), stdout
	if err := cfg.Validate(); err != nil {
		return demo.Config{}, usageErr("%v", err)
	}
	return cfg, nil
}
