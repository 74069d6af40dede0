package region_test

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// TestReviewPageBrowser drives a real headless Chromium: a manager opens the review
// page, is sent through keyplane's own login page (the campaign's first-party sign-in
// client), lands back on the page with her items, keeps one and revokes the other by
// keyboard, each with a justification; the revoked binding is gone and the evidence
// lists both decisions. With KEYPLANE_REVIEW_SCREENSHOT=path the page, items listed,
// is saved there (docs/img/review.png).
func TestReviewPageBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	w := newReviewWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	page := w.url + "/t/acme/reviews"
	cl, err := w.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: w.bot, Name: "Access reviews",
		RedirectUris: []string{page}, FirstParty: true}))
	if err != nil {
		t.Fatal(err)
	}
	c := w.create(t, w.ops, &keyplanev1.CreateCampaignRequest{Name: "Q3 access review", Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_ROLE,
		ScopeId: w.reader, SignInClientId: cl.Msg.ClientId})
	items := w.items(t, c.Id)
	keep, revoke := item(t, items, w.alice, w.aliceDocs), item(t, items, w.alice, w.eng)

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true), chromedp.WindowSize(900, 1000))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	do("open the review page: sign in first", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("email")))
	do("sign in", chromedp.SendKeys(chromedp.ID("email"), w.managerEmail), chromedp.SendKeys(chromedp.ID("password"), opPassword),
		chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("keep-"+keep.Id)))
	main := text("main")
	for _, want := range []string{"Signed in as Meg Manager", "Alice Liddell", "docs-reader on docs/", "member of group eng (docs-reader on wiki/)", "never_used"} {
		if !strings.Contains(main, want) {
			t.Fatalf("review page lacks %q:\n%s", want, main)
		}
	}
	if path := os.Getenv("KEYPLANE_REVIEW_SCREENSHOT"); path != "" {
		shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Keyboard only: focus the choice, select it with space, type, submit with enter.
	do("keep", chromedp.Focus(chromedp.ID("keep-"+keep.Id)), chromedp.KeyEvent(" "),
		chromedp.SendKeys(chromedp.ID("justification-"+keep.Id), "needs the docs for support"),
		chromedp.Focus(chromedp.ID("submit-"+keep.Id)), chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.ID("notice")))
	if n := text("#notice"); !strings.Contains(n, "keep for Alice Liddell (kept)") {
		t.Fatalf("after keep: %q", n)
	}
	do("revoke", chromedp.Click(chromedp.ID("revoke-"+revoke.Id)),
		chromedp.SendKeys(chromedp.ID("justification-"+revoke.Id), "left the eng team"),
		chromedp.Click(chromedp.ID("submit-"+revoke.Id)), chromedp.WaitVisible(chromedp.ID("notice")))
	if n := text("#notice"); !strings.Contains(n, "revoke for Alice Liddell (membership removed)") {
		t.Fatalf("after revoke: %q", n)
	}
	if d := text(chromedp.CSS("#decision-" + keep.Id)); !strings.Contains(d, "needs the docs for support") {
		t.Fatalf("decided item: %q", d)
	}
	if w.isMember(t, w.eng, w.alice) || !w.bindingExists(t, w.aliceDocs) {
		t.Fatal("the page's decisions were not applied")
	}
	if _, err := w.ops.CloseCampaign(ctx, connect.NewRequest(&keyplanev1.CloseCampaignRequest{TenantId: "acme", CampaignId: c.Id})); err != nil {
		t.Fatal(err)
	}
	ev, err := w.ops.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: "acme", CampaignId: c.Id, Format: "json"}))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Items []struct {
			ID, Decision, Justification, Applied string
			DecidedBy                            string `json:"decided_by"`
		}
	}
	if err := json.Unmarshal([]byte(ev.Msg.Content), &rep); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, it := range rep.Items {
		switch it.ID {
		case keep.Id:
			if it.Decision == "keep" && it.Justification == "needs the docs for support" && it.DecidedBy == "identity:"+w.manager {
				found++
			}
		case revoke.Id:
			if it.Decision == "revoke" && it.Justification == "left the eng team" && it.Applied == "membership removed" {
				found++
			}
		}
	}
	if found != 2 {
		t.Fatalf("evidence lacks the page's two decisions: %s", ev.Msg.Content)
	}
}

// TestSecurityReviewPage: the review page over plain HTTP. Without a session it sends
// the browser to keyplane's login through the campaign's sign-in client (never
// elsewhere), with no campaign naming one it says so; every page carries the strict
// CSP; a decision posted without the browser's CSRF token, or without a session, is
// refused and applies nothing.
func TestSecurityReviewPage(t *testing.T) {
	t.Parallel()
	w := newReviewWorld(t, nil)
	ctx := context.Background()
	page := w.url + "/t/acme/reviews"
	b := browser(t)
	get := func(u string) pageResp {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		return do(t, b, req)
	}
	if r := get(page); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "Sign in first") {
		t.Fatalf("no sign-in client: %d %s", r.status, r.body)
	}
	cl, err := w.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: w.bot, Name: "Access reviews",
		RedirectUris: []string{page}, FirstParty: true}))
	if err != nil {
		t.Fatal(err)
	}
	c := w.create(t, w.ops, &keyplanev1.CreateCampaignRequest{Name: "q", Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT, SignInClientId: cl.Msg.ClientId})
	r := get(page + "/" + c.Id)
	if r.status != http.StatusSeeOther || r.location == nil || r.location.Path != "/t/acme/oauth2/authorize" ||
		r.location.Query().Get("client_id") != cl.Msg.ClientId || r.location.Query().Get("redirect_uri") != page {
		t.Fatalf("sign-in redirect: %d %v", r.status, r.location)
	}
	// A client without the page's redirect URI cannot be a campaign's sign-in client.
	other, err := w.admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: "acme", IdentityId: w.bot, Name: "elsewhere",
		RedirectUris: []string{"https://evil.example/cb"}}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.ops.CreateCampaign(ctx, connect.NewRequest(&keyplanev1.CreateCampaignRequest{TenantId: "acme", Name: "x",
		Scope: keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT, Deadline: w.deadline, SignInClientId: other.Msg.ClientId}))
	wantCode(t, err, connect.CodeInvalidArgument, "sign_in_client_id")

	// Sign in as the manager through the login form (the page's own flow).
	base, _ := url.Parse(page)
	login := get(base.ResolveReference(r.location).String())
	if login.status != http.StatusOK || !strings.Contains(login.header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("login page: %d %v", login.status, login.header)
	}
	form := url.Values{"csrf_token": {hiddenValue(t, login.body, "csrf_token")}, "request": {hiddenValue(t, login.body, "request")},
		"step": {"password"}, "email": {w.managerEmail}, "password": {opPassword}}
	post := func(u string, f url.Values) pageResp {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return do(t, b, req)
	}
	back := post(w.url+"/t/acme/oauth2/login", form)
	if back.status != http.StatusSeeOther || back.location == nil || !strings.HasPrefix(back.location.String(), page+"?") {
		t.Fatalf("after login: %d %v %s", back.status, back.location, back.body)
	}
	list := get(page)
	if list.status != http.StatusOK || !strings.Contains(list.body, "Signed in as <strong>Meg Manager</strong>") {
		t.Fatalf("review page: %d %s", list.status, list.body)
	}
	csp := list.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(list.body, "<script") {
		t.Fatalf("review page headers: %q", csp)
	}
	it := item(t, w.items(t, c.Id), w.alice, w.eng)
	decideURL := page + "/" + c.Id + "/items/" + it.Id
	if r := post(decideURL, url.Values{"decision": {"revoke"}, "justification": {"csrf"}, "csrf_token": {"forged.token"}}); r.status != http.StatusForbidden {
		t.Fatalf("forged CSRF token: %d", r.status)
	}
	anon := browser(t)
	req, _ := http.NewRequest(http.MethodPost, decideURL, strings.NewReader(url.Values{"decision": {"revoke"}, "justification": {"x"},
		"csrf_token": {hiddenValue(t, list.body, "csrf_token")}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := do(t, anon, req); r.status != http.StatusForbidden {
		t.Fatalf("no cookies: %d", r.status)
	}
	if r := post(decideURL, url.Values{"decision": {"revoke"}, "justification": {""}, "csrf_token": {hiddenValue(t, list.body, "csrf_token")}}); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body, "justification") {
		t.Fatalf("no justification: %d %s", r.status, r.body)
	}
	if !w.isMember(t, w.eng, w.alice) {
		t.Fatal("a refused post applied the revocation")
	}
	ok := post(decideURL, url.Values{"decision": {"revoke"}, "justification": {"left"}, "csrf_token": {hiddenValue(t, list.body, "csrf_token")}})
	if ok.status != http.StatusSeeOther || w.isMember(t, w.eng, w.alice) {
		t.Fatalf("decision: %d %s", ok.status, ok.body)
	}
}

// hiddenValue reads the value of the first hidden input name in an HTML page.
func hiddenValue(t *testing.T, body, name string) string {
	t.Helper()
	marker := `name="` + name + `" value="`
	i := strings.Index(body, marker)
	if i < 0 {
		t.Fatalf("no %s in %s", name, body)
	}
	rest := body[i+len(marker):]
	return html.UnescapeString(rest[:strings.IndexByte(rest, '"')])
}
