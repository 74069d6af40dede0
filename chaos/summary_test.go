package chaos_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/chaos"
)

func TestWriteSummary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		drills []chaos.DrillResult
		want   []string // lines
	}{
		{"no drills", nil, nil},
		{"held", []chaos.DrillResult{{Name: "node-kill", Ops: 1234, Target: "failover ≤ 5 s", TargetGot: "2.1 s", TargetMet: true}},
			[]string{`node-kill        invariants held     1234 calls  target "failover ≤ 5 s": 2.1 s`}},
		{"each broken invariant", []chaos.DrillResult{
			{Name: "revocation-race", Ops: 10, Violations: []string{"read active after revoke"}},
			{Name: "db-outage", Ops: 200, LostWrites: []string{"w1"}},
			{Name: "partition", Ops: 3000, FailOpen: []string{"allowed while blind"}},
			{Name: "clock", Failed: "no cluster"},
		}, []string{
			`revocation-race  INVARIANT BROKEN      10 calls  target "": `,
			`db-outage        INVARIANT BROKEN     200 calls  target "": `,
			`partition        INVARIANT BROKEN    3000 calls  target "": `,
			`clock            INVARIANT BROKEN       0 calls  target "": `,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := chaos.WriteSummary(&b, chaos.Report{Drills: tt.drills}); err != nil {
				t.Fatal(err)
			}
			want := ""
			if len(tt.want) > 0 {
				want = strings.Join(tt.want, "\n") + "\n"
			}
			if got := b.String(); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
