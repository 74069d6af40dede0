package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// scimClient speaks SCIM over plain net/http, as an IdP does.
type scimClient struct {
	base  string // the node's /t/acme/scim/v2
	token string
}

// scimIssuer is acme's SCIM endpoint as its issuer names it (authConfig's IssuerBase):
// where meta.location and Location point.
const scimIssuer = "https://iam.test/t/acme/scim/v2"

type scimResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// scimFixture is acme with a SCIM client: a service account holding iam.scim.provision.
func scimFixture(t *testing.T) (*adminFixture, scimClient, string) {
	t.Helper()
	f := newAdminFixture(t, nil)
	id, tok := f.identityWith(t, "scim-client", "*", region.PermSCIMProvision)
	return f, scimClient{base: f.url + "/t/acme/scim/v2", token: tok}, id
}

func (s scimClient) do(t *testing.T, method, path, body string, headers ...string) scimResp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := scimResp{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object", method, path, b)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/scim+json" {
			t.Errorf("%s %s: Content-Type %q, want application/scim+json", method, path, ct)
		}
	}
	return r
}

// must checks the status and returns the body.
func (r scimResp) must(t *testing.T, status int) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r.body
}

// wantError checks a SCIM error: status, scimType ("" for none) and the error schema.
func (r scimResp) wantError(t *testing.T, status int, scimType string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	schemas, _ := r.body["schemas"].([]any)
	if len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" || r.body["status"] != fmt.Sprint(status) {
		t.Errorf("not a SCIM error with status %q: %s", fmt.Sprint(status), r.raw)
	}
	if got, _ := r.body["scimType"].(string); got != scimType {
		t.Errorf("scimType %q, want %q: %s", got, scimType, r.raw)
	}
	if d, _ := r.body["detail"].(string); d == "" {
		t.Errorf("no detail: %s", r.raw)
	}
}

// ids lists the ids of a ListResponse's resources, sorted.
func ids(t *testing.T, body map[string]any) []string {
	t.Helper()
	if s, _ := body["schemas"].([]any); len(s) != 1 || s[0] != "urn:ietf:params:scim:api:messages:2.0:ListResponse" {
		t.Fatalf("not a ListResponse: %v", body)
	}
	out := []string{}
	rs, _ := body["Resources"].([]any)
	for _, r := range rs {
		out = append(out, r.(map[string]any)["id"].(string))
	}
	slices.Sort(out)
	return out
}

func q(filter string) string { return "/Users?filter=" + url.QueryEscape(filter) }

func jget(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// TestSCIMUsersRFC7644 drives Users with the requests of RFC 7644: §3.3 creation,
// §3.4.1 retrieval with ETags, §3.4.2.2 filters, §3.5.1 replacement, §3.5.2 PATCH,
// §3.6 deletion.
func TestSCIMUsersRFC7644(t *testing.T) {
	t.Parallel()
	f, c, clientID := scimFixture(t)

	// §3.3
	r := c.do(t, "POST", "/Users", `{
     "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
     "userName":"bjensen",
     "externalId":"bjensen",
     "name":{
       "formatted":"Ms. Barbara J Jensen III",
       "familyName":"Jensen",
       "givenName":"Barbara"
     }
   }`)
	b := r.must(t, http.StatusCreated)
	id, _ := b["id"].(string)
	if id == "" || b["userName"] != "bjensen" || b["externalId"] != "bjensen" || b["displayName"] != "Ms. Barbara J Jensen III" || b["active"] != true ||
		jget(b, "name", "givenName") != "Barbara" {
		t.Fatalf("created %v", b)
	}
	loc := scimIssuer + "/Users/" + id
	if r.header.Get("Location") != loc || jget(b, "meta", "location") != loc || jget(b, "meta", "resourceType") != "User" ||
		r.header.Get("ETag") == "" || jget(b, "meta", "version") != r.header.Get("ETag") || jget(b, "meta", "created") == nil {
		t.Fatalf("meta %v, Location %q, ETag %q", b["meta"], r.header.Get("Location"), r.header.Get("ETag"))
	}
	v1 := r.header.Get("ETag")

	// §3.4.1 and §3.14: a read carries the same ETag; If-None-Match with it is 304.
	g := c.do(t, "GET", "/Users/"+id, "")
	if g.must(t, http.StatusOK)["userName"] != "bjensen" || g.header.Get("ETag") != v1 {
		t.Fatalf("get: %s, ETag %q want %q", g.raw, g.header.Get("ETag"), v1)
	}
	if r := c.do(t, "GET", "/Users/"+id, "", "If-None-Match", v1); r.status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.status)
	}
	c.do(t, "GET", "/Users/"+id+"?attributes=userName", "").must(t, http.StatusOK)
	if p := c.do(t, "GET", "/Users/"+id+"?attributes=name.familyName", "").must(t, http.StatusOK); p["userName"] != nil ||
		jget(p, "name", "familyName") != "Jensen" || jget(p, "name", "givenName") != nil || p["id"] != id {
		t.Fatalf("attributes=name.familyName: %v", p)
	}
	if p := c.do(t, "GET", "/Users/"+id+"?excludedAttributes=name,externalId", "").must(t, http.StatusOK); p["name"] != nil ||
		p["externalId"] != nil || p["userName"] != "bjensen" {
		t.Fatalf("excludedAttributes: %v", p)
	}

	// More users for the §3.4.2.2 filters.
	mk := func(body string) string {
		t.Helper()
		return c.do(t, "POST", "/Users", body).must(t, http.StatusCreated)["id"].(string)
	}
	omalley := mk(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"jomalley","title":"Tour Guide","userType":"Employee",
		"name":{"familyName":"O'Malley","givenName":"John"},
		"emails":[{"value":"john@example.com","type":"work","primary":true},{"value":"jo@home.example.org","type":"home"}]}`)
	intern := mk(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"jsmith","userType":"Intern",
		"emails":[{"value":"js@example.org","type":"work"}],"ims":[{"value":"js@foo.com","type":"xmpp"}]}`)
	for _, tt := range []struct {
		filter string
		want   []string
	}{
		{`userName eq "bjensen"`, []string{id}},
		{`UserName Eq "BJENSEN"`, []string{id}}, // attribute names, operators and userName ignore case
		{`name.familyName co "O'Malley"`, []string{omalley}},
		{`userName sw "J"`, sorted(omalley, intern)},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"`, sorted(omalley, intern)},
		{`title pr`, []string{omalley}},
		{`meta.lastModified gt "2011-05-13T04:42:34Z"`, sorted(id, omalley, intern)},
		{`meta.lastModified lt "2011-05-13T04:42:34Z"`, []string{}},
		{`title pr and userType eq "Employee"`, []string{omalley}},
		{`title pr or userType eq "Intern"`, sorted(omalley, intern)},
		{`userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")`, []string{omalley}},
		{`userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")`, []string{id}},
		{`userType eq "Employee" and (emails.type eq "work")`, []string{omalley}},
		{`userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`, []string{omalley}},
		{`emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]`, sorted(omalley, intern)},
		{`externalId eq "bjensen"`, []string{id}},
		{`externalId eq "BJENSEN"`, []string{}}, // externalId is caseExact
		{`id eq "` + intern + `"`, []string{intern}},
		{`active eq true`, sorted(id, omalley, intern)},
		{`emails eq "john@example.com"`, []string{omalley}},
	} {
		got := ids(t, c.do(t, "GET", q(tt.filter), "").must(t, http.StatusOK))
		if !slices.Equal(got, tt.want) {
			t.Errorf("filter %s: got %v, want %v", tt.filter, got, tt.want)
		}
	}

	// §3.4.2.3 and §3.4.2.4: sorted, paged.
	page := c.do(t, "GET", "/Users?sortBy=userName&sortOrder=descending&startIndex=2&count=1", "").must(t, http.StatusOK)
	if page["totalResults"] != float64(3) || page["startIndex"] != float64(2) || page["itemsPerPage"] != float64(1) ||
		jget(page, "Resources", "0", "userName") != "jomalley" {
		t.Fatalf("page: %v", page)
	}

	// §3.5.2.1: add without a path.
	r = c.do(t, "PATCH", "/Users/"+id, `{ "schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations":[{
       "op":"add",
       "value":{
         "emails":[
           {
             "value":"babs@jensen.org",
             "type":"home"
           }
         ],
         "nickName":"Babs"
     }}]
   }`, "If-Match", v1)
	b = r.must(t, http.StatusOK)
	if b["nickName"] != "Babs" || jget(b, "emails", "0", "value") != "babs@jensen.org" || r.header.Get("ETag") == v1 {
		t.Fatalf("patch add: %v (ETag %q)", b, r.header.Get("ETag"))
	}
	// A PATCH with the old version is refused: 412, and nothing changes.
	c.do(t, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","path":"nickName","value":"Barb"}]}`, "If-Match", v1).wantError(t, http.StatusPreconditionFailed, "")
	if c.do(t, "GET", "/Users/"+id, "").must(t, http.StatusOK)["nickName"] != "Babs" {
		t.Fatal("a refused If-Match wrote")
	}
	// §3.5.2.3: replace an address selected by a filter, then one sub-attribute of it.
	c.do(t, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"addresses",
		"value":[{"type":"work","streetAddress":"100 Universal City Plaza","locality":"Hollywood","region":"CA","postalCode":"91608","country":"USA"}]}]}`).
		must(t, http.StatusOK)
	b = c.do(t, "PATCH", "/Users/"+id, `{ "schemas":
       ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations": [{
       "op":"replace",
       "path":"addresses[type eq \"work\"]",
       "value":
       {
         "type":"work",
         "streetAddress":"911 Universal City Plaza",
         "locality":"Hollywood",
         "region":"CA",
         "postalCode":"91608",
         "country":"US",
         "formatted":"911 Universal City Plaza\nHollywood, CA 91608 US",
         "primary":true
       }
     }]
   }`).must(t, http.StatusOK)
	if jget(b, "addresses", "0", "streetAddress") != "911 Universal City Plaza" || jget(b, "addresses", "0", "primary") != true {
		t.Fatalf("replace address: %v", b["addresses"])
	}
	b = c.do(t, "PATCH", "/Users/"+id, `{ "schemas":
       ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations": [{
       "op":"replace",
       "path":"addresses[type eq \"work\"].streetAddress",
       "value":"1010 Broadway Ave"
     }]
   }`).must(t, http.StatusOK)
	if jget(b, "addresses", "0", "streetAddress") != "1010 Broadway Ave" || jget(b, "addresses", "0", "locality") != "Hollywood" {
		t.Fatalf("replace street: %v", b["addresses"])
	}
	// §3.5.2.2: remove values selected by a filter; a filter selecting nothing is noTarget.
	c.do(t, "PATCH", "/Users/"+omalley, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations":[{"op":"remove","path":"emails[type eq \"work\" and value ew \"example.com\"]"}]}`).must(t, http.StatusOK)
	if got := ids(t, c.do(t, "GET", q(`emails eq "john@example.com"`), "").must(t, http.StatusOK)); len(got) != 0 {
		t.Fatalf("removed email still found: %v", got)
	}
	c.do(t, "PATCH", "/Users/"+omalley, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations":[{"op":"remove","path":"emails[type eq \"work\"]"}]}`).wantError(t, http.StatusBadRequest, "noTarget")

	// §3.5.1: PUT replaces; readOnly values in it are ignored.
	b = c.do(t, "PUT", "/Users/"+id, `{
     "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
     "id":"`+id+`",
     "userName":"bjensen",
     "externalId":"bjensen",
     "name":{
       "formatted":"Ms. Barbara J Jensen III",
       "familyName":"Jensen",
       "givenName":"Barbara",
       "middleName":"Jane"
     },
     "roles":[],
     "emails":[
       {
           "value":"bjensen@example.com"
       },
       {
           "value":"babs@jensen.org"
       }
     ],
     "meta": {"resourceType":"User","created":"2011-08-08T04:56:22Z","version":"W/\"a330bc54f0671c9\""}
   }`).must(t, http.StatusOK)
	if b["nickName"] != nil || b["addresses"] != nil || jget(b, "name", "middleName") != "Jane" || jget(b, "meta", "created") == "2011-08-08T04:56:22Z" {
		t.Fatalf("put: %v", b)
	}
	// The primary email (here the first) is the identity's email.
	gi, err := f.tenantAd.GetIdentity(context.Background(), connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if gi.Msg.Identity.Email != "bjensen@example.com" || gi.Msg.Identity.Kind != keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN {
		t.Fatalf("identity: %v", gi.Msg.Identity)
	}

	// Every write is audited with the SCIM client as the actor.
	evs, err := f.tenantAd.ListAuditEvents(context.Background(), connect.NewRequest(&keyplanev1.ListAuditEventsRequest{TenantId: "acme",
		TargetKind: "identity", TargetId: id, PageSize: 100}))
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs.Msg.Events {
		if e.Actor != "identity:"+clientID {
			t.Errorf("event %s by %s, want the SCIM client", e.Action, e.Actor)
		}
		actions = append(actions, e.Action)
	}
	if !slices.Contains(actions, "identity.create") || !slices.Contains(actions, "identity.update") {
		t.Errorf("audit actions %v", actions)
	}

	// §3.6: DELETE, then the User is gone; the identity stays, disabled.
	if r := c.do(t, "DELETE", "/Users/"+id, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	c.do(t, "GET", "/Users/"+id, "").wantError(t, http.StatusNotFound, "")
	c.do(t, "DELETE", "/Users/"+id, "").wantError(t, http.StatusNotFound, "")
	gi, err = f.tenantAd.GetIdentity(context.Background(), connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: id}))
	if err != nil || gi.Msg.Identity.Status != keyplanev1.Status_STATUS_DISABLED {
		t.Fatalf("deleted User's identity: %v %v", gi, err)
	}
	// A rehire under the same userName and externalId is a new User.
	again := mk(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bjensen","externalId":"bjensen","emails":[{"value":"bjensen@example.com"}]}`)
	if again == id {
		t.Fatal("the rehire got the deleted User's id")
	}
}

// TestSCIMGroupsRFC7644 drives Groups with RFC 7644's member PATCH examples (§3.5.2.1
// add, §3.5.2.2 remove by filter and remove all, §3.5.2.3 replace).
func TestSCIMGroupsRFC7644(t *testing.T) {
	t.Parallel()
	_, c, _ := scimFixture(t)
	user := func(name string) string {
		t.Helper()
		return c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).
			must(t, http.StatusCreated)["id"].(string)
	}
	babs, mandy, kim := user("bjensen"), user("mandy"), user("kim")
	r := c.do(t, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Tour Guides",
		"members":[{"value":"`+mandy+`","$ref":"`+c.base+`/Users/`+mandy+`","display":"Mandy Pepperidge"}]}`)
	b := r.must(t, http.StatusCreated)
	gid := b["id"].(string)
	if r.header.Get("Location") != scimIssuer+"/Groups/"+gid || jget(b, "members", "0", "value") != mandy || jget(b, "meta", "resourceType") != "Group" {
		t.Fatalf("created group %v", b)
	}
	members := func() []string {
		t.Helper()
		var out []string
		for _, m := range asAnyList(c.do(t, "GET", "/Groups/"+gid, "").must(t, http.StatusOK)["members"]) {
			out = append(out, m.(map[string]any)["value"].(string))
		}
		slices.Sort(out)
		return out
	}
	patch := func(body string) {
		t.Helper()
		c.do(t, "PATCH", "/Groups/"+gid, body).must(t, http.StatusOK)
	}
	patch(`{ "schemas":
       ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations":[
       {
        "op":"add",
        "path":"members",
        "value":[
         {
           "display": "Babs Jensen",
           "$ref":
   "` + c.base + `/Users/` + babs + `",
           "value": "` + babs + `"
         }
        ]
       }
     ]
   }`)
	if got := members(); !slices.Equal(got, sorted(babs, mandy)) {
		t.Fatalf("after add: %v", got)
	}
	patch(`{ "schemas":
       ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations":[{
       "op":"remove",
       "path":"members[value eq \"` + babs + `\"]"
     }]
   }`)
	if got := members(); !slices.Equal(got, []string{mandy}) {
		t.Fatalf("after remove by filter: %v", got)
	}
	patch(`{ "schemas":
       ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations": [
       {
         "op":"remove",
         "path":"members"
       },
       {
         "op":"add",
         "path":"members",
         "value":[
         {
           "display": "Babs Jensen",
           "$ref": "` + c.base + `/Users/` + babs + `",
           "value": "` + babs + `"
         },
         {
           "display": "James Smith",
           "$ref": "` + c.base + `/Users/` + kim + `",
           "value": "` + kim + `"
         }]
       }
     ]
   }`)
	if got := members(); !slices.Equal(got, sorted(babs, kim)) {
		t.Fatalf("after remove all and add: %v", got)
	}
	patch(`{ "schemas":
     ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
     "Operations": [{
       "op":"replace",
       "path":"members",
       "value":[
         {
           "display": "Babs Jensen",
           "$ref": "` + c.base + `/Users/` + babs + `",
           "value": "` + babs + `"
         }
       ]
     }]
   }`)
	if got := members(); !slices.Equal(got, []string{babs}) {
		t.Fatalf("after replace: %v", got)
	}
	// Removing a member that is not one: noTarget, nothing written.
	c.do(t, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"remove","path":"members[value eq \"`+kim+`\"]"}]}`).wantError(t, http.StatusBadRequest, "noTarget")
	// A member that is no User of the tenant: invalidValue, nothing written.
	c.do(t, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"add","path":"members","value":[{"value":"`+kim+`"},{"value":"00000000-0000-4000-8000-000000000999"}]}]}`).
		wantError(t, http.StatusBadRequest, "invalidValue")
	if got := members(); !slices.Equal(got, []string{babs}) {
		t.Fatalf("a refused patch wrote: %v", got)
	}
	// Filters on Groups; a deleted User leaves the group.
	if got := ids(t, c.do(t, "GET", "/Groups?filter="+url.QueryEscape(`displayName eq "tour guides"`), "").must(t, http.StatusOK)); !slices.Equal(got, []string{gid}) {
		t.Fatalf("group filter: %v", got)
	}
	if got := ids(t, c.do(t, "GET", "/Groups?filter="+url.QueryEscape(`members[value eq "`+babs+`"]`), "").must(t, http.StatusOK)); !slices.Equal(got, []string{gid}) {
		t.Fatalf("group member filter: %v", got)
	}
	c.do(t, "DELETE", "/Users/"+babs, "")
	if got := members(); len(got) != 0 {
		t.Fatalf("a deleted User is still a member: %v", got)
	}
	if r := c.do(t, "DELETE", "/Groups/"+gid, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete group: %d %s", r.status, r.raw)
	}
	c.do(t, "GET", "/Groups/"+gid, "").wantError(t, http.StatusNotFound, "")
}

func asAnyList(v any) []any { l, _ := v.([]any); return l }

// TestSCIMEntraID replays what the Microsoft Entra provisioning service sends
// (learn.microsoft.com, "Tutorial: Develop and plan provisioning for a SCIM endpoint"):
// the userName query before a create, its create with the enterprise extension,
// capitalised ops, "False" as a string, path-less replace, the manager by id,
// members added and removed by value lists with a null $ref, the Microsoft schema URN
// and excludedAttributes=members.
func TestSCIMEntraID(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	const userName = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
	if got := ids(t, c.do(t, "GET", q(`userName eq "`+userName+`"`), "").must(t, http.StatusOK)); len(got) != 0 {
		t.Fatalf("before create: %v", got)
	}
	mgr := c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"Manager_1@testuser.com","active":true}`).
		must(t, http.StatusCreated)["id"].(string)
	b := c.do(t, "POST", "/Users", `{
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
    "userName": "`+userName+`",
    "active": true,
    "emails": [{
        "primary": true,
        "type": "work",
        "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
    }],
    "meta": {
        "resourceType": "User"
    },
    "name": {
        "formatted": "givenName familyName",
        "familyName": "familyName",
        "givenName": "givenName"
    },
    "roles": [],
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "701984",
        "department": "Tour Operations"
    }
}`).must(t, http.StatusCreated)
	id := b["id"].(string)
	schemas := asAnyList(b["schemas"])
	if !slices.Contains(schemas, any("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")) ||
		jget(b, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "department") != "Tour Operations" {
		t.Fatalf("created %v", b)
	}
	if got := ids(t, c.do(t, "GET", q(`externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`), "").must(t, http.StatusOK)); !slices.Equal(got, []string{id}) {
		t.Fatalf("by externalId: %v", got)
	}
	if got := ids(t, c.do(t, "GET", q(`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations"`), "").must(t, http.StatusOK)); !slices.Equal(got, []string{id}) {
		t.Fatalf("by department: %v", got)
	}
	// Update User [Multi-valued properties], [Single-valued properties], the manager.
	b = c.do(t, "PATCH", "/Users/"+id, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [
            {
            "op": "Replace",
            "path": "emails[type eq \"work\"].value",
            "value": "updatedEmail@microsoft.com"
            },
            {
            "op": "Replace",
            "path": "name.familyName",
            "value": "updatedFamilyName"
            },
            {
            "op": "Replace",
            "path": "userName",
            "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
            },
            {
            "op": "Add",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "value": "`+mgr+`"
            },
            {
            "op": "Add",
            "path": "phoneNumbers[type eq \"mobile\"].value",
            "value": "+1 555 0100"
            }
    ]
}`).must(t, http.StatusOK)
	if jget(b, "emails", "0", "value") != "updatedEmail@microsoft.com" || jget(b, "name", "familyName") != "updatedFamilyName" ||
		b["userName"] != "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" ||
		jget(b, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "manager", "value") != mgr ||
		jget(b, "phoneNumbers", "0", "type") != "mobile" {
		t.Fatalf("patched %v", b)
	}
	// A manager that is no User is refused before anything is written.
	c.do(t, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
		{"op":"Replace","path":"displayName","value":"changed"},
		{"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"00000000-0000-4000-8000-000000000001"}]}`).
		wantError(t, http.StatusBadRequest, "invalidValue")
	if c.do(t, "GET", "/Users/"+id, "").must(t, http.StatusOK)["displayName"] == "changed" {
		t.Fatal("a refused patch wrote")
	}
	// Path-less replace with an object value.
	b = c.do(t, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","value":{
		"displayName":"Updated Name","name.givenName":"Updated","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"42"}}]}`).
		must(t, http.StatusOK)
	if b["displayName"] != "Updated Name" || jget(b, "name", "givenName") != "Updated" ||
		jget(b, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "employeeNumber") != "42" {
		t.Fatalf("path-less replace: %v", b)
	}

	// Groups: create with the Microsoft schema URN, query excluding members, add and
	// remove members by value lists.
	g := c.do(t, "POST", "/Groups", `{
    "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
    "displayName": "displayName",
    "meta": {
        "resourceType": "Group"
    },
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
    ]
}`).must(t, http.StatusCreated)
	gid := g["id"].(string)
	lg := c.do(t, "GET", "/Groups?excludedAttributes=members&filter="+url.QueryEscape(`displayName eq "displayName"`), "").must(t, http.StatusOK)
	if !slices.Equal(ids(t, lg), []string{gid}) || jget(lg, "Resources", "0", "members") != nil {
		t.Fatalf("group query: %v", lg)
	}
	c.do(t, "PATCH", "/Groups/"+gid, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "Add",
        "path": "members",
        "value": [{
            "$ref": null,
            "value": "`+id+`"
        }]
    }]
}`).must(t, http.StatusOK)
	if m := jget(c.do(t, "GET", "/Groups/"+gid, "").must(t, http.StatusOK), "members", "0", "value"); m != id {
		t.Fatalf("member %v", m)
	}
	c.do(t, "PATCH", "/Groups/"+gid, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "Remove",
        "path": "members",
        "value": [{
            "$ref": null,
            "value": "`+id+`"
        }]
    }]
}`).must(t, http.StatusOK)
	if m := asAnyList(c.do(t, "GET", "/Groups/"+gid, "").must(t, http.StatusOK)["members"]); len(m) != 0 {
		t.Fatalf("members after remove: %v", m)
	}
	c.do(t, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"Replace","path":"displayName","value":"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}]}`).must(t, http.StatusOK)

	// Disable User: "False" as a string. The identity is disabled.
	b = c.do(t, "PATCH", "/Users/"+id, `{
    "Operations": [
        {
            "op": "Replace",
            "path": "active",
            "value": "False"
        }
    ],
    "schemas": [
        "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    ]
}`).must(t, http.StatusOK)
	if b["active"] != false {
		t.Fatalf("after disable: %v", b)
	}
	gi, err := f.tenantAd.GetIdentity(context.Background(), connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: "acme", Id: id}))
	if err != nil || gi.Msg.Identity.Status != keyplanev1.Status_STATUS_DISABLED {
		t.Fatalf("identity after SCIM disable: %v %v", gi, err)
	}
	if got := ids(t, c.do(t, "GET", q(`active eq false`), "").must(t, http.StatusOK)); !slices.Equal(got, []string{id}) {
		t.Fatalf("active eq false: %v", got)
	}
	if r := c.do(t, "DELETE", "/Users/"+id, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
}

// TestSCIMOkta replays Okta's SCIM 2.0 requests (developer.okta.com, "SCIM 2.0
// protocol reference"): the lookup with startIndex and count, a create with a password
// and an empty groups list, a full PUT with id and meta, the deactivation PATCH
// {"op":"replace","value":{"active":false}}, and group push (create, rename with the
// id repeated, members added and removed by filter, delete).
func TestSCIMOkta(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	l := c.do(t, "GET", "/Users?filter="+url.QueryEscape(`userName eq "test.user@okta.local"`)+"&startIndex=1&count=100", "").must(t, http.StatusOK)
	if l["totalResults"] != float64(0) {
		t.Fatalf("lookup %v", l)
	}
	b := c.do(t, "POST", "/Users", `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "test.user@okta.local",
  "name": {
    "givenName": "Test",
    "familyName": "User"
  },
  "emails": [{
    "primary": true,
    "value": "test.user@okta.local",
    "type": "work"
  }],
  "displayName": "Test User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "groups": [],
  "password": "1mz050nq",
  "active": true
}`).must(t, http.StatusCreated)
	id := b["id"].(string)
	if b["password"] != nil || b["locale"] != "en-US" {
		t.Fatalf("created %v", b)
	}
	b = c.do(t, "PUT", "/Users/"+id, `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": "`+id+`",
  "userName": "test.user@okta.local",
  "name": {
    "givenName": "Another",
    "familyName": "User"
  },
  "emails": [{
    "primary": true,
    "value": "test.user@okta.local",
    "type": "work"
  }],
  "displayName": "Another User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "groups": [],
  "active": true,
  "meta": {
    "resourceType": "User",
    "created": "2019-08-24T02:08:22.000Z",
    "lastModified": "2019-08-24T02:08:22.000Z"
  }
}`).must(t, http.StatusOK)
	if b["displayName"] != "Another User" || jget(b, "name", "givenName") != "Another" {
		t.Fatalf("put %v", b)
	}

	// A user with tokens: after the deactivation PATCH they no longer validate.
	email := "test.user@okta.local"
	if _, err := f.op.SetPassword(context.Background(), connect.NewRequest(&keyplanev1.SetPasswordRequest{TenantId: "acme", IdentityId: id, Password: "a long enough password"})); err != nil {
		t.Fatal(err)
	}
	auth := keyplanev1connect.NewAuthServiceClient(http.DefaultClient, f.url)
	lr, err := login(context.Background(), auth, email, "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	validate := func() bool {
		t.Helper()
		v, err := auth.ValidateToken(context.Background(), connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: lr.Token.AccessToken}))
		if err != nil {
			t.Fatal(err)
		}
		return v.Msg.Active
	}
	if !validate() {
		t.Fatal("the user's token is inactive before deactivation")
	}
	b = c.do(t, "PATCH", "/Users/"+id, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "replace",
        "value": {
            "active": false
        }
    }]
}`).must(t, http.StatusOK)
	if b["active"] != false || validate() {
		t.Fatalf("after deactivation: active %v, token still valid %v", b["active"], validate())
	}
	// A PUT that leaves active out keeps the user disabled; active true enables it.
	if c.do(t, "PUT", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"test.user@okta.local"}`).
		must(t, http.StatusOK)["active"] != false {
		t.Fatal("a PUT without active re-enabled a leaver")
	}
	if c.do(t, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":true}}]}`).must(t, http.StatusOK)["active"] != true {
		t.Fatal("reactivation")
	}

	// Group push.
	g := c.do(t, "POST", "/Groups", `{
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
    "displayName": "Test SCIMv2",
    "members": []
}`).must(t, http.StatusCreated)
	gid := g["id"].(string)
	if got := ids(t, c.do(t, "GET", "/Groups?filter="+url.QueryEscape(`displayName eq "Test SCIMv2"`)+"&startIndex=1&count=100", "").must(t, http.StatusOK)); !slices.Equal(got, []string{gid}) {
		t.Fatalf("group lookup %v", got)
	}
	g = c.do(t, "PATCH", "/Groups/"+gid, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "replace",
        "value": {
            "id": "`+gid+`",
            "displayName": "Test SCIMv2 renamed"
        }
    }]
}`).must(t, http.StatusOK)
	if g["displayName"] != "Test SCIMv2 renamed" {
		t.Fatalf("rename %v", g)
	}
	g = c.do(t, "PATCH", "/Groups/"+gid, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "add",
        "path": "members",
        "value": [{
            "value": "`+id+`",
            "display": "test.user@okta.local"
        }]
    }]
}`).must(t, http.StatusOK)
	if jget(g, "members", "0", "value") != id {
		t.Fatalf("add member %v", g)
	}
	g = c.do(t, "PATCH", "/Groups/"+gid, `{
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{
        "op": "remove",
        "path": "members[value eq \"`+id+`\"]"
    }]
}`).must(t, http.StatusOK)
	if len(asAnyList(g["members"])) != 0 {
		t.Fatalf("remove member %v", g)
	}
	if r := c.do(t, "DELETE", "/Groups/"+gid, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete group %d %s", r.status, r.raw)
	}
}

// TestSCIMBadInput: every bad request gets the SCIM error with its status and
// scimType, and writes nothing.
func TestSCIMBadInput(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	id := c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice","externalId":"a-1",
		"emails":[{"value":"alice@example.com","primary":true}]}`).must(t, http.StatusCreated)["id"].(string)
	before := c.do(t, "GET", "/Users/"+id, "")
	const patch = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[%s]}`
	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],%s}`
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		scimType                 string
	}{
		{"malformed filter", "GET", q(`userName eq`), "", nil, 400, "invalidFilter"},
		{"unbalanced filter", "GET", q(`(userName eq "a"`), "", nil, 400, "invalidFilter"},
		{"unknown filter attribute", "GET", q(`shoeSize gt 4`), "", nil, 400, "invalidFilter"},
		{"gt on a boolean", "GET", q(`active gt true`), "", nil, 400, "invalidFilter"},
		{"filter on a complex attribute", "GET", q(`name eq "x"`), "", nil, 400, "invalidFilter"},
		{"count past the limit", "GET", "/Users?count=1001", "", nil, 400, "tooMany"},
		{"count not a number", "GET", "/Users?count=ten", "", nil, 400, "invalidValue"},
		{"unknown sortBy", "GET", "/Users?sortBy=shoeSize", "", nil, 400, "invalidPath"},
		{"unknown attributes", "GET", "/Users/" + id + "?attributes=shoeSize", "", nil, 400, "invalidPath"},
		{"unknown attribute in a create", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob","shoeSize":44`), nil, 400, "invalidValue"},
		{"missing userName", "POST", "/Users", fmt.Sprintf(user, `"displayName":"Bob"`), nil, 400, "invalidValue"},
		{"wrong type", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob","active":"maybe"`), nil, 400, "invalidValue"},
		{"two primary emails", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob","emails":[{"value":"a@b.c","primary":true},{"value":"d@e.f","primary":true}]`), nil, 400, "invalidValue"},
		{"no core schema", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"bob"}`, nil, 400, "invalidValue"},
		{"duplicate userName, other case", "POST", "/Users", fmt.Sprintf(user, `"userName":"ALICE"`), nil, 409, "uniqueness"},
		{"duplicate externalId", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob","externalId":"a-1"`), nil, 409, "uniqueness"},
		{"duplicate email", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob","emails":[{"value":"ALICE@example.com"}]`), nil, 409, "uniqueness"},
		{"not JSON", "POST", "/Users", `{"userName":`, nil, 400, "invalidSyntax"},
		{"two JSON values", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob"`) + `{}`, nil, 400, "invalidSyntax"},
		{"wrong content type", "POST", "/Users", fmt.Sprintf(user, `"userName":"bob"`), []string{"Content-Type", "text/plain"}, 415, ""},
		{"malformed PATCH path", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"emails[type eq","value":"x"}`), nil, 400, "invalidPath"},
		{"unknown PATCH attribute", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"shoeSize","value":44}`), nil, 400, "invalidPath"},
		{"PATCH of a read-only attribute", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"id","value":"x"}`), nil, 400, "mutability"},
		{"PATCH of meta", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"meta.created","value":"2020-01-01T00:00:00Z"}`), nil, 400, "mutability"},
		{"PATCH body with trailing garbage", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"externalId","value":"z"}`) + "x", nil, 400, "invalidSyntax"},
		{"PATCH without its schema", "PATCH", "/Users/" + id, `{"Operations":[{"op":"replace","path":"nickName","value":"x"}]}`, nil, 400, "invalidSyntax"},
		{"PATCH with an unknown op", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"move","path":"nickName","value":"x"}`), nil, 400, "invalidSyntax"},
		{"PATCH remove without a path", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"remove"}`), nil, 400, "noTarget"},
		{"PATCH, second op bad", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"nickName","value":"x"},{"op":"replace","path":"active","value":"perhaps"}`), nil, 400, "invalidValue"},
		{"PATCH of a missing user", "PATCH", "/Users/00000000-0000-4000-8000-000000000000", fmt.Sprintf(patch, `{"op":"replace","path":"nickName","value":"x"}`), nil, 404, ""},
		{"If-Match mismatch", "PATCH", "/Users/" + id, fmt.Sprintf(patch, `{"op":"replace","path":"nickName","value":"x"}`), []string{"If-Match", `W/"0000"`}, 412, ""},
		{"If-Match mismatch on PUT", "PUT", "/Users/" + id, fmt.Sprintf(user, `"userName":"alice","nickName":"x"`), []string{"If-Match", `W/"0000"`}, 412, ""},
		{"If-Match mismatch on DELETE", "DELETE", "/Users/" + id, "", []string{"If-Match", `W/"0000"`}, 412, ""},
		{"not an id", "GET", "/Users/not-a-uuid", "", nil, 404, ""},
		{"bulk", "POST", "/Bulk", `{}`, nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.do(t, tt.method, tt.path, tt.body, tt.headers...).wantError(t, tt.status, tt.scimType)
		})
	}
	after := c.do(t, "GET", "/Users/"+id, "")
	if after.raw != before.raw || after.header.Get("ETag") != before.header.Get("ETag") {
		t.Fatalf("bad requests changed the user:\n%s\n%s", before.raw, after.raw)
	}
	if got := ids(t, c.do(t, "GET", "/Users", "").must(t, http.StatusOK)); !slices.Equal(got, []string{id}) {
		t.Fatalf("bad requests created users: %v", got)
	}
	// A change through the admin API changes the version: a PATCH with the old one is 412.
	name := "Alice Renamed"
	if _, err := f.tenantAd.UpdateIdentity(context.Background(), connect.NewRequest(&keyplanev1.UpdateIdentityRequest{TenantId: "acme", Id: id, DisplayName: &name})); err != nil {
		t.Fatal(err)
	}
	c.do(t, "PATCH", "/Users/"+id, fmt.Sprintf(patch, `{"op":"replace","path":"nickName","value":"x"}`), "If-Match", before.header.Get("ETag")).
		wantError(t, http.StatusPreconditionFailed, "")
	// And with the current one it applies.
	cur := c.do(t, "GET", "/Users/"+id, "").header.Get("ETag")
	c.do(t, "PATCH", "/Users/"+id, fmt.Sprintf(patch, `{"op":"replace","path":"nickName","value":"x"}`), "If-Match", cur).must(t, http.StatusOK)
}

// TestSecuritySCIMCallers: only a service account of the tenant holding
// iam.scim.provision reaches SCIM; every other caller gets a SCIM 401 or 403.
func TestSecuritySCIMCallers(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	_, without := f.identityWith(t, "no-scim", "*", "iam.identities.read")
	if _, err := f.op.CreateTenant(context.Background(), connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "globex", Name: "Globex", HomeRegion: "us-east"})); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token string
		status      int
	}{
		{"no token", "", 401},
		{"garbage token", "not-a-token", 401},
		{"token without the permission", without, 403},
		{"the operator secret", secret, 403},
		{"the tenant admin's client", f.bootTok, 200}, // tenant-admin holds "*"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := scimClient{base: c.base, token: tt.token}.do(t, "GET", "/Users", "")
			if tt.status == 200 {
				r.must(t, 200)
				return
			}
			r.wantError(t, tt.status, "")
			if tt.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge")
			}
		})
	}
	// acme's SCIM token at globex's endpoint.
	other := scimClient{base: f.url + "/t/globex/scim/v2", token: c.token}
	other.do(t, "GET", "/Users", "").wantError(t, 401, "")
	other.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"intruder"}`).wantError(t, 401, "")
	if got := ids(t, c.do(t, "GET", "/Users", "").must(t, 200)); len(got) != 0 {
		t.Fatalf("users appeared: %v", got)
	}
	scimClient{base: f.url + "/t/nosuch/scim/v2", token: c.token}.do(t, "GET", "/Users", "").wantError(t, 404, "")
}

// TestSecuritySCIMCannotGrantPrivilegedRoles: a SCIM group bound to a privileged role
// (tenant-admin) takes no members from SCIM, which cannot pass two-person change
// control; SCIM sees no group an administrator made.
func TestSecuritySCIMCannotGrantPrivilegedRoles(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	uid := c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"mallory"}`).must(t, 201)["id"].(string)
	gid := c.do(t, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"admins"}`).must(t, 201)["id"].(string)
	if _, err := f.op.CreateBinding(context.Background(), connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme",
		PrincipalKind: "group", PrincipalId: gid, RoleId: "00000000-0000-4000-8000-00000000a001", Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	c.do(t, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"add","path":"members","value":[{"value":"`+uid+`"}]}]}`).wantError(t, 403, "")
	c.do(t, "PUT", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"admins","members":[{"value":"`+uid+`"}]}`).
		wantError(t, 403, "")
	if m := asAnyList(c.do(t, "GET", "/Groups/"+gid, "").must(t, 200)["members"]); len(m) != 0 {
		t.Fatalf("members %v", m)
	}
	// A group the administrator made is not a SCIM Group.
	g, err := f.op.CreateGroup(context.Background(), connect.NewRequest(&keyplanev1.CreateGroupRequest{TenantId: "acme", Name: "ops"}))
	if err != nil {
		t.Fatal(err)
	}
	c.do(t, "GET", "/Groups/"+g.Msg.Group.Id, "").wantError(t, 404, "")
	c.do(t, "PATCH", "/Groups/"+g.Msg.Group.Id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"add","path":"members","value":[{"value":"`+uid+`"}]}]}`).wantError(t, 404, "")
	if got := ids(t, c.do(t, "GET", "/Groups", "").must(t, 200)); !slices.Equal(got, []string{gid}) {
		t.Fatalf("groups %v", got)
	}
}

// TestSCIMDiscovery: ServiceProviderConfig, ResourceTypes and Schemas (RFC 7644 §4).
func TestSCIMDiscovery(t *testing.T) {
	t.Parallel()
	_, c, _ := scimFixture(t)
	spc := c.do(t, "GET", "/ServiceProviderConfig", "").must(t, 200)
	if jget(spc, "patch", "supported") != true || jget(spc, "etag", "supported") != true || jget(spc, "bulk", "supported") != false ||
		jget(spc, "filter", "maxResults") != float64(1000) {
		t.Fatalf("ServiceProviderConfig %v", spc)
	}
	rts := c.do(t, "GET", "/ResourceTypes", "").must(t, 200)
	if rts["totalResults"] != float64(2) || jget(rts, "Resources", "0", "endpoint") != "/Users" {
		t.Fatalf("ResourceTypes %v", rts)
	}
	c.do(t, "GET", "/ResourceTypes/Group", "").must(t, 200)
	s := c.do(t, "GET", "/Schemas/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "").must(t, 200)
	found := false
	for _, a := range asAnyList(s["attributes"]) {
		found = found || a.(map[string]any)["name"] == "manager"
	}
	if !found {
		t.Fatalf("enterprise schema %v", s)
	}
	if n := c.do(t, "GET", "/Schemas", "").must(t, 200)["totalResults"]; n != float64(3) {
		t.Fatalf("%v schemas", n)
	}
	c.do(t, "GET", "/Schemas/urn:nope", "").wantError(t, 404, "")
}

// TestSCIMGroupsGrantAccess: a SCIM Group is a keyplane group: a role bound to it
// reaches the Users SCIM adds, and leaves them when SCIM removes them or deactivates
// them; deleting the Group deletes its binding. Checks are Connect JSON over plain
// net/http.
func TestSCIMGroupsGrantAccess(t *testing.T) {
	t.Parallel()
	f, c, _ := scimFixture(t)
	ctx := context.Background()
	uid := c.do(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"reader"}`).must(t, 201)["id"].(string)
	gid := c.do(t, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"readers"}`).must(t, 201)["id"].(string)
	role, err := f.op.CreateRole(ctx, connect.NewRequest(&keyplanev1.CreateRoleRequest{TenantId: "acme", Name: "docs-reader", Permissions: []string{"docs.document.read"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.CreateBinding(ctx, connect.NewRequest(&keyplanev1.CreateBindingRequest{TenantId: "acme", PrincipalKind: "group",
		PrincipalId: gid, RoleId: role.Msg.Role.Id, Scope: "*"})); err != nil {
		t.Fatal(err)
	}
	allowed := func() bool {
		t.Helper()
		code, body := f.call(t, "/keyplane.v1.CheckService/Check", secret, map[string]any{"tenantId": "acme", "identityId": uid,
			"permission": "docs.document.read", "resource": "docs/1"})
		if code != "" {
			t.Fatalf("check: %s %s", code, body)
		}
		var r struct{ Allowed bool }
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		return r.Allowed
	}
	const patch = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[%s]}`
	if allowed() {
		t.Fatal("allowed before SCIM added the member")
	}
	c.do(t, "PATCH", "/Groups/"+gid, fmt.Sprintf(patch, `{"op":"add","path":"members","value":[{"value":"`+uid+`"}]}`)).must(t, 200)
	if !allowed() {
		t.Fatal("denied after SCIM added the member")
	}
	c.do(t, "PATCH", "/Groups/"+gid, fmt.Sprintf(patch, `{"op":"remove","path":"members[value eq \"`+uid+`\"]"}`)).must(t, 200)
	if allowed() {
		t.Fatal("allowed after SCIM removed the member")
	}
	c.do(t, "PATCH", "/Groups/"+gid, fmt.Sprintf(patch, `{"op":"add","path":"members","value":[{"value":"`+uid+`"}]}`)).must(t, 200)
	c.do(t, "PATCH", "/Users/"+uid, fmt.Sprintf(patch, `{"op":"replace","path":"active","value":false}`)).must(t, 200)
	if allowed() {
		t.Fatal("allowed after SCIM deactivated the user")
	}
	if r := c.do(t, "DELETE", "/Groups/"+gid, ""); r.status != 204 {
		t.Fatalf("delete group: %d %s", r.status, r.raw)
	}
	bs, err := f.op.ListBindings(ctx, connect.NewRequest(&keyplanev1.ListBindingsRequest{TenantId: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs.Msg.Bindings {
		if b.PrincipalId == gid {
			t.Fatalf("the deleted group's binding remains: %v", b)
		}
	}
}
