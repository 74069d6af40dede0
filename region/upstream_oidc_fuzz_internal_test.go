package region

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/keyplane/keyplane/schema"
)

// FuzzMapUpstreamClaims: any ID token claim set maps without panicking; what is taken
// is a string claim of the configured name, bounded, email_verified is true only for
// true or "true", and an attribute is set only from a string claim.
func FuzzMapUpstreamClaims(f *testing.F) {
	f.Add(`{"sub":"u1","email":"a@b.example","email_verified":true,"name":"A","dept":"eng"}`)
	f.Add(`{"sub":"u1","email":["a@b"],"email_verified":"true","name":7,"dept":{"x":1}}`)
	f.Add(`{"email_verified":"yes","oid":"x"}`)
	f.Add(`[]`)
	p := schema.UpstreamProvider{ClaimEmail: "email", ClaimName: "name", ClaimExternalID: "oid", AttributeClaims: map[string]string{"department": "dept"}}
	f.Fuzz(func(t *testing.T, raw string) {
		var claims map[string]any
		if json.Unmarshal([]byte(raw), &claims) != nil {
			return
		}
		c := mapUpstreamClaims(p, "sub-x", claims)
		if c.Subject != "sub-x" {
			t.Fatalf("subject %q", c.Subject)
		}
		for name, got := range map[string]string{"email": c.Email, "name": c.Name, "oid": c.ExternalID} {
			want, _ := claims[name].(string)
			if len(want) > 1024 {
				want = ""
			}
			if got != want {
				t.Fatalf("claim %s: got %q want %q", name, got, want)
			}
		}
		switch v := claims["email_verified"]; {
		case c.EmailVerified && v != true && v != "true":
			t.Fatalf("email_verified %v taken as true", v)
		case !c.EmailVerified && (v == true || v == "true"):
			t.Fatalf("email_verified %v taken as false", v)
		}
		if d, ok := c.Attributes["department"]; ok {
			if s, isStr := claims["dept"].(string); !isStr || s != d || s == "" {
				t.Fatalf("department %v from %v", d, claims["dept"])
			}
		}
		if len(c.Attributes) > 1 {
			t.Fatalf("attributes %v", c.Attributes)
		}
	})
}

// TestTruncateText cuts on rune boundaries.
func TestTruncateText(t *testing.T) {
	for _, s := range []string{"", "abc", "ééééé", "a€b€c"} {
		for n := range len(s) + 2 {
			got := truncateText(s, n)
			if len(got) > max(n, 0) || !utf8.ValidString(got) || got != s[:len(got)] {
				t.Fatalf("truncateText(%q, %d) = %q", s, n, got)
			}
		}
	}
}
