package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Files names where a run's report is written; an empty name skips that output.
type Files struct {
	JSON     string // the report as JSON (WriteJSON)
	Markdown string // the Markdown report (WriteMarkdown)
	SVGDir   string // one latency/throughput chart per workload, <workload>.svg (WriteSVG)
}

// WriteFiles writes rep to the files named, creating missing directories.
func WriteFiles(rep Report, f Files) error {
	if f.JSON != "" {
		if err := writeFile(f.JSON, func(w io.Writer) error { return WriteJSON(w, rep) }); err != nil {
			return err
		}
	}
	if f.Markdown != "" {
		if err := writeFile(f.Markdown, func(w io.Writer) error { return WriteMarkdown(w, rep) }); err != nil {
			return err
		}
	}
	if f.SVGDir != "" {
		for _, r := range rep.Results {
			if err := writeFile(filepath.Join(f.SVGDir, r.Workload+".svg"), func(w io.Writer) error { return WriteSVG(w, r) }); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
