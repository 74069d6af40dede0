// Package plot draws keyplane's charts as self-contained SVG: Timeline writes a run's
// throughput, p99 latency and errors per second, with fault windows shaded, to an
// io.Writer from plain Points and Windows. It does no other I/O and keeps no state,
// so it is safe for concurrent use.
//
// It is a leaf package: it imports nothing from keyplane, so both the load bench
// (bench: one chart per workload) and the chaos drills (chaos: one chart per drill)
// draw with it without one importing the other. It lives under bench because the
// bench's reports were its first user and the top level of the repository is fixed;
// it is called plot rather than svg after what it does, not the format it writes.
package plot
