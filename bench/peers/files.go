package peers

import (
	"io"

	"github.com/keyplane/keyplane/bench"
)

// Files names where a run's report is written; an empty name skips that output.
type Files struct {
	JSON     string // WriteJSON
	Markdown string // WriteMarkdown
	SVG      string // WriteSVG
}

// WriteFiles writes rep to the files named, creating missing directories.
func WriteFiles(rep Report, f Files) error {
	for _, out := range []struct {
		path  string
		write func(io.Writer, Report) error
	}{{f.JSON, WriteJSON}, {f.Markdown, WriteMarkdown}, {f.SVG, WriteSVG}} {
		if out.path == "" {
			continue
		}
		if err := bench.WriteFile(out.path, func(w io.Writer) error { return out.write(w, rep) }); err != nil {
			return err
		}
	}
	return nil
}
