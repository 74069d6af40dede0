package region

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/time/rate"

	"github.com/keyplane/keyplane/schema"
)

// Limits on what keyplane fetches from external issuers (federation).
const (
	issuerFetchTimeout  = 5 * time.Second
	issuerMaxBody       = 1 << 20
	issuerRediscover    = time.Hour // discovery is read again after this long
	maxCachedIssuers    = 1000
	issuerFetchInterval = 10 * time.Second // one fetch per interval after the burst
	issuerFetchBurst    = 4
)

// errFetchLimited is the error of a fetch refused by an issuer's rate limit.
var errFetchLimited = errors.New("too many fetches from this issuer: rate limited")

// issuers caches, per external issuer, its OIDC discovery and signing keys (go-oidc's
// Provider and RemoteKeySet: keys are cached and fetched again when a token names an
// unknown kid). Every fetch from one issuer (discovery, JWKS) takes a token of that
// issuer's rate limiter, so a flood of tokens with unknown kids cannot make keyplane
// hammer the issuer: a fetch over the limit fails, and so does the token. Fetches have
// a bounded time and body size, and go only to https URLs (or http on a loopback host:
// schema.ValidIssuer), redirects included. Safe for concurrent use.
type issuers struct {
	every time.Duration
	burst int
	base  http.RoundTripper

	mu sync.Mutex
	m  map[string]*issuer
}

// issuer is one external issuer's cached state.
type issuer struct {
	url     string
	limiter *rate.Limiter
	client  *http.Client
	fetches atomic.Int64 // fetches attempted and allowed by the limiter

	mu       sync.Mutex
	provider *oidc.Provider
	found    time.Time // when provider was discovered
}

func newIssuers(base http.RoundTripper) *issuers {
	if base == nil {
		base = &http.Transport{
			Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: issuerFetchTimeout, ResponseHeaderTimeout: issuerFetchTimeout,
			MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, ForceAttemptHTTP2: true,
		}
	}
	return &issuers{every: issuerFetchInterval, burst: issuerFetchBurst, base: base, m: map[string]*issuer{}}
}

// get returns the cached state of issuer url, creating it.
func (is *issuers) get(url string) *issuer {
	is.mu.Lock()
	defer is.mu.Unlock()
	if i, ok := is.m[url]; ok {
		return i
	}
	if len(is.m) >= maxCachedIssuers {
		clear(is.m)
	}
	i := &issuer{url: url, limiter: rate.NewLimiter(rate.Every(is.every), is.burst)}
	i.client = &http.Client{Timeout: issuerFetchTimeout, Transport: &issuerTransport{base: is.base, i: i},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		}}
	is.m[url] = i
	return i
}

// verifier returns an ID-token verifier for the issuer accepting algs, discovering
// the issuer first if needed. The verifier checks the signature, iss, exp (no leeway)
// and nbf (go-oidc's leeway); the caller checks aud, iat and the rest.
func (i *issuer) verifier(ctx context.Context, algs []string, now func() time.Time) (*oidc.IDTokenVerifier, error) {
	p, err := i.discover(ctx, now)
	if err != nil {
		return nil, err
	}
	// Verifier (not VerifierContext, which makes a key set per call) shares the
	// provider's key set, which fetches through i.client.
	return p.Verifier(&oidc.Config{
		SkipClientIDCheck: true, SupportedSigningAlgs: algs, Now: now,
	}), nil
}

// issuerTransport guards every request to an issuer: the URL rule, the rate limit
// and the body size.
type issuerTransport struct {
	base http.RoundTripper
	i    *issuer
}

func (t *issuerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := schema.ValidIssuer(r.URL.Scheme + "://" + r.URL.Host + r.URL.EscapedPath()); err != nil {
		return nil, fmt.Errorf("refusing to fetch %s: %w", r.URL.Redacted(), err)
	}
	if !t.i.limiter.Allow() {
		return nil, errFetchLimited
	}
	t.i.fetches.Add(1)
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, issuerMaxBody), resp.Body}
	return resp, nil
}
