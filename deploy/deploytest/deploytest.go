// Package deploytest runs a test binary whose tests start real keyplane clusters with
// the keyplane binary built once: by make test for every package (KEYPLANE_TEST_BINARY),
// else by Run for this test binary.
package deploytest

import (
	"fmt"
	"os"
	"testing"

	"github.com/keyplane/keyplane/deploy"
)

// BinaryEnv names a prebuilt keyplane binary for the nodes. make test builds it once,
// without -race, for every package that starts clusters (make test-race-nodes builds
// one with -race; docs/decisions/0020-race-detector-budget.md).
const BinaryEnv = "KEYPLANE_TEST_BINARY"

// Binary is the keyplane executable for cluster nodes; pass it as deploy.Config.Binary.
var Binary string

// Run finds or builds the keyplane binary, runs the tests, and returns the exit code.
// The binary is BinaryEnv's when set (it must exist); otherwise Run builds one into a
// temporary directory, with -race when the tests themselves run with -race, so a data
// race in a node fails the tests that provoke it. Nodes run with GORACE=halt_on_error=1:
// a race stops the node, and the test that depends on it fails. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }
func Run(m *testing.M) int {
	if err := os.Setenv("GORACE", "halt_on_error=1"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if Binary = os.Getenv(BinaryEnv); Binary != "" {
		if _, err := os.Stat(Binary); err != nil {
			fmt.Fprintf(os.Stderr, "%s=%s: %v (make test builds it; unset it to build one here)\n", BinaryEnv, Binary, err)
			return 1
		}
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "keyplane-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	if Binary, err = deploy.Build(dir, flags...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
