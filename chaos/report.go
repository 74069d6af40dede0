package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/keyplane/keyplane/bench/plot"
)

// WriteReport writes report.json, report.md and one <drill>.svg timeline per drill
// into dir.
func WriteReport(dir string, r Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	writeMarkdown(&md, r)
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	for _, d := range r.Drills {
		f, err := os.Create(filepath.Join(dir, d.Name+".svg"))
		if err != nil {
			return err
		}
		var pts []plot.Point
		for _, p := range d.Timeline {
			pts = append(pts, plot.Point{T: p.T, Throughput: float64(p.OK), Errors: int64(p.Errors), P99: p.P99MS})
		}
		var ws []plot.Window
		for _, w := range d.Windows {
			ws = append(ws, plot.Window{FromS: w.FromS, ToS: w.ToS, Label: w.Label})
		}
		err = plot.Timeline(f, "chaos drill "+d.Name, pts, ws)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// excerpt caps a list for the report.
func excerpt(list []string, n int) []string {
	if len(list) <= n {
		return list
	}
	return append(list[:n:n], fmt.Sprintf("… and %d more (report.json has them all)", len(list)-n))
}

func writeMarkdown(w io.Writer, r Report) {
	fmt.Fprintf(w, "# keyplane chaos drills\n\n%s · `%s`\n\n", r.Started.Format(time.RFC3339), r.Command)
	fmt.Fprintf(w, "| drill | invariants | calls | errors (safe to retry) | reads after revoke | writes checked | target | got |\n|---|---|---|---|---|---|---|---|\n")
	for _, d := range r.Drills {
		inv := "✓ held"
		if !d.Passed() {
			inv = "✗ BROKEN"
		}
		tgt := "✓"
		if !d.TargetMet {
			tgt = "✗"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d (%d) | %d | %d | %s %s | %s |\n", d.Name, inv, d.Ops, sum(d.Errors), d.SafeErrors,
			d.ReadsAfterRevoke, d.Writes, tgt, d.Target, d.TargetGot)
	}
	for _, d := range r.Drills {
		fmt.Fprintf(w, "\n## %s\n\n%s\n\n![timeline](%s.svg)\n\n", d.Name, d.Doc, d.Name)
		if d.Failed != "" {
			fmt.Fprintf(w, "**The drill could not run to the end:** %s\n\n", d.Failed)
		}
		for _, sec := range []struct {
			title string
			list  []string
		}{{"Revocation violations (read granted after an acknowledged revoke)", d.Violations},
			{"Lost or mis-audited writes", d.LostWrites}, {"Writes applied twice", d.AppliedTwice}, {"Answers served outside a strict tenant's residency", d.OutsideResidency}, {"Fail-open reads (granted while the database was unreadable)", d.FailOpen}} {
			if len(sec.list) > 0 {
				fmt.Fprintf(w, "**%s:**\n\n", sec.title)
				for _, l := range excerpt(sec.list, 20) {
					fmt.Fprintf(w, "- %s\n", l)
				}
				fmt.Fprintln(w)
			}
		}
		if len(d.Windows) > 0 {
			fmt.Fprintf(w, "Faults: ")
			var parts []string
			for _, win := range d.Windows {
				parts = append(parts, fmt.Sprintf("%s (%.1f–%.1f s)", win.Label, win.FromS, win.ToS))
			}
			fmt.Fprintf(w, "%s.\n\n", strings.Join(parts, "; "))
		}
		if len(d.Errors) > 0 {
			keys := make([]string, 0, len(d.Errors))
			for k := range d.Errors {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			fmt.Fprintf(w, "Errors by call and code: ")
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s %d", k, d.Errors[k]))
			}
			fmt.Fprintf(w, "%s.\n\n", strings.Join(parts, ", "))
		}
		if len(d.Routes) > 0 {
			fmt.Fprintf(w, "Answers by route: local %d, forwarded %d, degraded %d.\n\n", d.Routes["local"], d.Routes["forwarded"], d.Routes["degraded"])
		}
		if len(d.Recoveries) > 0 {
			fmt.Fprintf(w, "| client | region hit | first success after the fault | errors before it |\n|---|---|---|---|\n")
			for _, rc := range d.Recoveries {
				first := fmt.Sprintf("%.0f ms", rc.FirstSuccessMS)
				if rc.FirstSuccessMS < 0 {
					first = "none"
				}
				hit := ""
				if rc.Victim {
					hit = "yes"
				}
				fmt.Fprintf(w, "| %s | %s | %s | %d |\n", rc.Client, hit, first, rc.Errors)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "\nInvariants are checked on the recorded history: linearizable revocation (no read started after an acknowledged revoke of its token may grant), no lost acknowledged write (each created identity exists with exactly one audit event), fail closed (no read granted entirely inside a window in which the database could not be read). docs/operations.md explains the drills.\n")
}
