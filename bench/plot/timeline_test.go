package plot_test

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/bench/plot"
)

// svgDoc is what a chart holds, read back with encoding/xml.
type svgDoc struct {
	root      xml.StartElement
	elements  map[string]int // by name, and by name.class
	texts     []string
	polylines map[string][][2]float64 // points by class
	numbers   []float64               // every numeric coordinate attribute
}

func parseSVG(t *testing.T, data []byte) svgDoc {
	t.Helper()
	doc := svgDoc{elements: map[string]int{}, polylines: map[string][][2]float64{}}
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	var inText bool
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if doc.root.Name.Local == "" {
				doc.root = tok.Copy()
			}
			doc.elements[tok.Name.Local]++
			for _, a := range tok.Attr {
				switch a.Name.Local {
				case "class":
					doc.elements[tok.Name.Local+"."+a.Value]++
				case "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height":
					v, err := strconv.ParseFloat(a.Value, 64)
					if err != nil {
						t.Errorf("<%s %s=%q>: %v", tok.Name.Local, a.Name.Local, a.Value, err)
					}
					doc.numbers = append(doc.numbers, v)
				}
			}
			if tok.Name.Local == "polyline" {
				var class, points string
				for _, a := range tok.Attr {
					switch a.Name.Local {
					case "class":
						class = a.Value
					case "points":
						points = a.Value
					}
				}
				for _, xy := range strings.Fields(points) {
					xs, ys, _ := strings.Cut(xy, ",")
					x, errX := strconv.ParseFloat(xs, 64)
					y, errY := strconv.ParseFloat(ys, 64)
					if errX != nil || errY != nil {
						t.Errorf("polyline %s: bad point %q", class, xy)
					}
					doc.polylines[class] = append(doc.polylines[class], [2]float64{x, y})
				}
			}
			if tok.Name.Local == "text" || tok.Name.Local == "title" {
				inText = true
				text.Reset()
			}
		case xml.CharData:
			if inText {
				text.Write(tok)
			}
		case xml.EndElement:
			if inText && (tok.Name.Local == "text" || tok.Name.Local == "title") {
				doc.texts = append(doc.texts, text.String())
				inText = false
			}
		}
	}
	return doc
}

func TestTimelineChart(t *testing.T) {
	t.Parallel()
	points := []plot.Point{{T: 1, Throughput: 3900, P99: 3}, {T: 2, Throughput: 4100, Errors: 3, P99: 3.2}}
	var buf bytes.Buffer
	if err := plot.Timeline(&buf, "validate (closed, c=16)", points, nil); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, buf.Bytes())
	tests := []struct {
		name      string
		got, want any
	}{
		{"root", doc.root.Name, xml.Name{Space: "http://www.w3.org/2000/svg", Local: "svg"}},
		{"title", slices.Contains(doc.texts, "validate (closed, c=16)"), true},
		{"throughput line", len(doc.polylines["throughput"]), 2},
		{"p99 line", len(doc.polylines["p99"]), 2},
		{"error bars", doc.elements["rect.errors"], 1},
		{"legend", slices.Contains(doc.texts, "throughput/s (left axis)") && slices.Contains(doc.texts, "p99 ms (right axis)"), true},
		{"no fault windows", doc.elements["rect.window"], 0},
		{"no script", doc.elements["script"], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	t.Run("size", func(t *testing.T) {
		t.Parallel()
		attrs := map[string]string{}
		for _, a := range doc.root.Attr {
			attrs[a.Name.Local] = a.Value
		}
		if attrs["width"] != "900" || attrs["height"] != "420" {
			t.Errorf("got %sx%s, want 900x420", attrs["width"], attrs["height"])
		}
	})
	t.Run("higher throughput is drawn higher", func(t *testing.T) {
		t.Parallel()
		line := doc.polylines["throughput"]
		if !(line[1][1] < line[0][1]) || !(line[1][0] > line[0][0]) {
			t.Errorf("got %v, want the second point up and to the right", line)
		}
	})
}

func TestTimeline(t *testing.T) {
	t.Parallel()
	many := make([]plot.Point, 60)
	for i := range many {
		many[i] = plot.Point{T: float64(i + 1), Throughput: float64(1000 + 10*i), P99: 2 + float64(i%7)/10}
	}
	many[30].Errors, many[31].Errors = 50, 5
	tests := []struct {
		name      string
		title     string
		points    []plot.Point
		windows   []plot.Window
		polyline  int // points in each line
		circles   int
		errorBars int
		bands     int
		texts     []string
	}{
		{name: "empty", title: "empty (closed, c=1)", texts: []string{"no data", "empty (closed, c=1)"}},
		{name: "single point", title: "one", points: []plot.Point{{T: 1, Throughput: 5, Errors: 1, P99: 2}}, circles: 2, errorBars: 1},
		{name: "all zero", title: "zero", points: []plot.Point{{T: 0}, {T: 1}, {T: 2}}, polyline: 3},
		{name: "same second twice", title: "same", points: []plot.Point{{T: 3, Throughput: 1}, {T: 3, Throughput: 2}}, polyline: 2},
		{name: "unsorted and not finite", title: "nan", points: []plot.Point{{T: 3, Throughput: 3, P99: math.NaN()}, {T: 1, Throughput: 1, P99: 1},
			{T: math.Inf(1), Throughput: 9}, {T: 2, Throughput: math.Inf(1), P99: 2}}, polyline: 2},
		{name: "fault windows", title: `drill <region-loss> & "rejoin"`, points: many,
			windows:  []plot.Window{{FromS: 20, ToS: 35, Label: "kill us-east <2 nodes>"}, {FromS: 50, ToS: 45, Label: "partition"}},
			polyline: 60, errorBars: 2, bands: 2,
			texts: []string{`drill <region-loss> & "rejoin"`, "kill us-east <2 nodes>", "partition", "fault window"}},
		{name: "windows without points", title: "w", windows: []plot.Window{{FromS: 0, ToS: 10, Label: "only"}}, bands: 1,
			texts: []string{"no data", "only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			if err := plot.Timeline(&buf, tt.title, tt.points, tt.windows); err != nil {
				t.Fatal(err)
			}
			for _, bad := range []string{"NaN", "Inf"} {
				if bytes.Contains(buf.Bytes(), []byte(bad)) {
					t.Fatalf("got %s in:\n%s", bad, buf.Bytes())
				}
			}
			doc := parseSVG(t, buf.Bytes())
			wantLines := 0
			if tt.polyline > 0 {
				wantLines = 2
			}
			if got := doc.elements["polyline"]; got != wantLines {
				t.Errorf("polylines: got %d, want %d", got, wantLines)
			}
			for class, pts := range doc.polylines {
				if len(pts) != tt.polyline {
					t.Errorf("%s line: got %d points, want %d", class, len(pts), tt.polyline)
				}
				if !slices.IsSortedFunc(pts, func(a, b [2]float64) int { return cmp.Compare(a[0], b[0]) }) {
					t.Errorf("%s line: got %v, want left to right", class, pts)
				}
			}
			if got := doc.elements["circle"]; got != tt.circles {
				t.Errorf("dots: got %d, want %d", got, tt.circles)
			}
			if got := doc.elements["rect.errors"]; got != tt.errorBars {
				t.Errorf("error bars: got %d, want %d", got, tt.errorBars)
			}
			if got := doc.elements["rect.window"]; got != tt.bands {
				t.Errorf("bands: got %d, want %d", got, tt.bands)
			}
			for _, want := range append([]string{tt.title}, tt.texts...) {
				if !slices.Contains(doc.texts, want) {
					t.Errorf("want text %q among %q", want, doc.texts)
				}
			}
			for _, v := range doc.numbers {
				if v < 0 || v > 900 {
					t.Errorf("got coordinate %v outside the canvas", v)
				}
			}
			for class, pts := range doc.polylines {
				for _, p := range pts {
					if p[0] < 70 || p[0] > 830 || p[1] < 60 || p[1] > 360 {
						t.Errorf("%s line: got point %v outside the plot", class, p)
					}
				}
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestTimelineWriteError(t *testing.T) {
	t.Parallel()
	err := plot.Timeline(failWriter{}, "t", []plot.Point{{T: 1, Throughput: 1}}, nil)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("got %v, want the writer's error", err)
	}
}
