package bench

import "time"

// Result is one run of one workload. Its JSON form is the stable, documented schema of
// `keyplane bench run --json` (bench/README.md); fields are only ever added.
type Result struct {
	Workload    string  `json:"workload"`
	Mode        string  `json:"mode"` // closed, open or ladder
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate"` // open loop: target arrivals per second; 0 for closed loop
	DurationS   float64 `json:"duration_s"`
	Ops         int64   `json:"ops"`        // every completed operation, failed ones included
	Throughput  float64 `json:"throughput"` // successful operations per second
	Latency     Latency `json:"latency_ms"`
	// Errors counts failed operations by Connect code (or "transport").
	Errors map[string]int64 `json:"errors"`
	// Baseline is the workload's floor: the one point read any answer to it must make
	// (the token's session row, or the principal's identity row), done with pgx
	// against the same database at the same concurrency, in the same run; nil when
	// the workload has none.
	Baseline *Baseline `json:"baseline,omitempty"`
	// Ratio is keyplane's throughput over the floor's; 0 without a baseline.
	Ratio float64 `json:"ratio"`
	// P99DiffMS is keyplane's p99 minus the floor's, in milliseconds.
	P99DiffMS float64 `json:"p99_diff_ms"`
	// BindingsBaseline is a second, labelled baseline of check and check-reload: the
	// read of all the principal's bindings (what a check without a policy cache would
	// read), in the same run; nil for other workloads. BindingsRatio is keyplane's
	// throughput over it.
	BindingsBaseline *Baseline `json:"bindings_baseline,omitempty"`
	BindingsRatio    float64   `json:"bindings_ratio,omitempty"`
	// Routes splits latency by how requests were served (multi-region mode).
	Routes map[string]Route `json:"routes,omitempty"`
	// ZeroLatency is the short extra pass of multi-region mode with every simulated
	// round trip set to 0, at the main run's throughput: the same routes without the
	// WAN, against which forwarded overhead is measured.
	ZeroLatency *ZeroLatency `json:"zero_latency,omitempty"`
	// ProxyOvershootMS is what a forward's two simulated links (a client's to its
	// region, and one to another region) added beyond their configured round trips
	// during the measured run (multi-region closed loop only): a trivial endpoint called
	// through two chained latency proxies at those round trips and through two at 0,
	// p50 against p50 (bench/calibrate.go).
	ProxyOvershootMS *float64 `json:"proxy_overshoot_ms,omitempty"`
	// Ladder holds the steps of a rate ladder, and MaxRate the highest rate whose p99
	// stayed under the threshold.
	Ladder      []Step  `json:"ladder,omitempty"`
	MaxRate     float64 `json:"max_sustainable_rate,omitempty"`
	P99TargetMS float64 `json:"p99_target_ms,omitempty"` // the ladder's threshold
	// WarmupS is the unmeasured load before the run; ReloadEvery the checks per policy
	// write of check-reload.
	WarmupS     float64 `json:"warmup_s"`
	ReloadEvery int     `json:"reload_every,omitempty"`
	// Nodes are the node processes' resource use over the run.
	Nodes []NodeUsage `json:"nodes,omitempty"`
	// Reloads is the number of policy snapshot reloads across all nodes during the run
	// and Writes the policy writes the workload made (check-reload).
	Reloads int64 `json:"policy_reloads,omitempty"`
	Writes  int64 `json:"policy_writes,omitempty"`
	// Timeline has one point per second: throughput, errors and p99 of that second.
	Timeline []Point `json:"timeline"`
	// Targets are the targets as checked on this run.
	Targets []Target `json:"targets,omitempty"`
	// NoisyNeighbour is the noisy-neighbour workload's passes (noisy.go).
	NoisyNeighbour *NoisyNeighbour `json:"noisy_neighbour,omitempty"`
}

// Latency percentiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// Baseline is the raw-SQL measurement next to a workload.
type Baseline struct {
	Query      string  `json:"query"`
	Ops        int64   `json:"ops"`
	Throughput float64 `json:"throughput"`
	Latency    Latency `json:"latency_ms"`
}

// Route is the latency of requests served one way (local, forwarded, degraded), next
// to the configured round trip they had to pay.
type Route struct {
	Ops     int64   `json:"ops"`
	Latency Latency `json:"latency_ms"`
	// RTTms is the mean configured round trip of these requests (client to its region,
	// plus region to home region when forwarded).
	RTTms float64 `json:"rtt_ms"`
	// ZeroLatencyP50 is the p50 of the same route in the zero-latency pass, and
	// OverheadMS this route's p50 − RTTms − ZeroLatencyP50: what the WAN costs beyond
	// its configured round trip (the latency simulator's timer overshoot, and any
	// extra round trip keyplane makes). Both are set, or both absent: forwarded routes
	// of multi-region mode only.
	ZeroLatencyP50 *float64 `json:"zero_latency_p50_ms,omitempty"`
	OverheadMS     *float64 `json:"overhead_ms,omitempty"`
	// NetOverheadMS is OverheadMS less what the two simulated links a forward crosses
	// added beyond their delay (Result.ProxyOvershootMS): keyplane's own forwarding
	// cost.
	NetOverheadMS *float64 `json:"net_overhead_ms,omitempty"`
}

// ZeroLatency is a pass with every simulated round trip at 0 (multi-region mode).
type ZeroLatency struct {
	Rate      float64          `json:"rate"` // open-loop arrivals per second: the main run's throughput
	DurationS float64          `json:"duration_s"`
	Routes    map[string]Route `json:"routes"`
	// Errors counts the pass's failed operations as Result.Errors does; absent when none.
	Errors map[string]int64 `json:"errors,omitempty"`
}

// Step is one rung of a rate ladder.
type Step struct {
	Rate       float64 `json:"rate"`
	Throughput float64 `json:"throughput"`
	Latency    Latency `json:"latency_ms"`
	Errors     int64   `json:"errors"`
	OK         bool    `json:"ok"` // p99 under the threshold and no errors
}

// NodeUsage is one node process's CPU and memory over the run.
type NodeUsage struct {
	Node      string  `json:"node"`
	CPUs      float64 `json:"cpu_seconds"`
	RSSStartM float64 `json:"rss_start_mib"`
	RSSEndM   float64 `json:"rss_end_mib"`
	RSSPeakM  float64 `json:"rss_peak_mib"`
	// RSSPerMinute is the RSS at the start and at every whole minute of the run, so a
	// long run shows whether memory climbs or cycles.
	RSSPerMinute []float64 `json:"rss_mib_per_minute"`
}

// Point is one second of a run.
type Point struct {
	T          float64 `json:"t_s"`
	Throughput float64 `json:"throughput"`
	Errors     int64   `json:"errors"`
	P99        float64 `json:"p99_ms"`
}

// Target is one performance target and whether this run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Report is a whole `keyplane bench run`: the machine, the settings and one Result
// per workload.
type Report struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Command string    `json:"command"`
	Results []Result  `json:"results"`
	// History is the linearizability pass (--history); absent without it.
	History *History `json:"history,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	MemoryGiB float64 `json:"memory_gib"`
	OS        string  `json:"os"`
	Go        string  `json:"go"`
	Version   string  `json:"keyplane_version"`
	Postgres  string  `json:"database"`
	Note      string  `json:"note"`
}
