package bench

import (
	"os"
	"runtime"
	"strings"

	"github.com/prometheus/procfs"
)

// describeMachine describes where the bench runs: CPUs, memory, OS and versions.
func describeMachine(version string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Version: version,
		Note: "load generator, keyplane nodes and PostgreSQL share the machine"}
	m.CPUModel, m.MemoryGiB = readMachine(procFS())
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`) + " " + m.OS
			}
		}
	}
	return m
}

// readMachine reads the CPU model and the total memory in GiB from fs; each is zero
// when it cannot be read.
func readMachine(fs *procfs.FS) (model string, memGiB float64) {
	if fs == nil {
		return "", 0
	}
	if cpus, err := fs.CPUInfo(); err == nil && len(cpus) > 0 {
		model = strings.TrimSpace(cpus[0].ModelName)
	}
	if mem, err := fs.Meminfo(); err == nil && mem.MemTotalBytes != nil {
		memGiB = float64(*mem.MemTotalBytes) / (1 << 30)
	}
	return model, memGiB
}

// procFS is /proc, or nil on a system without one.
func procFS() *procfs.FS {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil
	}
	return &fs
}
