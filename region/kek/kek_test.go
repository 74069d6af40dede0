package kek_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/region/kek"
)

// testKey is a fixed 32-byte key so that redaction can be checked against known text.
var testKey = []byte("0123456789abcdefghijklmnopqrstuv")

func mustParse(t testing.TB, text string) *kek.KEK {
	t.Helper()
	k, err := kek.Parse(text)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return k
}

func newKEK(t testing.TB) *kek.KEK {
	t.Helper()
	text, err := kek.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return mustParse(t, text)
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	tests := []struct {
		name      string
		plaintext []byte
		ad        []byte
	}{
		{"empty", nil, nil},
		{"short", []byte("JBSWY3DPEHPK3PXP"), []byte("totp_seed/identity/42")},
		{"no AD", []byte("secret"), nil},
		{"binary", bytes.Repeat([]byte{0, 1, 2, 255}, 1000), []byte{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sealed := k.Seal(tt.plaintext, tt.ad)
			if got, want := len(sealed), len(tt.plaintext)+28; got != want {
				t.Errorf("len(sealed) = %d, want %d", got, want)
			}
			if len(tt.plaintext) > 4 && bytes.Contains(sealed, tt.plaintext) {
				t.Errorf("sealed blob contains the plaintext")
			}
			got, err := k.Open(sealed, tt.ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", got, tt.plaintext)
			}
		})
	}
}

func TestSealUsesFreshNonce(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	a := k.Seal([]byte("same"), nil)
	b := k.Seal([]byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Errorf("two seals of the same plaintext are equal: %x", a)
	}
	if bytes.Equal(a[:12], b[:12]) {
		t.Errorf("two seals share the nonce %x", a[:12])
	}
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	other := newKEK(t)
	ad := []byte("signing_key/eu-1-20260101-abcd1234")
	sealed := k.Seal([]byte("private key bytes"), ad)

	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		key    *kek.KEK
		sealed []byte
		ad     []byte
	}{
		{"wrong key", other, sealed, ad},
		{"wrong AD", k, sealed, []byte("signing_key/eu-1-20260101-ffffffff")},
		{"missing AD", k, sealed, nil},
		{"tampered nonce", k, flip(0), ad},
		{"tampered ciphertext", k, flip(12), ad},
		{"tampered tag", k, flip(len(sealed) - 1), ad},
		{"truncated tag", k, sealed[:len(sealed)-1], ad},
		{"nonce and tag only", k, sealed[:28], ad},
		{"shorter than nonce and tag", k, sealed[:27], ad},
		{"nonce only", k, sealed[:12], ad},
		{"empty", k, nil, ad},
		{"extended", k, append(bytes.Clone(sealed), 0), ad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.key.Open(tt.sealed, tt.ad)
			if !errors.Is(err, kek.ErrOpen) {
				t.Fatalf("Open error = %v, want ErrOpen", err)
			}
			if got != nil {
				t.Errorf("Open returned %q with an error, want nil", got)
			}
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	std := base64.StdEncoding.EncodeToString(testKey)
	tests := []struct {
		name string
		text string
	}{
		{"std padded", std},
		{"std raw", base64.RawStdEncoding.EncodeToString(testKey)},
		{"url padded", base64.URLEncoding.EncodeToString(testKey)},
		{"url raw", base64.RawURLEncoding.EncodeToString(testKey)},
		{"surrounding whitespace", " \t" + std + "\n"},
	}
	sum := sha256.Sum256(testKey)
	wantID := hex.EncodeToString(sum[:])[:12]
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k := mustParse(t, tt.text)
			if got := k.ID(); got != wantID {
				t.Errorf("ID() = %q, want %q", got, wantID)
			}
		})
	}
}

func TestParseURLAndStdAlphabetsAgree(t *testing.T) {
	t.Parallel()
	// 0xfb 0xff encodes to "+/" in the standard alphabet and "-_" in the URL one.
	key := bytes.Repeat([]byte{0xfb, 0xff}, 16)
	a := mustParse(t, base64.StdEncoding.EncodeToString(key))
	b := mustParse(t, base64.RawURLEncoding.EncodeToString(key))
	if a.ID() != b.ID() {
		t.Fatalf("IDs differ: %q vs %q", a.ID(), b.ID())
	}
	got, err := b.Open(a.Seal([]byte("x"), nil), nil)
	if err != nil || string(got) != "x" {
		t.Errorf("Open across alphabets = %q, %v; want \"x\", nil", got, err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		text    string
		wantMsg string
	}{
		{"empty", "", "got 0 bytes"},
		{"whitespace", "  \n", "got 0 bytes"},
		{"16 bytes", base64.StdEncoding.EncodeToString(testKey[:16]), "got 16 bytes"},
		{"31 bytes", base64.StdEncoding.EncodeToString(testKey[:31]), "got 31 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(testKey), 'w')), "got 33 bytes"},
		{"64 bytes hex", hex.EncodeToString(testKey), "got 48 bytes"},
		{"not base64", "this is not base64!!", "not valid base64"},
		{"mixed padding", base64.StdEncoding.EncodeToString(testKey)[:43] + "==", "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := kek.Parse(tt.text)
			if !errors.Is(err, kek.ErrInvalidKey) {
				t.Fatalf("Parse error = %v, want ErrInvalidKey", err)
			}
			if k != nil {
				t.Errorf("Parse returned a KEK with an error")
			}
			if !strings.Contains(err.Error(), "KEK must be 32 bytes, base64-encoded") {
				t.Errorf("error %q does not explain the expected format", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if tt.text != "" && strings.TrimSpace(tt.text) != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.text)) {
				t.Errorf("error %q echoes the KEK text", err)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	a, err := kek.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	b, err := kek.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if a == b {
		t.Errorf("two Generate calls returned the same key")
	}
	raw, err := base64.StdEncoding.DecodeString(a)
	if err != nil {
		t.Fatalf("Generate output %q is not standard base64: %v", a, err)
	}
	if got, want := len(raw), 32; got != want {
		t.Errorf("Generate output decodes to %d bytes, want %d", got, want)
	}
	if mustParse(t, a).ID() == mustParse(t, b).ID() {
		t.Errorf("two generated keys have the same ID")
	}
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	k := mustParse(t, base64.StdEncoding.EncodeToString(testKey))
	forbidden := []string{
		string(testKey),
		string(testKey[:8]),
		base64.StdEncoding.EncodeToString(testKey)[:12],
		base64.RawURLEncoding.EncodeToString(testKey)[:12],
		hex.EncodeToString(testKey)[:12],
		fmt.Sprintf("%v", testKey[:8])[1:20],
	}

	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	log.Info("loaded", "kek", k, "kek_value", *k)
	var loggedJSON bytes.Buffer
	slog.New(slog.NewJSONHandler(&loggedJSON, nil)).Info("loaded", "kek", k)

	tests := []struct {
		name string
		got  string
	}{
		{"pointer verbs", fmt.Sprintf("%v %s %+v %#v %x %X %q %d", k, k, k, k, k, k, k, k)},
		{"value verbs", fmt.Sprintf("%v %s %+v %#v %x %X %q %d", *k, *k, *k, *k, *k, *k, *k, *k)},
		{"in a struct", fmt.Sprintf("%+v %#v", struct{ K *kek.KEK }{k}, struct{ K kek.KEK }{*k})},
		{"in a slice", fmt.Sprint([]*kek.KEK{k})},
		{"String", k.String()},
		{"GoString", k.GoString()},
		{"slog text", logged.String()},
		{"slog JSON", loggedJSON.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range forbidden {
				if strings.Contains(tt.got, f) {
					t.Errorf("output %q contains key material %q", tt.got, f)
				}
			}
			if !strings.Contains(tt.got, "[redacted]") {
				t.Errorf("output %q does not say [redacted]", tt.got)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	k := newKEK(t)
	done := make(chan error)
	for i := range 8 {
		go func() {
			msg := []byte(fmt.Sprint("message ", i))
			var err error
			for range 100 {
				var got []byte
				got, err = k.Open(k.Seal(msg, nil), nil)
				if err == nil && !bytes.Equal(got, msg) {
					err = fmt.Errorf("got %q, want %q", got, msg)
				}
				if err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	k := mustParse(f, base64.StdEncoding.EncodeToString(testKey))
	sealed := k.Seal([]byte("seed"), []byte("ad"))
	f.Add(sealed, []byte("ad"))
	f.Add(sealed[:28], []byte("ad"))
	f.Add([]byte{}, []byte{})
	f.Add(bytes.Repeat([]byte{0}, 40), []byte(nil))
	f.Fuzz(func(t *testing.T, sealed, ad []byte) {
		got, err := k.Open(sealed, ad)
		if err != nil {
			if !errors.Is(err, kek.ErrOpen) {
				t.Fatalf("Open error %v does not wrap ErrOpen", err)
			}
			return
		}
		// Only a blob this KEK sealed can open; the fuzzer cannot forge GCM tags, so
		// success means it replayed the seed.
		if string(got) != "seed" || string(ad) != "ad" {
			t.Fatalf("Open(%x, %q) = %q, want an error", sealed, ad, got)
		}
	})
}

// TestRotation follows a KEK rotation: a node with the new key added second still
// seals with the old one; with the new key first it seals with the new one and opens
// both; Reseal moves old blobs to the new key, after which the old key can go.
func TestRotation(t *testing.T) {
	t.Parallel()
	oldText, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	newText, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	oldOnly, err := kek.Parse(oldText)
	if err != nil {
		t.Fatal(err)
	}
	added, err := kek.Parse(oldText + "\n" + newText + "\n")
	if err != nil {
		t.Fatal(err)
	}
	switched, err := kek.Parse("# new first\n" + newText + "\n\n" + oldText)
	if err != nil {
		t.Fatal(err)
	}
	newOnly, err := kek.Parse(newText)
	if err != nil {
		t.Fatal(err)
	}
	if added.ID() != oldOnly.ID() || switched.ID() != newOnly.ID() || oldOnly.ID() == newOnly.ID() {
		t.Fatalf("ids: old %s, added %s, switched %s, new %s", oldOnly.ID(), added.ID(), switched.ID(), newOnly.ID())
	}
	if !switched.Has(oldOnly.ID()) || !switched.Has(newOnly.ID()) || newOnly.Has(oldOnly.ID()) {
		t.Errorf("Has: switched holds both keys, new-only only its own")
	}
	ad := []byte("row 7")
	blob := oldOnly.Seal([]byte("seed"), ad)
	if _, err := newOnly.Open(blob, ad); !errors.Is(err, kek.ErrOpen) {
		t.Fatalf("the new key alone opened a blob of the old one: %v", err)
	}
	if _, err := oldOnly.Open(added.Seal([]byte("x"), ad), ad); err != nil {
		t.Errorf("with the new key second, a node still seals with the old key: %v", err)
	}
	same, changed, err := added.Reseal(blob, ad)
	if err != nil || changed || !bytes.Equal(same, blob) {
		t.Errorf("Reseal under the same primary = changed %v, err %v; want the blob unchanged", changed, err)
	}
	moved, changed, err := switched.Reseal(blob, ad)
	if err != nil || !changed {
		t.Fatalf("Reseal = changed %v, err %v; want a new blob", changed, err)
	}
	if got, err := newOnly.Open(moved, ad); err != nil || string(got) != "seed" {
		t.Errorf("the resealed blob does not open with the new key alone: %q, %v", got, err)
	}
	if _, err := newOnly.Open(moved, []byte("row 8")); !errors.Is(err, kek.ErrOpen) {
		t.Errorf("Reseal dropped the associated data: %v", err)
	}
	if _, _, err := newOnly.Reseal(blob, ad); !errors.Is(err, kek.ErrOpen) {
		t.Errorf("Reseal of a blob no key opens = %v, want ErrOpen", err)
	}
	if _, err := kek.Parse(oldText + "\n" + oldText); !errors.Is(err, kek.ErrInvalidKey) {
		t.Errorf("the same key twice = %v, want ErrInvalidKey", err)
	}
}
