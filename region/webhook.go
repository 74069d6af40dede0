package region

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
)

// Headers of a webhook delivery (docs/analytics.md, "Verifying a delivery").
const (
	WebhookTimestampHeader = "Keyplane-Webhook-Timestamp"
	WebhookSignatureHeader = "Keyplane-Webhook-Signature"
	WebhookIDHeader        = "Keyplane-Webhook-Id"
	maxWebhookURL          = 2048
	maxWebhookResponse     = 64 << 10
)

// WebhookSignature is the signature header's value for a delivery of body at ts
// (unix seconds) with secret: "v1=" and the hex HMAC-SHA256 of "<ts>.<body>".
func WebhookSignature(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookPolicy says which targets deliveries may reach.
type webhookPolicy struct {
	allowLoopback bool // http:// on loopback hosts, and loopback addresses
	allowPrivate  bool // private, link-local, shared and other non-public addresses
}

// validateWebhookURL checks a webhook URL as given by a tenant: https (http only on a
// loopback host when the policy allows loopback), a host, no user info or fragment,
// at most 2048 bytes, and, when the host is an address, one the policy allows (a
// name is judged again at each connection, by the address it resolves to).
func validateWebhookURL(raw string, p webhookPolicy) (*url.URL, error) {
	const field = "webhook.url"
	if raw == "" {
		return nil, fieldError(field, "required")
	}
	if len(raw) > maxWebhookURL || !utf8.ValidString(raw) {
		return nil, fieldError(field, fmt.Sprintf("at most %d bytes of UTF-8", maxWebhookURL))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fieldError(field, "not a URL")
	}
	host := u.Hostname()
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fieldError(field, "must be an https URL")
	case host == "" || u.Opaque != "":
		return nil, fieldError(field, "must name a host")
	case u.User != nil:
		return nil, fieldError(field, "must not carry user info (the signature authenticates deliveries)")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, fieldError(field, "must not have a fragment")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fieldError(field, "port must be 1 to 65535")
		}
	}
	loopback := strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost")
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, fieldError(field, "must not name an address with a zone")
		}
		if reason := p.refuse(a); reason != "" {
			return nil, fieldError(field, reason)
		}
		loopback = a.Unmap().IsLoopback()
	} else if loopback && !p.allowLoopback {
		return nil, fieldError(field, "loopback hosts are not allowed")
	}
	if u.Scheme == "http" && !(loopback && p.allowLoopback) {
		return nil, fieldError(field, "must be an https URL")
	}
	return u, nil
}

// refuse says why a delivery may not reach address a ("" when it may).
func (p webhookPolicy) refuse(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast():
		return "not a unicast address"
	case a.IsLoopback():
		if !p.allowLoopback {
			return "loopback addresses are not allowed"
		}
		return ""
	case p.allowPrivate:
		return ""
	case a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || !a.IsGlobalUnicast() || nonPublic(a):
		return "private, link-local and other non-public addresses are not allowed"
	}
	return ""
}

// nonPublic are global-unicast ranges that are not the public internet.
var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (carrier-grade NAT)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 (reaches IPv4 addresses)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4 (embeds an IPv4 address)
}

func nonPublic(a netip.Addr) bool {
	for _, p := range nonPublicPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// newWebhookClient is the HTTP client deliveries use: no proxy, no redirects, every
// connection's address judged by the policy (after name resolution, so a name that
// resolves to a private address is refused too), one timeout per attempt.
func newWebhookClient(p webhookPolicy, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("webhook target %q: not an address", host)
		}
		if reason := p.refuse(a); reason != "" {
			return fmt.Errorf("webhook target %s refused: %s", a, reason)
		}
		return nil
	}}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: timeout,
			ResponseHeaderTimeout: timeout, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// newWebhookSecret returns a fresh signing secret.
func newWebhookSecret() string { return "whsec_" + rand.Text() + rand.Text() }

// webhookPayload is the JSON body of a delivery.
type webhookPayload struct {
	Type     string    `json:"type"` // "keyplane.alert"
	AlertID  string    `json:"alert_id"`
	TenantID string    `json:"tenant_id"`
	Time     time.Time `json:"time"`
	Identity string    `json:"identity_id,omitempty"`
	Kind     string    `json:"kind"`
	Value    string    `json:"value"`
	Reason   string    `json:"reason"`
	Region   string    `json:"region"`
	Node     string    `json:"node"`
}

// dispatcher sends the outbox's due deliveries of the tenants homed in the node's
// region. Every node of the region runs one; a delivery is sent by the node whose
// conditional UPDATE claimed it. Used by one goroutine (it sends a round's deliveries
// concurrently, at most 8 at once).
type dispatcher struct {
	store  *schema.Store
	region string
	kek    *kek.KEK
	cfg    AnalyticsConfig
	client *http.Client
	log    *slog.Logger
	m      *analyticsMetrics
	now    func() time.Time
}

func newDispatcher(n *Node, m *analyticsMetrics) *dispatcher {
	c := n.cfg.Analytics
	return &dispatcher{store: n.store, region: n.cfg.Region, kek: n.cfg.KEK, cfg: c, log: n.log, m: m, now: n.now,
		client: newWebhookClient(webhookPolicy{allowLoopback: c.WebhookAllowLoopback, allowPrivate: c.WebhookAllowPrivate}, c.WebhookTimeout)}
}

// run delivers every cfg.DeliverEvery until ctx is done, and prunes old session uses
// and drift digests now and then.
func (d *dispatcher) run(ctx context.Context) {
	if d.cfg.Off {
		return
	}
	tick := time.NewTicker(d.cfg.DeliverEvery)
	defer tick.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := d.round(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("webhook deliveries", "err", err)
		}
		if time.Since(lastPrune) > 10*time.Minute {
			lastPrune = time.Now()
			d.prune(ctx)
		}
	}
}

// round claims and sends the due deliveries of each tenant (at most 50 per tenant).
func (d *dispatcher) round(ctx context.Context) error {
	ts, err := d.store.PendingDeliveryTenants(ctx, d.region)
	if err != nil {
		return err
	}
	for _, sc := range ts {
		claimed, err := d.store.ClaimDeliveries(ctx, sc, 2*d.cfg.WebhookTimeout+10*time.Second, 50)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", sc.TenantID, err)
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, c := range claimed {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				d.deliver(ctx, sc, c)
			}()
		}
		wg.Wait()
	}
	return nil
}

// deliver sends one claimed delivery and records the outcome.
func (d *dispatcher) deliver(ctx context.Context, sc schema.Scope, c schema.ClaimedDelivery) {
	errText := d.send(ctx, sc, c)
	backoff := d.cfg.WebhookBackoff << min(c.Attempts-1, 20)
	backoff = min(backoff, time.Hour)
	state, err := d.store.FinishDelivery(context.WithoutCancel(ctx), sc, c.Delivery, errText, backoff, d.cfg.WebhookAttempts)
	if err != nil {
		d.log.Warn("record webhook delivery", "tenant", sc.TenantID, "alert_id", c.AlertID, "webhook_id", c.WebhookID, "err", err)
		return
	}
	switch state {
	case "delivered":
		d.m.deliveries.WithLabelValues("delivered").Inc()
	case "pending":
		d.m.deliveries.WithLabelValues("retry").Inc()
	case "failed":
		d.m.deliveries.WithLabelValues("failed").Inc()
		d.log.Warn("webhook delivery gave up", "tenant", sc.TenantID, "alert_id", c.AlertID, "webhook_id", c.WebhookID, "attempts", c.Attempts, "last_error", errText)
	}
}

// send makes one attempt and returns why it failed ("" on a 2xx answer).
func (d *dispatcher) send(ctx context.Context, sc schema.Scope, c schema.ClaimedDelivery) string {
	if d.kek == nil {
		return "no KEK configured on the delivering node"
	}
	secret, err := d.kek.Open(c.SealedSecret, schema.WebhookSecretAD(sc.TenantID, c.WebhookID))
	if err != nil {
		return "the signing secret could not be opened"
	}
	// The URL was validated when the webhook was made; judged again here in case the
	// node's policy changed since (loopback or private targets no longer allowed).
	if _, err := validateWebhookURL(c.URL, webhookPolicy{allowLoopback: d.cfg.WebhookAllowLoopback, allowPrivate: d.cfg.WebhookAllowPrivate}); err != nil {
		return "url refused: " + err.Error()
	}
	a := c.Alert
	body, err := json.Marshal(webhookPayload{Type: "keyplane.alert", AlertID: a.ID, TenantID: a.TenantID, Time: a.At.UTC(), Identity: a.IdentityID,
		Kind: a.Kind, Value: a.Value, Reason: a.Reason, Region: a.Region, Node: a.Node})
	if err != nil {
		return "encode: " + err.Error()
	}
	ts := d.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyplane-webhooks/1")
	req.Header.Set(WebhookIDHeader, a.ID)
	req.Header.Set(WebhookTimestampHeader, strconv.FormatInt(ts, 10))
	req.Header.Set(WebhookSignatureHeader, WebhookSignature(string(secret), ts, body))
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the webhook's own, no need to repeat it
		}
		return "post: " + err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookResponse))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "answered " + resp.Status
	}
	return ""
}

// prune deletes session uses older than a day and drift digests older than a week,
// for the tenants homed in the node's region.
func (d *dispatcher) prune(ctx context.Context) {
	ts, err := d.store.TenantsHomedIn(ctx, d.region)
	if err != nil {
		return
	}
	now := d.now()
	for _, t := range ts {
		if _, err := d.store.PruneAnalytics(ctx, t.Scope, now.Add(-24*time.Hour), now.Add(-7*24*time.Hour), 10_000); err != nil && ctx.Err() == nil {
			d.log.Warn("prune analytics", "tenant", t.Scope.TenantID, "err", err)
		}
	}
}
