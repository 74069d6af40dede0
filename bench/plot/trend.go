package plot

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Series is one line of a trend chart: a value per day (or any instant).
type Series struct {
	Label  string
	Points []TrendPoint
}

// TrendPoint is one value of a series at T. Non-finite values (a ratio with nothing to
// divide by) break the line instead of drawing 0.
type TrendPoint struct {
	T time.Time
	V float64
}

var trendColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"}

// Trend writes a self-contained SVG chart (no script, no external fonts), 900 by 420
// units, titled title: each series as a line over dates, on one y axis labelled
// unit, from 0 up (or 0–100 when percent is true and every value is a ratio in
// [0, 1], which it draws as percentages). An empty chart draws the axes and "no
// data".
func Trend(w io.Writer, title, unit string, percent bool, series []Series) error {
	tmin, tmax := math.Inf(1), math.Inf(-1)
	vmax := 0.0
	n := 0
	for _, s := range series {
		for _, p := range s.Points {
			if !finite(p.V) {
				continue
			}
			t := float64(p.T.Unix())
			tmin, tmax = min(tmin, t), max(tmax, t)
			vmax = max(vmax, p.V)
			n++
		}
	}
	switch {
	case n == 0:
		now := float64(time.Now().Unix())
		tmin, tmax = now-86400, now
	case tmin == tmax:
		tmin, tmax = tmin-86400, tmax+86400
	}
	scale := 1.0
	top := niceTop(vmax)
	if percent {
		scale, top = 100, 100
	}
	step := top / yTicks
	x := func(t float64) float64 { return plotLeft + (t-tmin)/(tmax-tmin)*plotW }
	y := func(v float64) float64 { return plotBot - clamp(v*scale/top, 0, 1)*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(title))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, svgHeight)
	fmt.Fprintf(&b, `<text x="%d" y="24" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n", svgWidth/2, esc(title))
	for i := 0; i <= yTicks; i++ {
		yy := plotBot - float64(i)/yTicks*plotH
		fmt.Fprintf(&b, `<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#e0e0e0"/>`+"\n", plotLeft, f1(yy), plotRight, f1(yy))
		fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="end">%s</text>`+"\n", plotLeft-6, f1(yy+4), tickLabel(float64(i)*step, step))
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", plotTop+plotH/2, esc(unit))

	// x axis: a date every whole number of days, at most 7 of them.
	stepDays := max(1, math.Ceil((tmax-tmin)/86400/6))
	for t := tmin; t <= tmax+1; t += stepDays * 86400 {
		xx := x(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#000000"/>`+"\n", f1(xx), plotBot, f1(xx), plotBot+5)
		fmt.Fprintf(&b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f1(xx), plotBot+18,
			time.Unix(int64(t), 0).UTC().Format("2006-01-02"))
	}

	lx := float64(plotLeft)
	for i, s := range series {
		color := trendColors[i%len(trendColors)]
		var seg []string
		flush := func() {
			switch len(seg) {
			case 0:
			case 1:
				xy := strings.SplitN(seg[0], ",", 2)
				fmt.Fprintf(&b, `<circle class="series-%d" cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", i, xy[0], xy[1], color)
			default:
				fmt.Fprintf(&b, `<polyline class="series-%d" points="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-linejoin="round"/>`+"\n",
					i, strings.Join(seg, " "), color)
			}
			seg = seg[:0]
		}
		for _, p := range s.Points {
			if !finite(p.V) {
				flush()
				continue
			}
			seg = append(seg, f1(x(float64(p.T.Unix())))+","+f1(y(p.V)))
		}
		flush()
		fmt.Fprintf(&b, `<line x1="%s" y1="42" x2="%s" y2="42" stroke="%s" stroke-width="2"/>`+"\n", f1(lx), f1(lx+16), color)
		fmt.Fprintf(&b, `<text x="%s" y="46">%s</text>`+"\n", f1(lx+22), esc(s.Label))
		lx += 22 + 6.5*float64(len([]rune(s.Label))) + 18
	}
	if n == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#808080" font-size="14">no data</text>`+"\n",
			plotLeft+plotW/2, plotTop+plotH/2)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#000000"/>`+"\n", plotLeft, plotTop, plotW, plotH)
	b.WriteString("</svg>\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}
