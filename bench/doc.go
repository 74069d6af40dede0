// Package bench will hold keyplane's load generator, workloads and reports, built by
// the load-bench issue. Speed targets live here as benchmarks, never as timed tests.
package bench
