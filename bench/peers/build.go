package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The peers and their pinned versions.
const (
	OpenFGAVersion = "v1.22.1"
	SpiceDBVersion = "v1.56.2"
)

// Build is how a peer's binary was obtained.
type Build struct {
	Name    string  `json:"name"`
	Version string  `json:"version"`
	Module  string  `json:"module"`
	Path    string  `json:"path"`
	Seconds float64 `json:"build_seconds"` // this run's build, or the cached binary's when its record is there (else 0)
	Cached  bool    `json:"cached"`        // built by an earlier run
}

// binary returns the path of name's binary under binDir, building it from the Go
// module proxy first when it is not there (`go install` for OpenFGA; SpiceDB's module
// has a replace directive, which `go install` refuses, so its downloaded source is
// copied to a temporary directory and built there as the main module).
func binary(ctx context.Context, binDir, name string, log io.Writer) (Build, error) {
	b := Build{Name: name}
	switch name {
	case OpenFGA:
		b.Version, b.Module = OpenFGAVersion, "github.com/openfga/openfga"
	case SpiceDB:
		b.Version, b.Module = SpiceDBVersion, "github.com/authzed/spicedb"
	default:
		return b, fmt.Errorf("no build for %q", name)
	}
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return b, fmt.Errorf("bin-dir: %w", err)
	}
	b.Path = filepath.Join(abs, name+"-"+b.Version)
	if fi, err := os.Stat(b.Path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		b.Cached = true
		if rec, err := os.ReadFile(b.Path + ".json"); err == nil {
			var r struct{ Seconds float64 }
			if json.Unmarshal(rec, &r) == nil {
				b.Seconds = r.Seconds
			}
		}
		return b, nil
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return b, fmt.Errorf("build %s %s: bin-dir: %w", name, b.Version, err)
	}
	tmp, err := os.MkdirTemp("", "keyplane-peers-build-")
	if err != nil {
		return b, fmt.Errorf("build %s %s: %w", name, b.Version, err)
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(log, "building %s %s from the Go module proxy (several minutes; cached in %s)…\n", name, b.Version, abs)
	start := time.Now()
	out := filepath.Join(tmp, "out")
	switch name {
	case OpenFGA:
		if _, err := goCmd(ctx, tmp, []string{"GOBIN=" + tmp}, "install", b.Module+"/cmd/openfga@"+b.Version); err != nil {
			return b, fmt.Errorf("build %s %s: go install: %w", name, b.Version, err)
		}
		out = filepath.Join(tmp, "openfga")
	case SpiceDB:
		js, err := goCmd(ctx, tmp, nil, "mod", "download", "-json", b.Module+"@"+b.Version)
		if err != nil {
			return b, fmt.Errorf("build %s %s: go mod download: %w", name, b.Version, err)
		}
		var mod struct{ Dir, Error string }
		if err := json.Unmarshal(js, &mod); err != nil {
			return b, fmt.Errorf("build %s %s: go mod download: %w", name, b.Version, err)
		}
		if mod.Dir == "" {
			return b, fmt.Errorf("build %s %s: go mod download: no source directory (%s)", name, b.Version, mod.Error)
		}
		src := filepath.Join(tmp, "src")
		if err := os.CopyFS(src, os.DirFS(mod.Dir)); err != nil {
			return b, fmt.Errorf("build %s %s: copy the module source: %w", name, b.Version, err)
		}
		if _, err := goCmd(ctx, src, []string{"GOFLAGS=-mod=mod"}, "build", "-o", out, "./cmd/spicedb"); err != nil {
			return b, fmt.Errorf("build %s %s: go build ./cmd/spicedb: %w", name, b.Version, err)
		}
	}
	if err := os.Rename(out, b.Path); err != nil {
		return b, fmt.Errorf("build %s %s: install into bin-dir: %w", name, b.Version, err)
	}
	b.Seconds = time.Since(start).Seconds()
	// How long the build took is kept next to the binary, for the reports of the runs
	// that reuse it.
	if rec, err := json.Marshal(map[string]any{"seconds": b.Seconds, "built": time.Now().UTC()}); err == nil {
		_ = os.WriteFile(b.Path+".json", rec, 0o644)
	}
	fmt.Fprintf(log, "built %s %s in %.0fs\n", name, b.Version, b.Seconds)
	return b, nil
}

// goCmd runs the go command in dir outside any workspace and returns its stdout; its
// error carries the end of stderr.
func goCmd(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(stderr.String(), 20))
	}
	return stdout.Bytes(), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
