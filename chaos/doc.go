// Package chaos holds keyplane's failure drills (`keyplane chaos run`): the drills in
// drill.go, the load that records every call in load.go, the runner in run.go and the
// reports in report.go. The recorded histories are judged by the invariant checkers of
// the leaf package chaos/history (linearizable revocation, no lost write, fail
// closed), which are plain functions tested with hand-made bad histories; region's
// tests use them too without linking the drills. The timeline SVG of each drill is
// drawn by bench/plot.
package chaos
