package schema

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzPageToken: any token either decodes or is refused with a page_token error;
// tokens the store makes always decode back.
func FuzzPageToken(f *testing.F) {
	f.Add("")
	f.Add(encodeToken("acme"))
	f.Add(encodeToken(map[string]any{"at": time.Unix(1, 0), "id": "x"}))
	f.Add("!!!")
	f.Fuzz(func(t *testing.T, tok string) {
		var s string
		err := Page{Token: tok}.decode(&s)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "page_token" {
				t.Fatalf("decode %q: %v", tok, err)
			}
			return
		}
		if tok != "" {
			var back string
			if err := (Page{Token: encodeToken(s)}).decode(&back); err != nil || back != s {
				t.Fatalf("round trip of %q: %q %v", s, back, err)
			}
		}
	})
}

// FuzzCheckIdentity: validation never panics, and whatever it accepts satisfies the
// invariants the database constraints also enforce.
func FuzzCheckIdentity(f *testing.F) {
	f.Add("human", "Alice", "alice@example.com", "", "", int64(0))
	f.Add("agent", "bot", "", "0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b", "does things", int64(3600))
	f.Add("workload", "\x00", "a@b", "not-a-uuid", "", int64(-5))
	now := time.Now()
	f.Fuzz(func(t *testing.T, kind, name, email, owner, purpose string, expiresIn int64) {
		i := Identity{Kind: kind, DisplayName: name, Email: email, OwnerID: owner, Purpose: purpose}
		if expiresIn != 0 {
			i.ExpiresAt = now.Add(time.Duration(expiresIn) * time.Second)
		}
		if err := checkIdentity(i, now); err != nil {
			if fe := (*FieldError)(nil); !errors.As(err, &fe) {
				t.Fatalf("non-field error: %v", err)
			}
			return
		}
		if !isKind(kind) || strings.TrimSpace(name) == "" || utf8.RuneCountInString(name) > 200 || !utf8.ValidString(name) {
			t.Fatalf("accepted kind %q name %q", kind, name)
		}
		if kind != KindHuman && (owner == "" || i.ExpiresAt.IsZero() || purpose == "") {
			t.Fatalf("accepted an ungoverned non-human: %+v", i)
		}
		if !i.ExpiresAt.IsZero() && !i.ExpiresAt.After(now) {
			t.Fatalf("accepted an expiry in the past: %v", i.ExpiresAt)
		}
	})
}

func FuzzParseSuperRegion(f *testing.F) {
	f.Add("eu=europe-west1,europe-west2")
	f.Add("=")
	f.Add("x=,,")
	f.Fuzz(func(t *testing.T, s string) {
		name, regions, err := ParseSuperRegion(s)
		if err != nil {
			return
		}
		if name == "" {
			t.Fatalf("%q: empty name accepted", s)
		}
		for _, r := range regions {
			if r == "" {
				t.Fatalf("%q: empty region accepted", s)
			}
		}
	})
}

// FuzzNameKeyToken: a ListRoles / ListGroups token either decodes to a name position
// or is refused with a page_token error; tokens the store makes decode back.
func FuzzNameKeyToken(f *testing.F) {
	f.Add("")
	f.Add(encodeToken(nameKey{"docs-reader"}))
	f.Add(encodeToken(nameKey{"ünï\x00"}))
	f.Add(encodeToken(timeKey{time.Unix(1, 0), "x"}))
	f.Add("e30")
	f.Fuzz(func(t *testing.T, tok string) {
		var k nameKey
		err := Page{Token: tok}.decode(&k)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "page_token" {
				t.Fatalf("decode %q: %v", tok, err)
			}
			return
		}
		var back nameKey
		if err := (Page{Token: encodeToken(k)}).decode(&back); err != nil || back != k {
			t.Fatalf("round trip of %+v: %+v %v", k, back, err)
		}
	})
}
