package region

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/keyplane/keyplane/schema"
)

var scimTypes = []string{"", "invalidFilter", "invalidPath", "invalidValue", "invalidSyntax", "mutability", "noTarget", "tooMany"}

// wantSCIMBadRequest fails unless err is a SCIM 400 with a known scimType.
func wantSCIMBadRequest(t *testing.T, what string, err error, types ...string) {
	t.Helper()
	var se *scimError
	if !errors.As(err, &se) || se.status != 400 || se.detail == "" {
		t.Fatalf("%s: %v (%T), want a SCIM 400", what, err, err)
	}
	if len(types) == 0 {
		types = scimTypes
	}
	if !slices.Contains(types, se.scimType) {
		t.Fatalf("%s: scimType %q, want one of %q", what, se.scimType, types)
	}
}

func fuzzUser() schema.SCIMUser {
	return schema.SCIMUser{ID: "2819c223-7f76-453a-919d-413861904646", UserName: "bjensen", ExternalID: "bj", DisplayName: "Babs", Email: "b@example.com",
		Active: true, CreatedAt: time.Unix(1e9, 0), UpdatedAt: time.Unix(1e9, 0), Data: map[string]any{
			"name":               map[string]any{"givenName": "Barbara", "familyName": "Jensen"},
			"emails":             []any{map[string]any{"value": "b@example.com", "type": "work", "primary": true}, map[string]any{"value": "babs@home.org", "type": "home"}},
			scimEnterpriseSchema: map[string]any{"department": "Tours", "manager": map[string]any{"value": "26118915-6090-4610-87e4-49d8ca9f808d"}},
		}}
}

// roundTrips checks that a stored user reads back as itself: rendering it and
// normalizing the rendering again gives the same user (the same version).
func roundTrips(t *testing.T, u schema.SCIMUser) {
	t.Helper()
	again, err := userFromBody(renderUser("https://iam.test/t/acme/scim/v2", u))
	if err != nil {
		t.Fatalf("the rendering of %+v does not normalize: %v", u, err)
	}
	again.ID, again.CreatedAt, again.UpdatedAt = u.ID, u.CreatedAt, u.UpdatedAt
	if again.Version() != u.Version() {
		t.Fatalf("round trip changed the user:\n%+v\n%+v", u, again)
	}
}

// FuzzSCIMFilter: whatever the filter, parsing never panics and refuses with a 400
// invalidFilter; a filter it accepts evaluates over Users without panicking, and "not
// (f)" matches exactly the users f does not.
func FuzzSCIMFilter(f *testing.F) {
	for _, s := range []string{`userName eq "bjensen"`, `name.familyName co "O'Malley"`, `userName sw "J"`, `title pr`,
		`meta.lastModified gt "2011-05-13T04:42:34Z"`, `title pr and userType eq "Employee"`,
		`userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")`,
		`userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")`,
		`emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "x"`, `active eq true`, `active gt 1`,
		`((((userName eq "a"))))`, `userName eq`, `emails[type eq "work"`, `x eq 1.5e3`, `meta.version eq null`} {
		f.Add(s)
	}
	users := []map[string]any{renderUser("https://iam.test", fuzzUser()), renderUser("https://iam.test", schema.SCIMUser{ID: "x", UserName: "y", Data: map[string]any{}})}
	f.Fuzz(func(t *testing.T, raw string) {
		e, err := parseSCIMFilter(scimUsers, raw)
		if err != nil {
			wantSCIMBadRequest(t, raw, err, "invalidFilter")
			return
		}
		_ = lookupOf(scimUsers, e)
		for _, u := range users {
			m := matches(scimScope{r: scimUsers}, e, u)
			negated, err := parseSCIMFilter(scimUsers, "not ("+raw+")")
			if err != nil {
				continue // too deep once wrapped
			}
			if matches(scimScope{r: scimUsers}, negated, u) == m {
				t.Fatalf("%q and its negation agree on %v", raw, u)
			}
		}
		if _, err := parseSCIMFilter(scimGroups, raw); err != nil {
			wantSCIMBadRequest(t, raw, err, "invalidFilter")
		}
	})
}

// FuzzSCIMPatch: whatever a PATCH body holds, decoding and applying it never panics,
// refuses only with a SCIM 400, never edits the stored user in place, and what it
// accepts is a user that round-trips (stored, it reads back as itself).
func FuzzSCIMPatch(f *testing.F) {
	for _, s := range []string{
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","value":{"emails":[{"value":"babs@jensen.org","type":"home"}],"nickName":"Babs"}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"u@microsoft.com"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"emails[type eq \"work\" and value ew \"example.com\"]"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"addresses[type eq \"work\"].streetAddress","value":"1010 Broadway"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"id","value":"x"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"name"}]}`,
		`{"Operations":[]}`, `[]`, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"emails[","value":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		stored := fuzzUser()
		version := stored.Version()
		body, err := decodeSCIMBody(b)
		if err != nil {
			wantSCIMBadRequest(t, "decode", err, "invalidSyntax")
			return
		}
		ops, err := decodePatch(body)
		if err != nil {
			wantSCIMBadRequest(t, "decodePatch", err)
			return
		}
		res := userEditable(stored)
		err = applyPatch(scimUsers, res, ops)
		if stored.Version() != version {
			t.Fatal("a PATCH edited the stored user in place")
		}
		if err != nil {
			wantSCIMBadRequest(t, "apply", err)
			return
		}
		u, err := userFromBody(res)
		if err != nil {
			wantSCIMBadRequest(t, "result", err)
			return
		}
		u.ID, u.CreatedAt, u.UpdatedAt = stored.ID, stored.CreatedAt, stored.UpdatedAt
		roundTrips(t, u)
	})
}

// FuzzSCIMBody: whatever a POST or PUT body holds, a User or Group is either refused
// with a SCIM 400 or accepted as one that round-trips.
func FuzzSCIMBody(f *testing.F) {
	for _, s := range []string{
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bjensen","externalId":"bjensen","name":{"formatted":"Ms. Barbara J Jensen III","familyName":"Jensen","givenName":"Barbara"}}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"u","active":"False","emails":[{"primary":true,"type":"work","value":"a@b.c"}],"meta":{"resourceType":"User"},"roles":[],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"1","manager":"m"}}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g","members":[{"value":"2819c223-7f76-453a-919d-413861904646","$ref":null}]}`,
		`{"userName":"a","USERNAME":"b"}`, `{"schemas":"x"}`, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","x509Certificates":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := decodeSCIMBody(b)
		if err != nil {
			wantSCIMBadRequest(t, "decode", err, "invalidSyntax")
			return
		}
		if u, err := userFromBody(body); err != nil {
			wantSCIMBadRequest(t, "user", err)
		} else {
			u.ID = "2819c223-7f76-453a-919d-413861904646"
			roundTrips(t, u)
		}
		if g, err := groupFromBody(body); err != nil {
			wantSCIMBadRequest(t, "group", err)
		} else {
			g.ID = "2819c223-7f76-453a-919d-413861904646"
			again, err := groupFromBody(renderGroup("https://iam.test", g))
			if err != nil {
				t.Fatalf("the rendering of %+v does not normalize: %v", g, err)
			}
			again.ID = g.ID
			if again.Version() != g.Version() {
				t.Fatalf("round trip changed the group:\n%+v\n%+v", g, again)
			}
		}
	})
}
