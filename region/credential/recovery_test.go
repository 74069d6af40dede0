package credential_test

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/keyplane/keyplane/region/credential"
)

func TestNewRecoveryCodes(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$`)
	for _, n := range []int{1, 10, credential.MaxRecoveryCodes} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			codes, hashes, err := credential.NewRecoveryCodes(n)
			if err != nil {
				t.Fatalf("NewRecoveryCodes(%d): got error %v, want nil", n, err)
			}
			if len(codes) != n || len(hashes) != n {
				t.Fatalf("NewRecoveryCodes(%d): got %d codes and %d hashes, want %d of each", n, len(codes), len(hashes), n)
			}
			seen := map[string]bool{}
			for i, code := range codes {
				if !re.MatchString(code) {
					t.Errorf("code %d: got %q, want a match for %s", i, code, re)
				}
				if seen[code] {
					t.Errorf("code %d: got %q twice, want distinct codes", i, code)
				}
				seen[code] = true
				if !bytes.Equal(hashes[i], credential.HashRecoveryCode(code)) {
					t.Errorf("hash %d: got %x, want HashRecoveryCode(%q) = %x", i, hashes[i], code, credential.HashRecoveryCode(code))
				}
				if !bytes.Equal(hashes[i], credential.HashRecoveryCode(strings.ToUpper(code))) {
					t.Errorf("hash %d: differs from the hash of the upper-case code", i)
				}
			}
		})
	}
}

func TestNewRecoveryCodesInvalid(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, 0, credential.MaxRecoveryCodes + 1, 1 << 40} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			codes, hashes, err := credential.NewRecoveryCodes(n)
			if !errors.Is(err, credential.ErrInvalidArgument) || codes != nil || hashes != nil {
				t.Errorf("NewRecoveryCodes(%d): got (%q, %x, %v), want an error wrapping ErrInvalidArgument", n, codes, hashes, err)
			}
		})
	}
}

func TestNormalizeRecoveryCode(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"abcd-efgh-2345", "abcdefgh2345"},
		{"ABCD-efgh-2345", "abcdefgh2345"},
		{"abcdefgh2345", "abcdefgh2345"},
		{" abcd efgh 2345 ", "abcdefgh2345"},
		{"abcd--efgh\t2345\n", "abcdefgh2345"},
		{"", ""},
		{"---", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := credential.NormalizeRecoveryCode(tt.in); got != tt.want {
				t.Errorf("NormalizeRecoveryCode(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHashRecoveryCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		same bool
	}{
		{"ABCD-efgh-2345", "abcdefgh2345", true},
		{"abcd efgh 2345", "abcd-efgh-2345", true},
		{"abcd-efgh-2345", "abcd-efgh-2346", false},
		{"abcd-efgh-2345", "abcd-efgh-234", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			t.Parallel()
			ha, hb := credential.HashRecoveryCode(tt.a), credential.HashRecoveryCode(tt.b)
			if len(ha) != 32 {
				t.Errorf("HashRecoveryCode(%q): got %d bytes, want 32", tt.a, len(ha))
			}
			if got := bytes.Equal(ha, hb); got != tt.same {
				t.Errorf("hashes equal: got %v, want %v", got, tt.same)
			}
		})
	}
}

// FuzzNormalizeRecoveryCode checks the normal form recovery codes are hashed in, for
// any input a client sends: it holds no separators, normalizing again changes nothing,
// separators added anywhere change nothing, and a generated code matches however it
// is typed (upper case, dashes, spaces).
func FuzzNormalizeRecoveryCode(f *testing.F) {
	codes, _, err := credential.NewRecoveryCodes(2)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "abcd-efgh-2345", "ABCD EFGH 2345", " a-b\tc\nd ", "\u212a", "\xff\xfe", "--", "İı", codes[0], codes[1]} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, s string, every uint8) {
		n := credential.NormalizeRecoveryCode(s)
		if strings.ContainsFunc(n, func(r rune) bool { return r == '-' || unicode.IsSpace(r) }) {
			t.Fatalf("NormalizeRecoveryCode(%q) = %q: still holds a separator", s, n)
		}
		if again := credential.NormalizeRecoveryCode(n); again != n {
			t.Fatalf("not idempotent: %q → %q → %q", s, n, again)
		}
		// Separators between any runes are ignored.
		var sb strings.Builder
		for i, r := range []rune(s) {
			if every > 0 && i%int(every) == 0 {
				sb.WriteString("- \t")
			}
			sb.WriteRune(r)
		}
		if got := credential.NormalizeRecoveryCode(sb.String()); got != n {
			t.Fatalf("separators changed the normal form: %q → %q, %q → %q", s, n, sb.String(), got)
		}
		if !bytes.Equal(credential.HashRecoveryCode(sb.String()), credential.HashRecoveryCode(s)) {
			t.Fatalf("hashes differ for %q and %q", s, sb.String())
		}
		// A code made only of the codes' alphabet matches in upper case too, and never
		// matches a different code.
		if strings.Trim(n, "abcdefghijklmnopqrstuvwxyz234567") == "" {
			if got := credential.NormalizeRecoveryCode(strings.ToUpper(s)); got != n {
				t.Fatalf("upper case changed the normal form of %q: %q, want %q", s, got, n)
			}
			for _, c := range codes {
				if (n == credential.NormalizeRecoveryCode(c)) != bytes.Equal(credential.HashRecoveryCode(s), credential.HashRecoveryCode(c)) {
					t.Fatalf("%q against code %q: normal forms and hashes disagree", s, c)
				}
			}
		}
	})
}
