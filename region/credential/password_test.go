package credential_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/keyplane/keyplane/region/credential"
)

// phc builds a PHC argon2id string from its parts, without validating them.
func phc(m, t, p string, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=19$m=%s,t=%s,p=%s$%s$%s", m, t, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// cheapHash hashes pw with argon2id at the given (small) cost, independently of the
// package under test.
func cheapHash(pw string, m, t uint32, p uint8, saltLen, keyLen int) string {
	salt := []byte(strings.Repeat("s", saltLen))
	key := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(keyLen))
	return phc(fmt.Sprint(m), fmt.Sprint(t), fmt.Sprint(p), salt, key)
}

func bytesOf(n int) []byte { return []byte(strings.Repeat("k", n)) }

func TestHashPassword(t *testing.T) {
	t.Parallel()
	// Each HashPassword or VerifyPassword at full cost takes tens of milliseconds
	// (more under -race), so one hash serves every subtest.
	const pw = "correct horse battery staple"
	encoded, err := credential.HashPassword(pw)
	if err != nil {
		t.Fatalf("HashPassword: got error %v, want nil", err)
	}
	t.Run("format", func(t *testing.T) {
		t.Parallel()
		re := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
		if !re.MatchString(encoded) {
			t.Errorf("HashPassword: got %q, want a match for %s", encoded, re)
		}
	})
	t.Run("right password", func(t *testing.T) {
		t.Parallel()
		ok, err := credential.VerifyPassword(encoded, pw)
		if !ok || err != nil {
			t.Errorf("VerifyPassword: got (%v, %v), want (true, nil)", ok, err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		ok, err := credential.VerifyPassword(encoded, pw+"!")
		if ok || err != nil {
			t.Errorf("VerifyPassword: got (%v, %v), want (false, nil)", ok, err)
		}
	})
	t.Run("current parameters need no rehash", func(t *testing.T) {
		t.Parallel()
		if got := credential.NeedsRehash(encoded); got {
			t.Errorf("NeedsRehash: got %v, want false", got)
		}
	})
	t.Run("fresh salt", func(t *testing.T) {
		t.Parallel()
		again, err := credential.HashPassword(pw)
		if err != nil {
			t.Fatalf("HashPassword: got error %v, want nil", err)
		}
		if again == encoded {
			t.Errorf("HashPassword twice: got the same encoding %q twice, want different salts", again)
		}
	})
}

func TestHashPasswordPolicy(t *testing.T) {
	t.Parallel()
	_, err := credential.HashPassword("short")
	var pe *credential.PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("HashPassword(short): got error %v, want a *PolicyError", err)
	}
	if got, want := err.Error(), "password too short: at least 12 characters"; got != want {
		t.Errorf("error: got %q, want %q", got, want)
	}
}

func TestVerifyPasswordEncodedParameters(t *testing.T) {
	t.Parallel()
	const pw = "pässwörd → ünïcode"
	tests := []struct {
		name    string
		encoded string
		pw      string
		want    bool
	}{
		{"small memory", cheapHash(pw, 64, 1, 1, 16, 32), pw, true},
		{"several lanes", cheapHash(pw, 256, 3, 4, 16, 32), pw, true},
		{"long salt and key", cheapHash(pw, 64, 1, 1, 64, 64), pw, true},
		{"short salt and key", cheapHash(pw, 64, 1, 1, 8, 16), pw, true},
		{"wrong password", cheapHash(pw, 64, 1, 1, 16, 32), "pässwörd → unicode", false},
		{"empty password", cheapHash(pw, 64, 1, 1, 16, 32), "", false},
		{"hash of the empty password", cheapHash("", 64, 1, 1, 16, 32), "", true},
		{"tampered hash", tamperKey(cheapHash(pw, 64, 1, 1, 16, 32)), pw, false},
		{"tampered memory", strings.Replace(cheapHash(pw, 64, 1, 1, 16, 32), "m=64", "m=72", 1), pw, false},
		{"tampered salt", strings.Replace(cheapHash(pw, 64, 1, 1, 16, 32), "c3Nz", "c3N0", 1), pw, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := credential.VerifyPassword(tt.encoded, tt.pw)
			if got != tt.want || err != nil {
				t.Errorf("VerifyPassword(%q): got (%v, %v), want (%v, nil)", tt.encoded, got, err, tt.want)
			}
		})
	}
}

// tamperKey flips the first character of the hash field of a PHC string, keeping it
// valid base64 of the same length.
func tamperKey(encoded string) string {
	i := strings.LastIndexByte(encoded, '$') + 1
	c := byte('A')
	if encoded[i] == 'A' {
		c = 'B'
	}
	return encoded[:i] + string(c) + encoded[i+1:]
}

func TestVerifyPasswordMalformed(t *testing.T) {
	t.Parallel()
	salt, key := bytesOf(16), bytesOf(32)
	valid := phc("64", "1", "1", salt, key)
	b64 := base64.RawStdEncoding.EncodeToString
	tests := []struct {
		name    string
		encoded string
	}{
		{"empty", ""},
		{"garbage", "not a hash"},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"argon2i", strings.Replace(valid, "$argon2id$", "$argon2i$", 1)},
		{"argon2d", strings.Replace(valid, "$argon2id$", "$argon2d$", 1)},
		{"upper-case algorithm", strings.Replace(valid, "$argon2id$", "$ARGON2ID$", 1)},
		{"version 16", strings.Replace(valid, "v=19", "v=16", 1)},
		{"no version", strings.Replace(valid, "$v=19", "", 1)},
		{"no leading dollar", valid[1:]},
		{"trailing dollar", valid + "$"},
		{"extra field", valid + "$AAAA"},
		{"trailing newline", valid + "\n"},
		{"line break inside the hash", strings.TrimSuffix(valid, b64(key)) + b64(key)[:20] + "\r\n" + b64(key)[20:]},
		{"leading space", " " + valid},
		{"truncated: no hash field", valid[:strings.LastIndexByte(valid, '$')]},
		{"truncated: hash cut mid-quantum", valid[:len(valid)-2]},
		{"truncated: empty hash", valid[:strings.LastIndexByte(valid, '$')+1]},
		{"parameters reordered", strings.Replace(valid, "m=64,t=1,p=1", "t=1,m=64,p=1", 1)},
		{"parameter missing", strings.Replace(valid, "m=64,t=1,p=1", "m=64,t=1", 1)},
		{"parameter repeated", strings.Replace(valid, "m=64,t=1,p=1", "m=64,t=1,p=1,p=1", 1)},
		{"key id parameter", strings.Replace(valid, "m=64,t=1,p=1", "m=64,t=1,p=1,keyid=AAAA", 1)},
		{"space in parameters", strings.Replace(valid, "m=64,t=1,p=1", "m=64, t=1,p=1", 1)},
		{"leading zero", phc("064", "1", "1", salt, key)},
		{"plus sign", phc("+64", "1", "1", salt, key)},
		{"negative", phc("-64", "1", "1", salt, key)},
		{"hex", phc("0x40", "1", "1", salt, key)},
		{"empty value", phc("", "1", "1", salt, key)},
		{"memory zero", phc("0", "1", "1", salt, key)},
		{"time zero", phc("64", "0", "1", salt, key)},
		{"lanes zero", phc("64", "1", "0", salt, key)},
		{"memory above 1 GiB", phc("1048577", "1", "1", salt, key)},
		{"memory overflows uint32", phc("4294967360", "1", "1", salt, key)},
		{"memory overflows uint64", phc("99999999999999999999", "1", "1", salt, key)},
		{"time above 20", phc("64", "21", "1", salt, key)},
		{"lanes above 16", phc("1024", "1", "17", salt, key)},
		{"lanes overflow uint8", phc("4096", "1", "257", salt, key)},
		{"memory below 8 KiB per lane", phc("15", "1", "2", salt, key)},
		{"key of 15 bytes", phc("64", "1", "1", salt, bytesOf(15))},
		{"key of 65 bytes", phc("64", "1", "1", salt, bytesOf(65))},
		{"salt of 7 bytes", phc("64", "1", "1", bytesOf(7), key)},
		{"salt of 65 bytes", phc("64", "1", "1", bytesOf(65), key)},
		{"padded salt", strings.Replace(valid, "$"+b64(salt)+"$", "$"+base64.StdEncoding.EncodeToString(salt)+"$", 1)},
		{"padded hash", strings.TrimSuffix(valid, b64(key)) + base64.StdEncoding.EncodeToString(key)},
		{"url-safe alphabet", strings.TrimSuffix(valid, b64(key)) + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32))},
		{"non-canonical trailing bits", strings.TrimSuffix(valid, b64(key)) + b64(key)[:42] + "l"},
		{"far too long", valid + strings.Repeat("A", 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ok, err := credential.VerifyPassword(tt.encoded, "correct horse battery staple")
			if ok || !errors.Is(err, credential.ErrMalformedHash) {
				t.Errorf("VerifyPassword(%.80q): got (%v, %v), want (false, ErrMalformedHash)", tt.encoded, ok, err)
			}
			if got := credential.NeedsRehash(tt.encoded); !got {
				t.Errorf("NeedsRehash(%.80q): got false, want true", tt.encoded)
			}
		})
	}
}

func TestVerifyPasswordTooLong(t *testing.T) {
	t.Parallel()
	// The most expensive parameters VerifyPassword accepts (1 GiB, 20 passes): were
	// the overlong password hashed, this test would take minutes.
	encoded := phc("1048576", "20", "16", bytesOf(16), bytesOf(64))
	pw := strings.Repeat("x", credential.MaxPasswordBytes+1)
	start := time.Now()
	ok, err := credential.VerifyPassword(encoded, pw)
	if ok || err != nil {
		t.Errorf("VerifyPassword(overlong): got (%v, %v), want (false, nil)", ok, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("VerifyPassword(overlong): took %v, want no hashing", d)
	}
}

func TestNeedsRehash(t *testing.T) {
	t.Parallel()
	salt, key := bytesOf(16), bytesOf(32)
	tests := []struct {
		name    string
		encoded string
		want    bool
	}{
		{"current", phc("19456", "2", "1", salt, key), false},
		{"more memory", phc("65536", "2", "1", salt, key), false},
		{"more passes", phc("19456", "3", "1", salt, key), false},
		{"more lanes", phc("19456", "2", "4", salt, key), false},
		{"longer salt and key", phc("19456", "2", "1", bytesOf(32), bytesOf(64)), false},
		{"maximum", phc("1048576", "20", "16", bytesOf(64), bytesOf(64)), false},
		{"less memory", phc("19455", "2", "1", salt, key), true},
		{"fewer passes", phc("19456", "1", "1", salt, key), true},
		{"more memory but fewer passes", phc("47104", "1", "1", salt, key), true},
		{"shorter salt", phc("19456", "2", "1", bytesOf(8), key), true},
		{"shorter key", phc("19456", "2", "1", salt, bytesOf(16)), true},
		{"malformed", "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA", true},
		{"empty", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := credential.NeedsRehash(tt.encoded); got != tt.want {
				t.Errorf("NeedsRehash(%q): got %v, want %v", tt.encoded, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	t.Parallel()
	const (
		short   = "too short: at least 12 characters"
		long    = "too long: at most 256 bytes"
		utf8Bad = "not valid UTF-8"
		control = "contains control characters"
	)
	tests := []struct {
		name string
		pw   string
		want string // reason; "" for acceptable
	}{
		{"12 ASCII characters", "abcdefghijkl", ""},
		{"spaces allowed", "correct horse battery staple", ""},
		{"11 ASCII characters", "abcdefghijk", short},
		{"empty", "", short},
		{"12 characters of 3 bytes", strings.Repeat("密", 12), ""},
		{"11 characters of 2 bytes (22 bytes)", strings.Repeat("é", 11), short},
		{"12 emoji", strings.Repeat("🔑", 12), ""},
		{"combining marks count as characters", strings.Repeat("e\u0301", 6), ""},
		{"256 bytes", strings.Repeat("a", 256), ""},
		{"257 bytes", strings.Repeat("a", 257), long},
		{"86 characters of 3 bytes (258 bytes)", strings.Repeat("密", 86), long},
		{"invalid UTF-8", "abcdefghijkl\xff", utf8Bad},
		{"truncated UTF-8 sequence", "abcdefghijkl\xe5\xaf", utf8Bad},
		{"surrogate encoded in UTF-8", "abcdefghijkl\xed\xa0\x80", utf8Bad},
		{"tab", "abcdef\tghijkl", control},
		{"newline", "abcdefghijkl\n", control},
		{"NUL", "abcdef\x00ghijkl", control},
		{"DEL", "abcdef\x7fghijkl", control},
		{"C1 control", "abcdef\u0085ghijkl", control},
		{"short with a control character", "abc\x01", control},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := credential.CheckPasswordPolicy(tt.pw)
			if tt.want == "" {
				if err != nil {
					t.Errorf("CheckPasswordPolicy: got %v, want nil", err)
				}
				return
			}
			var pe *credential.PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckPasswordPolicy: got %v, want a *PolicyError", err)
			}
			if pe.Reason != tt.want {
				t.Errorf("Reason: got %q, want %q", pe.Reason, tt.want)
			}
			if got, want := err.Error(), "password "+tt.want; got != want {
				t.Errorf("Error(): got %q, want %q", got, want)
			}
		})
	}
}

func FuzzVerifyPassword(f *testing.F) {
	salt, key := bytesOf(16), bytesOf(32)
	f.Add(phc("64", "1", "1", salt, key), "correct horse battery staple")
	f.Add(phc("19456", "2", "1", salt, key), "")
	f.Add(phc("1048576", "20", "16", salt, key), "x")
	f.Add("$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaA", "pw")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$", "pw")
	f.Add("", "")
	// A well-formed PHC prefix with its numbers; anything the package accepts must
	// match it, since the parser is strict about order and form.
	wellFormed := regexp.MustCompile(`^\$argon2id\$v=19\$m=([1-9][0-9]*),t=([1-9][0-9]*),p=([1-9][0-9]*)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$`)
	overlong := strings.Repeat("x", credential.MaxPasswordBytes+1)
	f.Fuzz(func(t *testing.T, encoded, pw string) {
		// An overlong password exercises the whole parser without ever hashing, so
		// any encoding the fuzzer invents costs microseconds.
		ok, err := credential.VerifyPassword(encoded, overlong)
		if ok {
			t.Fatalf("VerifyPassword(%q, overlong): got true, want false", encoded)
		}
		if err != nil && !errors.Is(err, credential.ErrMalformedHash) {
			t.Fatalf("VerifyPassword(%q, overlong): got error %v, want nil or ErrMalformedHash", encoded, err)
		}
		m := wellFormed.FindStringSubmatch(encoded)
		if m == nil {
			if err == nil {
				t.Fatalf("VerifyPassword(%q): accepted an encoding that is not well formed", encoded)
			}
			return
		}
		mem, _ := strconv.Atoi(m[1])
		passes, _ := strconv.Atoi(m[2])
		if err != nil || mem > 1024 || passes > 2 || len(m[1]) > 4 || len(m[2]) > 1 {
			return // malformed, or too costly to hash in a fuzz loop
		}
		if _, err2 := credential.VerifyPassword(encoded, pw); err2 != nil {
			t.Fatalf("VerifyPassword(%q, %q): got error %v after parsing succeeded", encoded, pw, err2)
		}
	})
}

// TestNewHashesUseProductionParamsByDefault: nothing in this test binary lowered the
// parameters (only other packages' TestMain do), so new hashes are at the constants
// and a cheaper hash needs a rehash.
func TestNewHashesUseProductionParamsByDefault(t *testing.T) {
	h, err := credential.HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h, "$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not at the production parameters", h)
	}
	if !credential.NeedsRehash(phc("64", "1", "1", bytesOf(16), bytesOf(32))) {
		t.Errorf("a 64 KiB hash does not need a rehash")
	}
}
