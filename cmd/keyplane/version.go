package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// Version is set at build time with -ldflags "-X main.Version=v1.2.3".
var Version = ""

var errHelp = flag.ErrHelp

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func runVersion(_ context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "version", "Print the version.", "")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	fmt.Fprintf(stdout, "keyplane %s\n", version())
	return nil
}
