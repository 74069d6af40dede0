package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// tourCall is one OAuth call of the tour as an application in a region makes it.
type tourCall struct {
	from     string // the region the application is in
	route    string
	servedBy string
	took     time.Duration
	body     map[string]any
}

// oauthCall posts a form to the tenant's OAuth endpoint through the client URL of an
// application placed in region from.
func oauthCall(ctx context.Context, st State, tn Tenant, from, path string, form url.Values) (tourCall, error) {
	base := st.ClientURLs[from][from][0]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/t/"+tn.ID+path, strings.NewReader(form.Encode()))
	if err != nil {
		return tourCall{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(tn.ClientID, tn.ClientSecret)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return tourCall{}, fmt.Errorf("POST %s from %s: %w", path, from, err)
	}
	defer resp.Body.Close()
	c := tourCall{from: from, route: resp.Header.Get("Keyplane-Route"), servedBy: resp.Header.Get("Keyplane-Served-By")}
	b, _ := io.ReadAll(resp.Body)
	c.took = time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("POST %s from %s: %s %s", path, from, resp.Status, b)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &c.body); err != nil {
			return c, fmt.Errorf("POST %s from %s: %w", path, from, err)
		}
	}
	return c, nil
}

// runTour shows the data plane at work across regions: a token issued by an
// application in one region, checked by one in another, revoked from a third, and
// inactive everywhere at once. It fails if any answer is wrong.
func runTour(ctx context.Context, w io.Writer, st State) error {
	tn := st.Tenants[0]
	var regions []string
	for _, r := range st.Regions {
		regions = append(regions, r.Name)
	}
	at := func(i int) string { return regions[i%len(regions)] }
	issueFrom, checkFrom, revokeFrom := at(1), at(2), at(3)
	rtt := func(from string) string {
		return fmt.Sprintf("(round trip %s↔%s: %d ms)", from, tn.HomeRegion, st.RTTMillis[from][tn.HomeRegion])
	}
	line := func(step, what string, c tourCall, extra string) {
		fmt.Fprintf(w, "  %s %-34s %-9s → %-14s %4d ms  %s\n", step, what, c.route, c.servedBy, c.took.Milliseconds(), extra)
	}
	fmt.Fprintf(w, "\ntour: tenant %s lives in %s; applications in other regions call their own region.\n", tn.ID, tn.HomeRegion)

	issued, err := oauthCall(ctx, st, tn, issueFrom, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		return err
	}
	tok, _ := issued.body["access_token"].(string)
	if tok == "" {
		return fmt.Errorf("no access token in %v", issued.body)
	}
	line("1.", "token issued by an app in "+issueFrom, issued, rtt(issueFrom))

	checked, err := oauthCall(ctx, st, tn, checkFrom, "/oauth2/introspect", url.Values{"token": {tok}})
	if err != nil {
		return err
	}
	if checked.body["active"] != true {
		return fmt.Errorf("a fresh token introspected from %s is not active: %v", checkFrom, checked.body)
	}
	line("2.", "checked by an app in "+checkFrom, checked, "active "+rtt(checkFrom))

	revoked, err := oauthCall(ctx, st, tn, revokeFrom, "/oauth2/revoke", url.Values{"token": {tok}})
	if err != nil {
		return err
	}
	line("3.", "revoked by an app in "+revokeFrom, revoked, rtt(revokeFrom))

	fmt.Fprintf(w, "  4. checked again, by an app in every region at once:\n")
	results := make([]tourCall, len(regions))
	errs := make([]error, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = oauthCall(ctx, st, tn, r, "/oauth2/introspect", url.Values{"token": {tok}})
		}()
	}
	wg.Wait()
	for i, r := range regions {
		if errs[i] != nil {
			return errs[i]
		}
		if results[i].body["active"] != false {
			return fmt.Errorf("revoked token still active from %s: %v", r, results[i].body)
		}
		line("  ", "from "+r, results[i], "inactive")
	}
	fmt.Fprintf(w, "  A forwarded call costs one round trip to the home region plus its service time.\n")
	return nil
}
