package plot

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"
)

// TestTrend: the chart is well-formed XML, draws one polyline per unbroken run of a
// series (a NaN breaks it), a lone point as a dot, percent axes up to 100, and "no
// data" when there is nothing.
func TestTrend(t *testing.T) {
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	pt := func(d int, v float64) TrendPoint { return TrendPoint{T: day.AddDate(0, 0, d), V: v} }
	var b strings.Builder
	err := Trend(&b, "Least privilege & MFA", "%", true, []Series{
		{Label: "least privilege", Points: []TrendPoint{pt(0, 0.5), pt(1, 0.6), pt(2, math.NaN()), pt(3, 0.7), pt(4, 0.8)}},
		{Label: "MFA <humans>", Points: []TrendPoint{pt(2, 1)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		if _, err := dec.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed XML: %v\n%s", err, svg)
			}
			break
		}
	}
	for what, want := range map[string]int{
		`<polyline class="series-0"`: 2, `<circle class="series-1"`: 1, `>100</text>`: 1,
		`MFA &lt;humans&gt;`: 1, `>2026-11-01</text>`: 1, `>2026-11-05</text>`: 1, "no data": 0,
	} {
		if got := strings.Count(svg, what); got != want {
			t.Errorf("%q appears %d times, want %d", what, got, want)
		}
	}
	b.Reset()
	if err := Trend(&b, "empty", "count", false, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "no data") {
		t.Errorf("an empty chart does not say no data")
	}
}
