package routing

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// memberlist writes its log lines as "[DEBUG]", "[INFO]", "[WARN]" and "[ERR]" (and
// a few "[ERROR]"); warnings and errors must reach slog at warn level.
func TestSlogWriterLevels(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel string
	}{
		{line: "[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", wantLevel: "DEBUG"},
		{line: "[INFO] memberlist: Suspect node-2 has failed\n", wantLevel: "DEBUG"},
		{line: "[WARN] memberlist: Was able to connect to node-2 over TCP\n", wantLevel: "WARN"},
		{line: "[ERR] memberlist: Failed to send ping: write: broken pipe\n", wantLevel: "WARN"},
		{line: "[ERROR] memberlist: Failed to get TCP listener\n", wantLevel: "WARN"},
		{line: "short", wantLevel: "DEBUG"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var buf bytes.Buffer
			w := slogWriter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			n, err := w.Write([]byte(tt.line))
			if err != nil || n != len(tt.line) {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(tt.line))
			}
			got := buf.String()
			if !strings.Contains(got, "level="+tt.wantLevel+" ") {
				t.Errorf("logged %q, want level %s", got, tt.wantLevel)
			}
			if strings.Contains(got, `\n"`) {
				t.Errorf("logged %q, want the trailing newline trimmed", got)
			}
		})
	}
}
