package bench

import (
	"runtime"
	"testing"

	"github.com/prometheus/procfs"
)

// fixtureProc is a hand-made /proc: two CPUs, 7.75 GiB of memory and process 4242.
func fixtureProc(t *testing.T) *procfs.FS {
	t.Helper()
	fs, err := procfs.NewFS("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	return &fs
}

func TestReadMachine(t *testing.T) {
	t.Parallel()
	model, mem := readMachine(fixtureProc(t))
	if mem != 7.75 {
		t.Errorf("memory %v GiB, want 7.75", mem)
	}
	// procfs reads "model name" on x86 only; other architectures' cpuinfo has none.
	if x86 := runtime.GOARCH == "amd64" || runtime.GOARCH == "386"; x86 && model != "AMD EPYC 7B13" {
		t.Errorf("model %q, want AMD EPYC 7B13", model)
	}
	if model, mem := readMachine(nil); model != "" || mem != 0 {
		t.Errorf("without /proc: %q, %v; want nothing", model, mem)
	}
}

func TestDescribeMachine(t *testing.T) {
	t.Parallel()
	if procFS() == nil {
		t.Skip("no /proc")
	}
	m := describeMachine("v1")
	if m.CPUs != runtime.NumCPU() || m.MemoryGiB <= 0 || m.Version != "v1" || m.Go != runtime.Version() {
		t.Errorf("describeMachine: %+v", m)
	}
}
