package plot_test

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"strings"

	"github.com/keyplane/keyplane/bench/plot"
)

// A drill's three seconds, with a node killed in the middle: two lines, one error bar
// and one shaded window.
func ExampleTimeline() {
	points := []plot.Point{
		{T: 1, Throughput: 950, P99: 4.2},
		{T: 2, Throughput: 120, Errors: 40, P99: 310},
		{T: 3, Throughput: 980, P99: 4.0},
	}
	windows := []plot.Window{{FromS: 1.5, ToS: 2.5, Label: "kill us-east-0"}}
	var buf bytes.Buffer
	if err := plot.Timeline(&buf, "node-kill", points, windows); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	var chart struct {
		Title string `xml:"title"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &chart); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(chart.Title)
	fmt.Println("lines:", strings.Count(buf.String(), "<polyline"))
	fmt.Println("error bars:", strings.Count(buf.String(), `class="errors"`))
	fmt.Println("windows:", strings.Count(buf.String(), `class="window"`))
	// Output:
	// node-kill
	// lines: 2
	// error bars: 1
	// windows: 1
}
