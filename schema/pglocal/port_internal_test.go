package pglocal

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// childEnv makes the test binary, run again, a process that takes one port and holds
// it until its standard input closes.
const childEnv = "KEYPLANE_PGLOCAL_PORT_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		port, err := FreePort()
		if err != nil {
			fmt.Fprintln(os.Stderr, "error", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stdout, port)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold it until the parent says
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A port FreePort gave one process is not given to another while the first lives
// (a killed node's ports stay its own until it restarts), and is free again once it
// exits.
func TestFreePortIsReservedAcrossProcesses(t *testing.T) {
	t.Parallel()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child printed %q", line)
	}
	portsMu.Lock()
	taken := reserve(port)
	portsMu.Unlock()
	if taken {
		t.Fatalf("port %d reserved here while another process holds it", port)
	}
	_ = stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	portsMu.Lock()
	delete(portsUsed, port)
	taken = reserve(port)
	portsMu.Unlock()
	if !taken {
		t.Fatalf("port %d still held after its process exited", port)
	}
}
