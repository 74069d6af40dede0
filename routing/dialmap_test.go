package routing_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/routing"
)

func TestParseDialMap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: "", want: map[string]string{}},
		{in: "a:1=b:2", want: map[string]string{"a:1": "b:2"}},
		{in: " a:1=b:2 , c:3=d:4,", want: map[string]string{"a:1": "b:2", "c:3": "d:4"}},
		{in: "a:1", wantErr: `"a:1" is not from=to`},
		{in: "a:1=", wantErr: `"a:1=" is not from=to`},
		{in: "=b:2", wantErr: `"=b:2" is not from=to`},
		{in: "a=b:2", wantErr: `"a=b:2" is not from=to`},
		{in: "a:1=b", wantErr: `"a:1=b" is not from=to`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := routing.ParseDialMap(tt.in)
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseDialMap(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			case tt.wantErr == "" && (err != nil || !maps.Equal(got, tt.want)):
				t.Fatalf("ParseDialMap(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}
