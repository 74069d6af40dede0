// Package deploytest runs a test binary whose tests start real keyplane clusters: it
// builds cmd/keyplane once for the whole binary.
package deploytest

import (
	"fmt"
	"os"
	"testing"

	"github.com/keyplane/keyplane/deploy"
)

// Binary is the keyplane executable Run built; pass it as deploy.Config.Binary.
var Binary string

// Run builds the keyplane binary into a temporary directory, runs the tests, removes
// the directory and returns the exit code. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }
func Run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "keyplane-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if Binary, err = deploy.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
