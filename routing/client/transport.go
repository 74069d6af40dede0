package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"
)

// attemptKey is the context key under which the interceptor hands an attempt to the
// HTTP client.
type attemptKey struct{}

// attempt is one try of a call on one endpoint. The HTTP client fills in what
// happened on the wire.
type attempt struct {
	ep *endpoint
	// sending: the HTTP client took the request.
	sending atomic.Bool
	// answered: an HTTP response came back (whatever its status).
	answered atomic.Bool
	// unsent: the request provably never reached a server.
	unsent atomic.Bool
}

func withAttempt(ctx context.Context, a *attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

func attemptFrom(ctx context.Context) *attempt {
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	return a
}

// unsentError marks a transport error that proves the request never left the
// client (a failed dial), so even a call with side effects may be sent elsewhere.
type unsentError struct{ err error }

func (e *unsentError) Error() string { return e.err.Error() }
func (e *unsentError) Unwrap() error { return e.err }

// markUnsent wraps err in an unsentError. connect replaces an *url.Error by its
// inner error when it looks for HTTP/2 stream resets, so the mark goes inside the
// *url.Error, where it survives; the message is unchanged, as connect reads it too.
func markUnsent(err error) error {
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: ue.URL, Err: &unsentError{ue.Err}}
	}
	return &unsentError{err}
}

// isUnsent reports whether err carries the mark of markUnsent.
func isUnsent(err error) bool {
	var u *unsentError
	return errors.As(err, &u)
}

// isDialError reports whether err is a failure to connect.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// httpClient sends each request to the endpoint chosen for its attempt, or to the
// most preferred endpoint when the request carries no attempt (streaming calls, or
// clients built without Client.Options). Safe for concurrent use.
type httpClient struct {
	c *Client
}

// Do rewrites the scheme and host of req to the endpoint's, keeping path and query,
// and sends it.
func (h httpClient) Do(req *http.Request) (*http.Response, error) {
	att := attemptFrom(req.Context())
	var ep *endpoint
	if att != nil {
		att.sending.Store(true)
		ep = att.ep
	} else {
		ep = h.c.best()
	}
	// A request cannot leave without a connection: when the transport looked for one
	// (GetConn) but never got it (GotConn), nothing was written. Transports that do
	// not report these events are judged by their dial errors alone.
	var lookedForConn, gotConn atomic.Bool
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GetConn: func(string) { lookedForConn.Store(true) },
		GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) },
	})
	// Clone: connect reuses the request's header map for the next attempt, while the
	// transport may still be reading this one.
	out := req.Clone(ctx)
	out.URL.Scheme, out.URL.Host = ep.scheme, ep.host
	if out.Host == req.URL.Host {
		out.Host = "" // the transport takes it from out.URL
	}
	resp, err := h.c.http.Do(out)
	if err != nil {
		if isDialError(err) || (lookedForConn.Load() && !gotConn.Load()) {
			err = markUnsent(err)
			if att != nil {
				att.unsent.Store(true)
			}
		}
		return nil, err
	}
	if att != nil {
		att.answered.Store(true)
	}
	return resp, nil
}

// defaultTransport speaks HTTP/1.1 and HTTP/2: over TLS by ALPN, and unencrypted
// (h2c) with prior knowledge. Note that net/http uses h2c for http:// URLs only
// when HTTP/1 is not enabled, so this transport sends http:// requests over
// HTTP/1.1 with keep-alive; every keyplane node serves both.
func defaultTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		Protocols:             protocols,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
	}
}
