package schema

import (
	"fmt"
	"net/mail"
	"regexp"
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
