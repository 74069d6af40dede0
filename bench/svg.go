package bench

import (
	"io"

	"github.com/keyplane/keyplane/bench/plot"
)

// WriteSVG writes r's timeline as a self-contained SVG chart titled
// "<workload> (<mode>, c=<concurrency>)", drawn by plot.Timeline.
func WriteSVG(w io.Writer, r Result) error {
	pts := make([]plot.Point, len(r.Timeline))
	for i, p := range r.Timeline {
		pts[i] = plot.Point(p) // the same fields; only bench's JSON tags differ
	}
	return plot.Timeline(w, resultTitle(r), pts, nil)
}
