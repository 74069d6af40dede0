package demo_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// guideCommands extracts the shell commands the demo's guide prints: the indented,
// non-comment lines after "Try it from another terminal", continuation lines joined.
// It leaves out the buf curl example (buf is a developer tool `make test` does not
// install); every other command is returned.
func guideCommands(t *testing.T, text string) []string {
	t.Helper()
	_, guide, ok := strings.Cut(text, "Try it from another terminal")
	if !ok {
		t.Fatalf("the output has no guide:\n%s", text)
	}
	var cmds []string
	var cur strings.Builder
	for _, line := range strings.Split(guide, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (!strings.HasPrefix(line, "  ") || trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		cont := strings.HasSuffix(trimmed, `\`)
		cur.WriteString(strings.TrimSuffix(trimmed, `\`))
		if cont {
			cur.WriteString(" ")
			continue
		}
		if cmd := cur.String(); !strings.HasPrefix(cmd, "buf curl") {
			cmds = append(cmds, cmd)
		}
		cur.Reset()
	}
	return cmds
}

var connectErrorCode = regexp.MustCompile(`"code":"([a-z_]+)"`)

// runGuide runs every command the guide prints, in order, in one bash (the exports
// carry over), and checks each one's output: every Connect call answers without an
// error but the one the guide says is refused, the first introspection says active and
// the one after the revocation inactive, and the operator listener serves metrics.
// A guide that forgets a header, names a wrong path or a stale field fails here.
func runGuide(t *testing.T, text string) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required to run the demo guide's examples: install it (make postgres installs it with apt-get)")
	}
	cmds := guideCommands(t, text)
	var script strings.Builder
	for i, c := range cmds {
		fmt.Fprintf(&script, "echo '@@@%d'\n%s\necho\n", i, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-c", script.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("the guide's commands: %v\n%s", err, out)
	}
	outputs := map[int]string{}
	for _, seg := range strings.Split(string(out), "@@@")[1:] {
		var i int
		var rest string
		if n, _ := fmt.Sscanf(seg, "%d", &i); n != 1 {
			t.Fatalf("unparsable output segment %q", seg)
		}
		_, rest, _ = strings.Cut(seg, "\n")
		outputs[i] = rest
	}
	introspections := 0
	for i, c := range cmds {
		o := outputs[i]
		switch {
		case strings.Contains(c, "/keyplane.v1."):
			m := connectErrorCode.FindStringSubmatch(o)
			refused := strings.Contains(c, `"displayName":"rogue"`)
			if refused && (m == nil || m[1] != "invalid_argument" || !strings.Contains(o, "owner")) {
				t.Errorf("guide command %q should be refused naming the owner, got %q", c, o)
			}
			if !refused && (m != nil || !strings.HasPrefix(strings.TrimSpace(o), "{")) {
				t.Errorf("guide command %q failed: %q", c, o)
			}
		case strings.Contains(c, "/oauth2/introspect"):
			introspections++
			want := `"active":true`
			if introspections > 1 {
				want = `"active":false`
			}
			if !strings.Contains(o, want) {
				t.Errorf("guide command %q: %q, want %s", c, o, want)
			}
		case strings.Contains(c, "Keyplane-Region"):
			if !strings.Contains(strings.ToLower(o), "keyplane-front-node: ") || !strings.Contains(strings.ToLower(o), "keyplane-route: local") {
				t.Errorf("guide command %q: %q, want the front's entry node and a local answer", c, o)
			}
		case strings.Contains(c, "/metrics"):
			if !strings.Contains(o, "keyplane_rpc") {
				t.Errorf("guide command %q shows no keyplane_rpc metric: %q", c, o)
			}
		case strings.Contains(c, "openid-configuration"):
			if !strings.Contains(o, `"jwks_uri"`) || !strings.Contains(o, `"keys"`) {
				t.Errorf("guide command %q: %q, want discovery and keys", c, o)
			}
		}
	}
	if introspections != 2 {
		t.Errorf("the guide ran %d introspections, want 2 (before and after the revocation)", introspections)
	}
}
