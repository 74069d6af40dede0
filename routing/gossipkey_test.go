package routing_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/routing"
)

func TestParseGossipKeys(t *testing.T) {
	t.Parallel()
	k16, k32 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 32)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name    string
		in      string
		want    [][]byte
		wantErr string
	}{
		{name: "empty", in: ""},
		{name: "one", in: b64(k32) + "\n", want: [][]byte{k32}},
		{name: "file with comments, primary first", in: "# rotated 2026-12-01\n" + b64(k16) + "\n\n" + b64(k32) + "\n", want: [][]byte{k16, k32}},
		{name: "comma-separated", in: b64(k32) + "," + b64(k16), want: [][]byte{k32, k16}},
		{name: "not base64", in: "not-a-key", wantErr: "gossip key 1: not base64"},
		{name: "wrong size", in: b64(k32) + "\n" + b64([]byte("short")), wantErr: "gossip key 2: 5 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := routing.ParseGossipKeys(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseGossipKeys = %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.in) {
					t.Errorf("the error %q repeats the key material", err)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("ParseGossipKeys = %d keys, %v; want %d", len(got), err, len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Errorf("key %d differs", i+1)
				}
			}
		})
	}
	a, b := routing.NewGossipKey(), routing.NewGossipKey()
	keys, err := routing.ParseGossipKeys(a)
	if err != nil || len(keys) != 1 || len(keys[0]) != 32 || a == b {
		t.Errorf("NewGossipKey: %q parses to %d keys (%v); two calls equal: %v", a, len(keys), err, a == b)
	}
}
