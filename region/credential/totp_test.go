package credential_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"

	"github.com/keyplane/keyplane/region/credential"
)

// rfcSecret is the RFC 6238 appendix B SHA-1 seed "12345678901234567890" in base32.
const rfcSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func TestCheckTOTPRFC6238(t *testing.T) {
	t.Parallel()
	// RFC 6238 appendix B, SHA-1, reduced from 8 to 6 digits.
	tests := []struct {
		unix int64
		code string
	}{
		{59, "287082"},
		{1111111109, "081804"},
		{1111111111, "050471"},
		{1234567890, "005924"},
		{2000000000, "279037"},
		{20000000000, "353130"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.unix), func(t *testing.T) {
			t.Parallel()
			step, ok := credential.CheckTOTP(rfcSecret, tt.code, time.Unix(tt.unix, 0))
			if want := tt.unix / 30; !ok || step != want {
				t.Errorf("CheckTOTP: got (%d, %v), want (%d, true)", step, ok, want)
			}
		})
	}
}

func TestNewTOTP(t *testing.T) {
	t.Parallel()
	key, err := credential.NewTOTP("Keyplane", "alice@example.com")
	if err != nil {
		t.Fatalf("NewTOTP: got error %v, want nil", err)
	}
	if len(key.Secret) != 32 || strings.Trim(key.Secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		t.Errorf("Secret: got %q, want 32 characters of base32 (160 bits)", key.Secret)
	}
	u, err := url.Parse(key.URL)
	if err != nil {
		t.Fatalf("URL %q: %v", key.URL, err)
	}
	q := u.Query()
	for _, c := range []struct{ name, got, want string }{
		{"scheme", u.Scheme, "otpauth"},
		{"host", u.Host, "totp"},
		{"label", u.Path, "/Keyplane:alice@example.com"},
		{"secret", q.Get("secret"), key.Secret},
		{"issuer", q.Get("issuer"), "Keyplane"},
		{"algorithm", q.Get("algorithm"), "SHA1"},
		{"digits", q.Get("digits"), "6"},
		{"period", q.Get("period"), "30"},
	} {
		if c.got != c.want {
			t.Errorf("URL %s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	other, err := credential.NewTOTP("Keyplane", "alice@example.com")
	if err != nil {
		t.Fatalf("NewTOTP: got error %v, want nil", err)
	}
	if other.Secret == key.Secret {
		t.Errorf("NewTOTP twice: got the same secret twice, want fresh secrets")
	}
}

func TestNewTOTPInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, issuer, account string }{
		{"empty issuer", "", "alice"},
		{"empty account", "Keyplane", ""},
		{"colon in issuer", "Key:plane", "alice"},
		{"colon in account", "Keyplane", "alice:admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := credential.NewTOTP(tt.issuer, tt.account)
			if !errors.Is(err, credential.ErrInvalidArgument) || key.Secret != "" {
				t.Errorf("NewTOTP(%q, %q): got (%q, %v), want an error wrapping ErrInvalidArgument", tt.issuer, tt.account, key.Secret, err)
			}
		})
	}
}

func TestCheckTOTP(t *testing.T) {
	t.Parallel()
	key, err := credential.NewTOTP("Keyplane", "alice@example.com")
	if err != nil {
		t.Fatalf("NewTOTP: got error %v, want nil", err)
	}
	at := time.Unix(1_700_000_015, 0) // the middle of step 56666667
	code, err := totp.GenerateCode(key.Secret, at)
	if err != nil {
		t.Fatalf("GenerateCode: %v", err)
	}
	wantStep := at.Unix() / 30
	tests := []struct {
		name string
		code string
		now  time.Time
		ok   bool
	}{
		{"same time", code, at, true},
		{"same step", code, at.Add(14 * time.Second), true},
		{"30 s later", code, at.Add(30 * time.Second), true},
		{"30 s earlier", code, at.Add(-30 * time.Second), true},
		{"60 s later", code, at.Add(60 * time.Second), false},
		{"90 s later", code, at.Add(90 * time.Second), false},
		{"90 s earlier", code, at.Add(-90 * time.Second), false},
		{"surrounding spaces", " " + code + " ", at, true},
		{"surrounding tab and newline", "\t" + code + "\n", at, true},
		{"inner space", code[:3] + " " + code[3:], at, false},
		{"5 digits", code[:5], at, false},
		{"7 digits", code + "0", at, false},
		{"7 digits, leading zero", "0" + code, at, false},
		{"empty", "", at, false},
		{"letter", code[:5] + "a", at, false},
		{"sign", "+" + code[1:], at, false},
		{"full-width digits", strings.Map(func(r rune) rune { return r - '0' + '０' }, code), at, false},
		{"Arabic-Indic digits", strings.Map(func(r rune) rune { return r - '0' + '٠' }, code), at, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			step, ok := credential.CheckTOTP(key.Secret, tt.code, tt.now)
			if ok != tt.ok {
				t.Fatalf("CheckTOTP(%q, %v): got ok %v, want %v", tt.code, tt.now.Sub(at), ok, tt.ok)
			}
			if ok && step != wantStep {
				t.Errorf("CheckTOTP(%q, %v): got step %d, want %d", tt.code, tt.now.Sub(at), step, wantStep)
			}
		})
	}
}

func TestCheckTOTPSecrets(t *testing.T) {
	t.Parallel()
	at := time.Unix(59, 0)
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{"upper case", rfcSecret, true},
		{"lower case", strings.ToLower(rfcSecret), true},
		{"surrounding space", " " + rfcSecret + " ", true},
		{"empty", "", false},
		{"not base32", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1", false},
		{"10 bytes, below the 128-bit minimum", rfcSecret[:16], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, ok := credential.CheckTOTP(tt.secret, "287082", at); ok != tt.ok {
				t.Errorf("CheckTOTP(%q): got %v, want %v", tt.secret, ok, tt.ok)
			}
		})
	}
}

func TestCheckTOTPTimes(t *testing.T) {
	t.Parallel()
	code0, err := hotp.GenerateCode(rfcSecret, 0)
	if err != nil {
		t.Fatalf("hotp.GenerateCode: %v", err)
	}
	tests := []struct {
		name     string
		now      time.Time
		wantStep int64
		ok       bool
	}{
		{"epoch", time.Unix(0, 0), 0, true},
		{"step 1", time.Unix(30, 0), 0, true},
		{"just before the epoch", time.Unix(-1, 0), 0, true},
		{"one step before the epoch", time.Unix(-30, 0), 0, true},
		{"two steps before the epoch", time.Unix(-31, 0), 0, false},
		{"zero time", time.Time{}, 0, false},
		{"far past", time.Unix(-1<<62, 0), 0, false},
		{"far future", time.Unix(1<<62, 0), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			step, ok := credential.CheckTOTP(rfcSecret, code0, tt.now)
			if ok != tt.ok || ok && step != tt.wantStep {
				t.Errorf("CheckTOTP(step 0 code, %v): got (%d, %v), want (%d, %v)", tt.now.Unix(), step, ok, tt.wantStep, tt.ok)
			}
		})
	}
}

func TestTOTPKeyRedacted(t *testing.T) {
	t.Parallel()
	key, err := credential.NewTOTP("Keyplane", "alice@example.com")
	if err != nil {
		t.Fatalf("NewTOTP: got error %v, want nil", err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("enrolled", "key", key)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&b, format+"\n", key)
	}
	if strings.Contains(b.String(), key.Secret) {
		t.Errorf("printed and logged TOTPKey: got %q, want no secret", b.String())
	}
}

func FuzzCheckTOTP(f *testing.F) {
	f.Add(rfcSecret, "287082", int64(59))
	f.Add(rfcSecret, " 287082\n", int64(89))
	f.Add(rfcSecret, "2870820", int64(59))
	f.Add(rfcSecret, "28708", int64(-1))
	f.Add("", "", int64(0))
	f.Add("gezdgnbvgy3tqojq====", "１２３４５６", int64(1<<62))
	f.Fuzz(func(t *testing.T, secret, code string, unix int64) {
		step, ok := credential.CheckTOTP(secret, code, time.Unix(unix, 0))
		if !ok {
			return
		}
		trimmed := strings.TrimSpace(code)
		if len(trimmed) != 6 || strings.Trim(trimmed, "0123456789") != "" {
			t.Fatalf("CheckTOTP(%q, %q, %d): accepted a code that is not 6 digits", secret, code, unix)
		}
		current := unix / 30
		if unix%30 < 0 {
			current--
		}
		if step < 0 || step < current-1 || step > current+1 {
			t.Fatalf("CheckTOTP(%q, %q, %d): got step %d, want within one of %d", secret, code, unix, step, current)
		}
		if want, err := hotp.GenerateCode(secret, uint64(step)); err != nil || want != trimmed {
			t.Fatalf("CheckTOTP(%q, %q, %d): got step %d whose code is %q (%v)", secret, code, unix, step, want, err)
		}
	})
}
