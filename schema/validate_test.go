package schema_test

import (
	"errors"
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

func TestCheckAllowLists(t *testing.T) {
	t.Parallel()
	many := make([]string, schema.MaxAllowListLen+1)
	for i := range many {
		many[i] = "s" + strings.Repeat("x", i)
	}
	tests := []struct {
		name              string
		audiences, scopes []string
		field             string // "" when valid
	}{
		{"empty", nil, nil, ""},
		{"typical", []string{"https://api.test", "payments"}, []string{"docs.read", "docs:write"}, ""},
		{"audience with fragment", []string{"https://api.test#x"}, nil, "allowed_audiences"},
		{"audience with space", []string{"a b"}, nil, "allowed_audiences"},
		{"empty audience", []string{""}, nil, "allowed_audiences"},
		{"long audience", []string{strings.Repeat("a", schema.MaxAudienceLen+1)}, nil, "allowed_audiences"},
		{"repeated audience", []string{"a", "a"}, nil, "allowed_audiences"},
		{"scope with quote", nil, []string{`a"b`}, "allowed_scopes"},
		{"scope with backslash", nil, []string{`a\b`}, "allowed_scopes"},
		{"non-ASCII scope", nil, []string{"lesen\u00e4"}, "allowed_scopes"},
		{"long scope", nil, []string{strings.Repeat("s", schema.MaxScopeLen+1)}, "allowed_scopes"},
		{"too many scopes", nil, many, "allowed_scopes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			auds, scopes, err := schema.CheckAllowLists(tt.audiences, tt.scopes)
			var fe *schema.FieldError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tt.field == "" && (auds == nil || scopes == nil):
				t.Fatalf("valid lists returned as nil: %v %v", auds, scopes)
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
				t.Fatalf("got %v, want a field error on %s", err, tt.field)
			}
		})
	}
}
