package schema

import (
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

var (
	tenantIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	regionPattern   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
)

// ValidTenantID reports whether id is a well-formed tenant id: a lowercase slug of 2 to
// 63 characters from [a-z0-9-], starting with a letter or digit.
func ValidTenantID(id string) bool { return tenantIDPattern.MatchString(id) }

func checkTenantID(field, id string) error {
	if id == "" {
		return fieldErr(field, "required")
	}
	if !ValidTenantID(id) {
		return fieldErr(field, "must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")
	}
	return nil
}

// CheckRegionName reports whether name is a valid region name: 1 to 63 characters of
// a-z, 0-9 and '-', starting with a letter. It is the one rule for region names, in
// the database (migrations, tenants' home regions) and in node configuration.
func CheckRegionName(name string) error {
	if !regionPattern.MatchString(name) {
		return fmt.Errorf("region names are 1 to 63 characters of a-z, 0-9 and '-', starting with a letter; got %q", truncate(name, 70))
	}
	return nil
}

func checkRegionName(field, name string) error {
	if err := CheckRegionName(name); err != nil {
		return &FieldError{Field: field, Reason: err.Error()}
	}
	return nil
}

// parseID parses a UUID-valued field.
func parseID(field, id string) (uuid.UUID, error) {
	if id == "" {
		return uuid.Nil, fieldErr(field, "required")
	}
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return uuid.Nil, fieldErr(field, "must be a UUID like 0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b")
	}
	return u, nil
}

// checkText validates a human-readable single-line text field.
func checkText(field, v string, required bool, max int) error {
	if !utf8.ValidString(v) {
		return fieldErr(field, "must be valid UTF-8")
	}
	if required && strings.TrimSpace(v) == "" {
		return fieldErr(field, "required")
	}
	if n := utf8.RuneCountInString(v); n > max {
		return fieldErr(field, "at most %d characters, got %d", max, n)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fieldErr(field, "must not contain control characters")
		}
	}
	return nil
}

func checkEmail(field, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 320 {
		return fieldErr(field, "at most 320 characters")
	}
	a, err := mail.ParseAddress(v)
	if err != nil || a.Address != v || a.Name != "" {
		return fieldErr(field, "must be a plain address like alice@example.com")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Bounds of an OAuth client's allow-lists and of what a token request may ask for.
const (
	MaxAllowListLen = 50  // entries in allowed_audiences or allowed_scopes
	MaxAudienceLen  = 512 // bytes of one audience (resource)
	MaxScopeLen     = 128 // bytes of one scope token
)

// ValidAudience reports whether s is an acceptable audience or RFC 8707 resource:
// 1 to MaxAudienceLen bytes of printable ASCII without spaces, quotes or backslashes,
// and no fragment ('#', which RFC 8707 §2 forbids in a resource).
func ValidAudience(s string) bool {
	if s == "" || len(s) > MaxAudienceLen || !printableToken(s) {
		return false
	}
	return !strings.Contains(s, "#")
}

// ValidScopeToken reports whether s is one RFC 6749 §3.3 scope-token of at most
// MaxScopeLen bytes: %x21 / %x23-5B / %x5D-7E (printable ASCII, no space, '"' or '\').
func ValidScopeToken(s string) bool {
	return s != "" && len(s) <= MaxScopeLen && printableToken(s)
}

func printableToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// checkAllowList validates an allow-list field: at most MaxAllowListLen entries, each
// valid, none repeated. It returns the list sorted (a nil list becomes empty).
func checkAllowList(field string, list []string, valid func(string) bool, what string) ([]string, error) {
	if len(list) > MaxAllowListLen {
		return nil, fieldErr(field, "at most %d entries, got %d", MaxAllowListLen, len(list))
	}
	out := slices.Clone(list)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	for i, v := range out {
		if !valid(v) {
			return nil, fieldErr(field, "%q is not %s", truncate(v, 70), what)
		}
		if i > 0 && out[i-1] == v {
			return nil, fieldErr(field, "%q is listed twice", truncate(v, 70))
		}
	}
	return out, nil
}

// CheckAllowLists validates an OAuth client's allowed audiences and scopes (fields
// allowed_audiences and allowed_scopes) and returns them sorted.
func CheckAllowLists(audiences, scopes []string) ([]string, []string, error) {
	a, err := checkAllowList("allowed_audiences", audiences, ValidAudience,
		fmt.Sprintf("an audience (1 to %d printable ASCII characters without spaces, quotes, backslashes or a fragment)", MaxAudienceLen))
	if err != nil {
		return nil, nil, err
	}
	s, err := checkAllowList("allowed_scopes", scopes, ValidScopeToken,
		fmt.Sprintf("a scope token (RFC 6749 §3.3: 1 to %d printable ASCII characters without spaces, quotes or backslashes)", MaxScopeLen))
	if err != nil {
		return nil, nil, err
	}
	return a, s, nil
}
