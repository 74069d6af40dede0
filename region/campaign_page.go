package region

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/schema"
)

// The review page (docs/access-reviews.md): reviewers are people, so their items are
// served as a server-rendered page at /t/{tenant}/reviews (every open campaign) and
// /t/{tenant}/reviews/{campaign}. It signs in through keyplane's own OpenID Provider
// login: it reads the browser session the login page establishes (the kp_session
// cookie, scoped to /t/{tenant}/), and without one sends the browser to the
// authorization endpoint with the campaign's sign-in client, whose registered
// redirect URI is the page itself; once signed in, the session cookie is all the page
// needs (the authorization code is left to expire). Decisions are plain form posts
// bound to the login page's CSRF key; no script at all, the same strict CSP.

//go:embed templates/campaign.html
var campaignFS embed.FS

var campaignTemplate = template.Must(template.New("campaign.html").Funcs(template.FuncMap{
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"access": accessText,
}).ParseFS(campaignFS, "templates/campaign.html"))

// reviewPageURL is the review page's address, the redirect URI its sign-in client
// registers.
func (n *Node) reviewPageURL(tenantID string) string { return n.Issuer(tenantID) + "/reviews" }

func (n *Node) mountReviewPage(mux *http.ServeMux) {
	mux.HandleFunc("GET /t/{tenant}/reviews", n.pageHandler(n.reviewPage))
	mux.HandleFunc("GET /t/{tenant}/reviews/{campaign}", n.pageHandler(n.reviewPage))
	mux.HandleFunc("POST /t/{tenant}/reviews/{campaign}/items/{item}", n.pageHandler(n.reviewDecide))
}

// reviewView is what the review page template renders.
type reviewView struct {
	StyleNonce string
	Tenant     string
	Reviewer   string
	Campaign   *schema.Campaign // the campaign page; nil: every open campaign
	Items      []reviewRow
	Error      string
	Notice     string
	CSRF       string
	Base       string // /t/{tenant}/reviews
}

type reviewRow struct {
	schema.ReviewItem
	Risks        []string
	Open         bool // undecided, campaign open
	CampaignName string
}

// renderReview writes the review page with the headers the login page's carry.
func renderReview(w http.ResponseWriter, status int, v reviewView) {
	v.StyleNonce = randomToken(16)
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+v.StyleNonce+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = campaignTemplate.Execute(w, v)
}

// reviewSession returns the signed-in reviewer, or answers the request itself (a
// redirect to sign in, or a page saying how) and returns ok false.
func (n *Node) reviewSession(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, campaignID string) (*schema.BrowserSession, bool) {
	sess, err := n.browserSession(ctx, r, t)
	if err != nil {
		n.failPage(ctx, w, err)
		return nil, false
	}
	if sess != nil {
		return sess, true
	}
	if r.Method != http.MethodGet {
		messagePage(w, http.StatusUnauthorized, "Signed out", "Your session has ended: open the review page again to sign in.")
		return nil, false
	}
	client, err := n.reviewSignInClient(ctx, t, campaignID)
	if err != nil {
		n.failPage(ctx, w, err)
		return nil, false
	}
	if client == "" {
		messagePage(w, http.StatusUnauthorized, "Sign in first", "No review campaign names a sign-in application: sign in to one of your organization's applications, then open this page again.")
		return nil, false
	}
	sum := sha256.Sum256([]byte(randomToken(32))) // PKCE: the page never redeems the code
	q := url.Values{"response_type": {"code"}, "client_id": {client}, "redirect_uri": {n.reviewPageURL(t.ID)}, "scope": {"openid profile"},
		"state": {randomToken(16)}, "nonce": {randomToken(16)}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"}}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, n.cookiePath(t.ID)+"oauth2/authorize?"+q.Encode(), http.StatusSeeOther)
	return nil, false
}

// reviewSignInClient is the sign-in client of campaignID, or ("") of the newest open
// campaign that names one.
func (n *Node) reviewSignInClient(ctx context.Context, t schema.Tenant, campaignID string) (string, error) {
	if campaignID != "" {
		c, err := n.store.GetCampaign(ctx, t.Scope(), campaignID)
		if err == nil && c.SignInClientID != "" {
			return c.SignInClientID, nil
		}
		if err != nil && !errors.Is(err, schema.ErrNotFound) && !isFieldError(err) {
			return "", err
		}
	}
	client, token := "", ""
	for range 100 {
		cs, next, err := n.store.ListCampaigns(ctx, t.Scope(), schema.Page{Size: schema.MaxPageSize, Token: token})
		if err != nil {
			return "", err
		}
		for _, c := range cs {
			if c.Status == schema.CampaignOpen && c.SignInClientID != "" {
				client = c.SignInClientID
			}
		}
		if token = next; token == "" {
			break
		}
	}
	return client, nil
}

func isFieldError(err error) bool {
	var fe *schema.FieldError
	return errors.As(err, &fe)
}

// reviewPage lists the signed-in reviewer's items (of one campaign, or of every open
// campaign).
func (n *Node) reviewPage(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	campaignID := r.PathValue("campaign")
	sess, ok := n.reviewSession(ctx, w, r, t, campaignID)
	if !ok {
		return
	}
	if r.URL.Query().Has("code") || r.URL.Query().Has("error") {
		// Back from signing in: the session cookie is set; drop the code from the address.
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, n.cookiePath(t.ID)+"reviews", http.StatusSeeOther)
		return
	}
	notice := ""
	if id := r.URL.Query().Get("decided"); id != "" {
		if it, err := n.store.GetReviewItem(ctx, t.Scope(), id); err == nil && it.ReviewerID == sess.IdentityID && it.Decision != "" {
			notice = "Recorded: " + it.Decision + " for " + it.SubjectName + " (" + it.Applied + ")."
		}
	}
	n.showReviews(ctx, w, r, t, sess, campaignID, http.StatusOK, "", notice)
}

// showReviews renders the reviewer's items with status and an error or notice.
func (n *Node) showReviews(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant, sess *schema.BrowserSession,
	campaignID string, status int, errMsg, notice string) {
	sc := t.Scope()
	v := reviewView{Tenant: t.ID, Error: errMsg, Notice: notice, CSRF: csrfToken(n.csrfKey(w, r, t.ID)), Base: n.cookiePath(t.ID) + "reviews"}
	if me, err := n.store.GetIdentity(ctx, sc, sess.IdentityID); err == nil {
		v.Reviewer = me.DisplayName
	}
	campaigns := map[string]schema.Campaign{}
	if campaignID != "" {
		c, err := n.store.GetCampaign(ctx, sc, campaignID)
		if err != nil {
			messagePage(w, http.StatusNotFound, "No such campaign", "There is no such access review campaign.")
			return
		}
		v.Campaign, campaigns[c.ID] = &c, c
	}
	f := schema.ItemFilter{CampaignID: campaignID, ReviewerID: sess.IdentityID, OpenOnly: campaignID == ""}
	token := ""
	for range 10 {
		items, next, err := n.store.ListReviewItems(ctx, sc, f, schema.Page{Size: schema.MaxPageSize, Token: token})
		if err != nil {
			n.failPage(ctx, w, err)
			return
		}
		for _, it := range items {
			c, ok := campaigns[it.CampaignID]
			if !ok {
				if c, err = n.store.GetCampaign(ctx, sc, it.CampaignID); err != nil {
					n.failPage(ctx, w, err)
					return
				}
				campaigns[c.ID] = c
			}
			v.Items = append(v.Items, reviewRow{ReviewItem: it, Risks: it.Risks(n.now(), c.UnusedDays), CampaignName: c.Name,
				Open: it.Decision == "" && c.Status == schema.CampaignOpen && n.now().Before(c.Deadline)})
		}
		if token = next; token == "" {
			break
		}
	}
	renderReview(w, status, v)
}

// reviewDecide records a decision posted from the page, then shows the page again
// (post/redirect/get).
func (n *Node) reviewDecide(ctx context.Context, w http.ResponseWriter, r *http.Request, t schema.Tenant) {
	campaignID, itemID := r.PathValue("campaign"), r.PathValue("item")
	if err := checkCSRF(r); err != nil {
		messagePage(w, http.StatusForbidden, "Request refused", err.Error())
		return
	}
	sess, ok := n.reviewSession(ctx, w, r, t, campaignID)
	if !ok {
		return
	}
	var decision string
	switch r.PostForm.Get("decision") {
	case schema.ReviewKeep:
		decision = schema.ReviewKeep
	case schema.ReviewRevoke:
		decision = schema.ReviewRevoke
	default:
		n.showReviews(ctx, w, r, t, sess, campaignID, http.StatusBadRequest, "Choose keep or revoke.", "")
		return
	}
	c := caller{identityID: sess.IdentityID, kind: schema.KindHuman, authTime: sess.AuthTime, amr: sess.AMR, sessionID: sess.ID, clientID: sess.ClientID}
	_, _, err := n.decideItem(ctx, t, c, campaignID, itemID, schema.ItemDecision{Decision: decision, Justification: r.PostForm.Get("justification")})
	if err != nil {
		ce := connectError(ctx, n.log, err)
		status := http.StatusBadRequest
		switch ce.Code() {
		case connect.CodeInternal, connect.CodeUnavailable, connect.CodeUnknown:
			n.failPage(ctx, w, err)
			return
		case connect.CodePermissionDenied:
			status = http.StatusForbidden
		case connect.CodeFailedPrecondition:
			status = http.StatusConflict
		case connect.CodeNotFound:
			status = http.StatusNotFound
		}
		n.showReviews(ctx, w, r, t, sess, campaignID, status, ce.Message(), "")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, n.cookiePath(t.ID)+"reviews/"+url.PathEscape(campaignID)+"?decided="+url.QueryEscape(itemID), http.StatusSeeOther)
}
