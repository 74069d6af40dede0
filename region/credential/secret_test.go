package credential_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/credential"
)

type prefixKind struct{ prefix, kind string }

// prefixes lists every secret prefix with the kind its errors name.
func prefixes() []prefixKind {
	return []prefixKind{
		{credential.PrefixAPIKey, "api key"},
		{credential.PrefixClientSecret, "client secret"},
		{credential.PrefixRefreshToken, "refresh token"},
	}
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	for _, p := range prefixes() {
		t.Run(p.prefix, func(t *testing.T) {
			t.Parallel()
			s, err := credential.NewSecret(p.prefix)
			if err != nil {
				t.Fatalf("NewSecret: got error %v, want nil", err)
			}
			re := regexp.MustCompile(`^` + p.prefix + `_([a-z2-7]{16})_[A-Za-z0-9_-]{43}$`)
			m := re.FindStringSubmatch(s.Text)
			if m == nil {
				t.Fatalf("Text: got %q, want a match for %s", s.Text, re)
			}
			if s.KeyID != m[1] {
				t.Errorf("KeyID: got %q, want %q", s.KeyID, m[1])
			}
			if !bytes.Equal(s.Hash, credential.HashSecret(s.Text)) || len(s.Hash) != 32 {
				t.Errorf("Hash: got %x, want the SHA-256 of Text %x", s.Hash, credential.HashSecret(s.Text))
			}
			if !credential.SecretMatches(s.Hash, s.Text) {
				t.Errorf("SecretMatches(Hash, Text): got false, want true")
			}
			keyID, err := credential.ParseSecret(p.prefix, s.Text)
			if keyID != s.KeyID || err != nil {
				t.Errorf("ParseSecret: got (%q, %v), want (%q, nil)", keyID, err, s.KeyID)
			}
			for _, other := range prefixes() {
				if other.prefix == p.prefix {
					continue
				}
				_, err := credential.ParseSecret(other.prefix, s.Text)
				var fe *credential.FormatError
				if !errors.As(err, &fe) || fe.Reason != "wrong prefix" || fe.Kind != other.kind {
					t.Errorf("ParseSecret(%s, %s secret): got %v, want a *FormatError %q", other.prefix, p.prefix, err, other.kind+" malformed: wrong prefix")
				}
			}
			again, err := credential.NewSecret(p.prefix)
			if err != nil {
				t.Fatalf("NewSecret: got error %v, want nil", err)
			}
			if again.Text == s.Text || again.KeyID == s.KeyID {
				t.Errorf("NewSecret twice: got %q and %q, want different secrets and key ids", s.Text, again.Text)
			}
		})
	}
}

func TestNewSecretUnknownPrefix(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "kpx", "KPK", "kpk_", "kp"} {
		t.Run(fmt.Sprintf("%q", prefix), func(t *testing.T) {
			t.Parallel()
			s, err := credential.NewSecret(prefix)
			if !errors.Is(err, credential.ErrInvalidArgument) || s.Text != "" {
				t.Errorf("NewSecret(%q): got (%q, %v), want an error wrapping ErrInvalidArgument", prefix, s.Text, err)
			}
			if _, err := credential.ParseSecret(prefix, "kpk_abcdefghijklmnop_"+strings.Repeat("A", 43)); !errors.Is(err, credential.ErrInvalidArgument) {
				t.Errorf("ParseSecret(%q, ...): got %v, want an error wrapping ErrInvalidArgument", prefix, err)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	const (
		keyID = "abcdefghijklmnop"
		// base64url of the bytes 0x00 to 0x1f.
		secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
		valid  = "kpk_" + keyID + "_" + secret
	)
	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for _, text := range []string{
			valid,
			"kpk_" + keyID + "__" + secret[1:], // '_' is base64url
			"kpk_" + keyID + "_-" + secret[1:], // so is '-'
			"kpk_" + "a2b3c4d5e6f7g2h7" + "_" + strings.Repeat("_", 42) + "8", // 32 bytes 0xff
		} {
			got, err := credential.ParseSecret(credential.PrefixAPIKey, text)
			if err != nil || got != text[4:20] {
				t.Errorf("ParseSecret(%q): got (%q, %v), want (%q, nil)", text, got, err, text[4:20])
			}
		}
	})

	const (
		empty     = "empty"
		prefix    = "wrong prefix"
		length    = "wrong length: want 64 characters"
		keyIDBad  = "key id not lowercase base32"
		separator = "missing separator after key id"
		alphabet  = "secret not base64url"
		canonical = "secret not canonical base64url"
	)
	tests := []struct {
		name string
		text string
		want string // Reason
	}{
		{"empty", "", empty},
		{"other prefix", "kpc_" + keyID + "_" + secret, prefix},
		{"upper-case prefix", "KPK_" + keyID + "_" + secret, prefix},
		{"prefix without separator", "kpk" + keyID + "_" + secret + "A", prefix},
		{"prefix only", "kpk", prefix},
		{"prefix and separator only", "kpk_", length},
		{"leading space", " " + valid, prefix},
		{"trailing space", valid + " ", length},
		{"trailing newline", valid + "\n", length},
		{"one character short", valid[:len(valid)-1], length},
		{"one character long", valid + "A", length},
		{"trailing separator", valid + "_", length},
		{"doubled separator after prefix", "kpk__" + keyID + "_" + secret, length},
		{"doubled separator after prefix, same length", "kpk__" + keyID[1:] + "_" + secret, keyIDBad},
		{"no separator after key id", "kpk_" + keyID + secret + "A", separator},
		{"dash instead of separator", "kpk_" + keyID + "-" + secret, separator},
		{"key id 15 characters", "kpk_" + keyID[1:] + "_" + secret + "A", keyIDBad},
		{"upper-case key id", "kpk_" + strings.ToUpper(keyID) + "_" + secret, keyIDBad},
		{"one upper-case letter in key id", "kpk_abcdefghijklmnoP_" + secret, keyIDBad},
		{"digit 0 in key id", "kpk_abcdefghijklmno0_" + secret, keyIDBad},
		{"digit 8 in key id", "kpk_abcdefghijklmno8_" + secret, keyIDBad},
		{"padding in key id", "kpk_abcdefghijklmno=_" + secret, keyIDBad},
		{"non-ASCII in key id", "kpk_abcdefghijklmné_" + secret, keyIDBad},
		{"standard base64 '+'", "kpk_" + keyID + "_+" + secret[1:], alphabet},
		{"standard base64 '/'", "kpk_" + keyID + "_/" + secret[1:], alphabet},
		{"padding in secret", "kpk_" + keyID + "_" + secret[:42] + "=", alphabet},
		{"space in secret", "kpk_" + keyID + "_" + secret[:20] + " " + secret[21:], alphabet},
		{"NUL in secret", "kpk_" + keyID + "_" + secret[:20] + "\x00" + secret[21:], alphabet},
		{"non-canonical trailing bits", "kpk_" + keyID + "_" + secret[:42] + "9", canonical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := credential.ParseSecret(credential.PrefixAPIKey, tt.text)
			var fe *credential.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("ParseSecret(%q): got (%q, %v), want a *FormatError", tt.text, got, err)
			}
			if got != "" {
				t.Errorf("ParseSecret(%q): got key id %q, want \"\"", tt.text, got)
			}
			if fe.Kind != "api key" || fe.Reason != tt.want {
				t.Errorf("ParseSecret(%q): got %+v, want {Kind: api key, Reason: %s}", tt.text, *fe, tt.want)
			}
			if got, want := err.Error(), "api key malformed: "+tt.want; got != want {
				t.Errorf("Error(): got %q, want %q", got, want)
			}
			assertNoLeak(t, err.Error(), tt.text)
		})
	}
}

// assertNoLeak fails when msg contains the secret part of text (anything after the
// key id) or any 8 characters of it.
func assertNoLeak(t *testing.T, msg, text string) {
	t.Helper()
	if len(text) <= 21 {
		return
	}
	part := text[21:]
	for i := 0; i+8 <= len(part); i++ {
		if strings.Contains(msg, part[i:i+8]) {
			t.Errorf("error %q contains %q from the secret part", msg, part[i:i+8])
			return
		}
	}
}

func TestSecretMatches(t *testing.T) {
	t.Parallel()
	s, err := credential.NewSecret(credential.PrefixRefreshToken)
	if err != nil {
		t.Fatalf("NewSecret: got error %v, want nil", err)
	}
	tests := []struct {
		name string
		hash []byte
		text string
		want bool
	}{
		{"right secret", s.Hash, s.Text, true},
		{"other secret", s.Hash, s.Text[:len(s.Text)-1] + "x", false},
		{"empty text", s.Hash, "", false},
		{"truncated hash", s.Hash[:31], s.Text, false},
		{"nil hash", nil, s.Text, false},
		{"nil hash, empty text", nil, "", false},
		{"hash of the empty text", credential.HashSecret(""), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := credential.SecretMatches(tt.hash, tt.text); got != tt.want {
				t.Errorf("SecretMatches: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSecretRedacted(t *testing.T) {
	t.Parallel()
	s, err := credential.NewSecret(credential.PrefixClientSecret)
	if err != nil {
		t.Fatalf("NewSecret: got error %v, want nil", err)
	}
	secretPart := s.Text[21:]
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("created", "secret", s)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("created", "secret", s)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&logged, format+"\n", s)
	}
	if strings.Contains(logged.String(), secretPart) {
		t.Errorf("printed and logged Secret: got %q, want no secret part", logged.String())
	}
	if want := "kpc_" + s.KeyID + "_[REDACTED]"; s.String() != want {
		t.Errorf("String(): got %q, want %q", s.String(), want)
	}
	if got := (credential.Secret{}).String(); got != "" {
		t.Errorf("zero Secret String(): got %q, want \"\"", got)
	}
	// The struct itself still marshals: redaction covers printing and logging only.
	if b, err := json.Marshal(s); err != nil || !strings.Contains(string(b), secretPart) {
		t.Errorf("json.Marshal: got (%s, %v), want the full secret", b, err)
	}
}

func FuzzParseSecret(f *testing.F) {
	for _, p := range prefixes() {
		s, err := credential.NewSecret(p.prefix)
		if err != nil {
			f.Fatalf("NewSecret: got error %v, want nil", err)
		}
		f.Add(s.Text)
	}
	f.Add("")
	f.Add("kpk_abcdefghijklmnop_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9")
	f.Add("kpk__bcdefghijklmnop_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	reasons := map[string]bool{
		"empty": true, "wrong prefix": true, "wrong length: want 64 characters": true,
		"key id not lowercase base32": true, "missing separator after key id": true,
		"secret not base64url": true, "secret not canonical base64url": true,
	}
	keyIDRe := regexp.MustCompile(`^[a-z2-7]{16}$`)
	f.Fuzz(func(t *testing.T, text string) {
		for _, p := range prefixes() {
			keyID, err := credential.ParseSecret(p.prefix, text)
			if err != nil {
				var fe *credential.FormatError
				if !errors.As(err, &fe) || fe.Kind != p.kind || !reasons[fe.Reason] {
					t.Fatalf("ParseSecret(%s, %q): got error %v, want a *FormatError with a fixed reason", p.prefix, text, err)
				}
				if keyID != "" {
					t.Fatalf("ParseSecret(%s, %q): got key id %q with an error", p.prefix, text, keyID)
				}
				continue
			}
			if len(text) != 64 || !strings.HasPrefix(text, p.prefix+"_") || text[20] != '_' ||
				keyID != text[4:20] || !keyIDRe.MatchString(keyID) {
				t.Fatalf("ParseSecret(%s, %q): accepted with key id %q", p.prefix, text, keyID)
			}
		}
	})
}
