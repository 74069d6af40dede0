package plot

import (
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Point is one second of a timeline. T is seconds on the timeline's clock; Throughput
// is calls per second, Errors failed calls in that second and P99 the 99th percentile
// latency in milliseconds.
type Point struct {
	T          float64
	Throughput float64
	Errors     int64
	P99        float64
}

// Window is a span of a timeline to shade, such as a fault a chaos drill injected.
// FromS and ToS are seconds on the timeline's clock (Point.T).
type Window struct {
	FromS, ToS float64
	Label      string
}

// The chart's geometry, in SVG user units.
const (
	svgWidth  = 900
	svgHeight = 420
	plotLeft  = 70
	plotRight = svgWidth - 70
	plotTop   = 60
	plotBot   = svgHeight - 60
	plotW     = plotRight - plotLeft
	plotH     = plotBot - plotTop
	// errStrip is the share of the plot's height the tallest error bar takes.
	errStrip = 0.2
	yTicks   = 4

	colorThroughput = "#1f77b4"
	colorP99        = "#ff7f0e"
	colorErrors     = "#d62728"
	colorWindow     = "#7f7f7f"
)

// Timeline writes a self-contained SVG chart (no script, no external fonts), 900 by
// 420 units, titled title: points' throughput per second as a line on the left axis,
// p99 in milliseconds as a line on the right axis, errors per second as red bars
// along the bottom, and each window as a shaded, labelled band. Points need not be sorted; non-finite values are
// left out. An empty timeline draws the axes and "no data".
func Timeline(w io.Writer, title string, points []Point, windows []Window) error {
	pts := slices.Clone(points)
	pts = slices.DeleteFunc(pts, func(p Point) bool { return !finite(p.T) })
	slices.SortStableFunc(pts, func(a, b Point) int { return cmp.Compare(a.T, b.T) })
	var wins []Window
	for _, win := range windows {
		if !finite(win.FromS) || !finite(win.ToS) {
			continue
		}
		if win.ToS < win.FromS {
			win.FromS, win.ToS = win.ToS, win.FromS
		}
		wins = append(wins, win)
	}

	// The x domain covers every point and every window.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		xmin, xmax = min(xmin, p.T), max(xmax, p.T)
	}
	for _, win := range wins {
		xmin, xmax = min(xmin, win.FromS), max(xmax, win.ToS)
	}
	switch {
	case xmin > xmax: // nothing at all
		xmin, xmax = 0, 1
	case xmin == xmax:
		xmin, xmax = xmin-0.5, xmax+0.5
	}
	var maxThr, maxP99 float64
	var maxErr int64
	for _, p := range pts {
		if finite(p.Throughput) {
			maxThr = max(maxThr, p.Throughput)
		}
		if finite(p.P99) {
			maxP99 = max(maxP99, p.P99)
		}
		maxErr = max(maxErr, p.Errors)
	}
	thrTop, p99Top := niceTop(maxThr), niceTop(maxP99)
	thrStep, p99Step := thrTop/yTicks, p99Top/yTicks

	x := func(t float64) float64 { return plotLeft + (t-xmin)/(xmax-xmin)*plotW }
	y := func(v, top float64) float64 { return plotBot - clamp(v/top, 0, 1)*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(title))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, svgHeight)
	fmt.Fprintf(&b, `<text x="%d" y="24" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n", svgWidth/2, esc(title))

	// Fault windows, under everything else.
	for i, win := range wins {
		x0, x1 := x(win.FromS), x(win.ToS)
		fmt.Fprintf(&b, `<rect class="window" x="%s" y="%d" width="%s" height="%d" fill="%s" fill-opacity="0.18"/>`+"\n",
			f1(x0), plotTop, f1(max(x1-x0, 1)), plotH, colorWindow)
		if win.Label != "" {
			fmt.Fprintf(&b, `<text x="%s" y="%d" fill="#404040">%s</text>`+"\n", f1(x0+3), plotTop+12+12*(i%3), esc(win.Label))
		}
	}

	// Grid and y axes: the same number of ticks on both sides, so the grid fits both.
	for i := 0; i <= yTicks; i++ {
		yy := plotBot - float64(i)/yTicks*plotH
		fmt.Fprintf(&b, `<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#e0e0e0"/>`+"\n", plotLeft, f1(yy), plotRight, f1(yy))
		fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="end" fill="%s">%s</text>`+"\n",
			plotLeft-6, f1(yy+4), colorThroughput, tickLabel(float64(i)*thrStep, thrStep))
		fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="start" fill="%s">%s</text>`+"\n",
			plotRight+6, f1(yy+4), colorP99, tickLabel(float64(i)*p99Step, p99Step))
	}
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle" fill="%s">throughput/s</text>`+"\n",
		plotTop+plotH/2, colorThroughput)
	fmt.Fprintf(&b, `<text transform="translate(%d %d) rotate(90)" text-anchor="middle" fill="%s">p99 ms</text>`+"\n",
		svgWidth-18, plotTop+plotH/2, colorP99)

	// x axis.
	xStep := niceCeil((xmax - xmin) / 6)
	first := math.Ceil(xmin/xStep-1e-9) * xStep
	for i := 0; i <= 12; i++ { // niceCeil keeps it to 7 ticks at most
		t := first + float64(i)*xStep
		if t > xmax+xStep*1e-9 {
			break
		}
		xx := x(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#000000"/>`+"\n", f1(xx), plotBot, f1(xx), plotBot+5)
		fmt.Fprintf(&b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f1(xx), plotBot+18, tickLabel(t, xStep))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">seconds</text>`+"\n", plotLeft+plotW/2, plotBot+38)

	// Error bars along the bottom.
	if maxErr > 0 {
		bw := clamp(0.8*plotW/float64(len(pts)), 1, 40)
		for _, p := range pts {
			if p.Errors <= 0 {
				continue
			}
			h := float64(p.Errors) / float64(maxErr) * errStrip * plotH
			x0 := clamp(x(p.T)-bw/2, plotLeft, plotRight-bw)
			fmt.Fprintf(&b, `<rect class="errors" x="%s" y="%s" width="%s" height="%s" fill="%s"/>`+"\n",
				f1(x0), f1(plotBot-h), f1(bw), f1(h), colorErrors)
		}
	}

	// The two lines; a lone point is a dot.
	line := func(class, color string, value func(Point) float64, top float64) {
		var coords []string
		for _, p := range pts {
			if v := value(p); finite(v) {
				coords = append(coords, f1(x(p.T))+","+f1(y(v, top)))
			}
		}
		switch len(coords) {
		case 0:
		case 1:
			xy := strings.SplitN(coords[0], ",", 2)
			fmt.Fprintf(&b, `<circle class="%s" cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", class, xy[0], xy[1], color)
		default:
			fmt.Fprintf(&b, `<polyline class="%s" points="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-linejoin="round"/>`+"\n",
				class, strings.Join(coords, " "), color)
		}
	}
	line("throughput", colorThroughput, func(p Point) float64 { return p.Throughput }, thrTop)
	line("p99", colorP99, func(p Point) float64 { return p.P99 }, p99Top)

	if len(pts) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#808080" font-size="14">no data</text>`+"\n",
			plotLeft+plotW/2, plotTop+plotH/2)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#000000"/>`+"\n", plotLeft, plotTop, plotW, plotH)

	// Legend, left to right under the title: a line or a box, then the label.
	lx := float64(plotLeft)
	item := func(isLine bool, color, label string) {
		if isLine {
			fmt.Fprintf(&b, `<line x1="%s" y1="42" x2="%s" y2="42" stroke="%s" stroke-width="2"/>`+"\n", f1(lx), f1(lx+16), color)
		} else {
			fmt.Fprintf(&b, `<rect x="%s" y="37" width="16" height="10" fill="%s" fill-opacity="0.6"/>`+"\n", f1(lx), color)
		}
		fmt.Fprintf(&b, `<text x="%s" y="46">%s</text>`+"\n", f1(lx+22), esc(label))
		lx += 22 + 6.5*float64(len([]rune(label))) + 18 // about 6.5 units a character at 11
	}
	item(true, colorThroughput, "throughput/s (left axis)")
	item(true, colorP99, "p99 ms (right axis)")
	item(false, colorErrors, fmt.Sprintf("errors/s (tallest bar %d)", maxErr))
	if len(wins) > 0 {
		item(false, colorWindow, "fault window")
	}
	b.WriteString("</svg>\n")

	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten; 1 when v is not positive.
func niceCeil(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow10(int(math.Floor(math.Log10(v))))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// niceTop rounds v up to the top of a y axis whose quarters are round numbers
// (5000 for 4300: ticks every 1250); 1 when v is not positive.
func niceTop(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow10(int(math.Floor(math.Log10(v))))
	for _, m := range []float64{1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// tickLabel formats a tick with as many decimals as its step needs (1250, 12.5, 0.25).
func tickLabel(v, step float64) string {
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	for decimals < 6 {
		scaled := step * math.Pow10(decimals)
		if math.Abs(scaled-math.Round(scaled)) < 1e-6*scaled {
			break
		}
		decimals++
	}
	if math.Abs(v) < step*1e-9 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func clamp(v, lo, hi float64) float64 { return max(lo, min(v, hi)) }
