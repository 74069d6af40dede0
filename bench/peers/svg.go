package peers

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"math"
)

// WriteSVG draws the run as one self-contained SVG: per system, a throughput bar
// (left panel) and p50 and p99 latency bars (right panel), each labelled with its
// figures.
func WriteSVG(w io.Writer, rep Report) error {
	const (
		width, rowH, top, left, panel, gap = 920.0, 46.0, 64.0, 120.0, 330.0, 60.0
	)
	height := top + rowH*float64(len(rep.Results)) + 40
	var maxT, maxL float64
	for _, r := range rep.Results {
		maxT = math.Max(maxT, r.Throughput)
		maxL = math.Max(maxL, r.Latency.P99)
	}
	maxT, maxL = math.Max(maxT, 1), math.Max(maxL, 0.001)
	colors := map[string]string{Floor: "#888888", Keyplane: "#1f77b4", OpenFGA: "#2ca02c", SpiceDB: "#d62728"}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">Fresh checks: keyplane, OpenFGA, SpiceDB and the raw-SQL floor (c=%d, %.0f s each)</text>`+"\n",
		rep.Concurrency, rep.DurationS)
	fmt.Fprintf(&b, `<text x="%.0f" y="48" font-weight="bold">throughput (checks/s)</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%.0f" y="48" font-weight="bold">latency (ms): p50 dark, p99 light</text>`+"\n", left+panel+gap)
	for k, r := range rep.Results {
		y := top + rowH*float64(k)
		col := colors[r.System]
		if col == "" {
			col = "#444444"
		}
		fmt.Fprintf(&b, `<text x="10" y="%.1f">%s</text>`+"\n", y+15, html.EscapeString(r.System))
		if r.Process != "" {
			fmt.Fprintf(&b, `<text x="10" y="%.1f" font-size="10" fill="#555555">RSS %.0f MiB</text>`+"\n", y+29, r.RSSPeakM)
		}
		tw := panel * 0.75 * r.Throughput / maxT
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="24" fill="%s"/>`+"\n", left, y+4, tw, col)
		label := fmt.Sprintf("%.0f/s", r.Throughput)
		if r.VsFloor > 0 && r.System != Floor {
			label += fmt.Sprintf(" (%.2f× floor)", r.VsFloor)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+tw+4, y+20, html.EscapeString(label))
		lx := left + panel + gap
		p99w := panel * 0.75 * r.Latency.P99 / maxL
		p50w := panel * 0.75 * r.Latency.P50 / maxL
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="24" fill="%s" fill-opacity="0.35"/>`+"\n", lx, y+4, p99w, col)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="24" fill="%s"/>`+"\n", lx, y+4, p50w, col)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">p50 %.2f · p99 %.2f</text>`+"\n", lx+p99w+4, y+20, r.Latency.P50, r.Latency.P99)
	}
	fmt.Fprintf(&b, `<text x="10" y="%.0f" fill="#555555">%s</text>`+"\n", height-14, html.EscapeString(footer(rep)))
	fmt.Fprintln(&b, "</svg>")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

func footer(rep Report) string {
	s := fmt.Sprintf("%d identities, %d roles, %d resources; %d CPUs; same PostgreSQL, one database each", rep.Shape.Identities,
		rep.Shape.Roles, rep.Shape.Resources, rep.Machine.CPUs)
	return s + "; RSS: the server process's peak"
}
