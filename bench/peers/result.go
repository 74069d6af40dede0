package peers

import (
	"time"

	"github.com/keyplane/keyplane/bench"
)

// Report is one run. Its JSON form is documented in bench/README.md ("Peers"); fields
// are only ever added.
type Report struct {
	Started     time.Time     `json:"started"`
	Machine     bench.Machine `json:"machine"`
	Command     string        `json:"command"`
	Concurrency int           `json:"concurrency"`
	DurationS   float64       `json:"duration_s"` // measured, per system (all rounds)
	WarmupS     float64       `json:"warmup_s"`
	// LoadAvg is the machine's 1-minute load average before the run started anything
	// (the machine's other work: above the CPU count, it competed with the run) and
	// when the measurements ended (the run's own load included).
	LoadAvg   [2]float64 `json:"load_avg"`
	Rounds    int        `json:"rounds"` // the systems took turns, Rounds slices of DurationS/Rounds each
	Shape     ShapeInfo  `json:"shape"`
	Mapping   string     `json:"mapping"`
	Agreement Agreement  `json:"agreement"`
	Builds    []Build    `json:"builds"`
	Results   []Result   `json:"results"`
}

// ShapeInfo is the data every system holds.
type ShapeInfo struct {
	Identities  int `json:"identities"`    // the identities checks are drawn from
	Others      int `json:"other_members"` // other group members (service accounts), in the data but not checked
	Roles       int `json:"roles"`
	Resources   int `json:"resources"`
	Memberships int `json:"memberships"` // member tuples
	Grants      int `json:"grants"`      // viewer tuples
}

// Agreement is the answer check run before the measurements: every system answered
// Pairs pairs like the shape does (else the run fails).
type Agreement struct {
	Pairs   int      `json:"pairs"`
	Allowed int      `json:"allowed"` // pairs the shape allows
	Systems []string `json:"systems"` // systems asked
}

// Result is one system's closed-loop run.
type Result struct {
	System      string           `json:"system"`
	Version     string           `json:"version"`
	API         string           `json:"api"`
	Consistency string           `json:"consistency"`
	Ops         int64            `json:"ops"`        // calls completed, failed ones included
	Throughput  float64          `json:"throughput"` // successful checks per second
	Latency     bench.Latency    `json:"latency_ms"`
	Errors      map[string]int64 `json:"errors"`
	FirstError  string           `json:"first_error,omitempty"`
	// AllowedFraction is the share of successful checks answered allowed; absent for
	// the floor, which answers nothing.
	AllowedFraction *float64 `json:"allowed_fraction,omitempty"`
	// VsFloor is the throughput over the floor's (0 without a floor in the run).
	VsFloor float64 `json:"vs_floor"`
	// Process is whose CPU and RSS are reported ("" for the floor, which runs in the
	// load generator).
	Process    string  `json:"process,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSStartM  float64 `json:"rss_start_mib"`
	RSSEndM    float64 `json:"rss_end_mib"`
	RSSPeakM   float64 `json:"rss_peak_mib"`
}
