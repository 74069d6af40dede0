// Package bench holds keyplane's benchmarks. Speed targets live here, as benchmarks
// that report figures, never as timed unit tests.
//
// Today it holds the token benchmarks (token_bench_test.go): ValidateToken and
// ExchangeAPIKey against a local node over real HTTP, each measured next to a baseline
// that does the same logical read with raw pgx against the same database in the same
// run; the check benchmarks (check_bench_test.go) likewise; and BenchmarkRoutes
// (route_bench_test.go), which starts the three-region local cluster with its
// simulated WAN and reports local, forwarded and degraded latency next to the
// configured round trip. The load generator behind `keyplane bench run` lives here too
// (run.go, load.go, workload.go, env.go, report.go, svg.go); bench/README.md explains it.
// Its SVG timelines are drawn by the leaf package bench/plot, which chaos shares.
//
// Run the load bench with `make bench`, the go benchmarks with `make bench-go` (or
// `go test ./bench -run '^$' -bench . -benchtime 5s`).
package bench
