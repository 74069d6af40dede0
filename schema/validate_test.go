package schema_test

import (
	"strings"
	"testing"

	"github.com/keyplane/keyplane/schema"
)

func TestCheckRegionName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"cloud region", "us-east1", true},
		{"one letter", "a", true},
		{"63 characters", "a" + strings.Repeat("b", 62), true},
		{"trailing dash", "eu-", true},
		{"empty", "", false},
		{"64 characters", "a" + strings.Repeat("b", 63), false},
		{"upper case", "US-East", false},
		{"space", "us east", false},
		{"leading dash", "-us", false},
		// Node configuration used to accept these; the database never did.
		{"leading digit", "1us", false},
		{"dot", "us.east", false},
		{"underscore", "us_east", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := schema.CheckRegionName(tt.in)
			if got := err == nil; got != tt.ok {
				t.Fatalf("CheckRegionName(%q) = %v, want valid = %v", tt.in, err, tt.ok)
			}
		})
	}
}
