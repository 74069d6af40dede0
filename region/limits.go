package region

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Limits bound what one client can hold of a node's API server: how long it may take
// to send a request, how long a response may take, how large its headers may be and
// how many connections it may keep open. A zero field takes DefaultLimits' value.
type Limits struct {
	// HeaderTimeout: a request's headers must arrive within this of the server
	// starting to read it.
	HeaderTimeout time.Duration
	// ReadTimeout: a request, headers and body, must arrive whole within this; a
	// client dripping its body is cut off. Once the body is read the limit no longer
	// applies (net/http lifts it), so long calls are bounded by WriteTimeout alone. It
	// also bounds a streaming call's request stream (gRPC reflection sessions).
	ReadTimeout time.Duration
	// WriteTimeout: a response must be written within this of its request's headers.
	// It must exceed the longest legitimate call, forwards included (the router's
	// forward timeout); a node refuses routing whose forward timeout is not shorter.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (HTTP/1.1 request line and headers,
	// HTTP/2 header list).
	MaxHeaderBytes int
	// MaxConns caps the client connections served at once; the next ones wait in the
	// listen backlog until one closes.
	MaxConns int
}

// DefaultLimits: generous for any legitimate client, short for one holding resources.
func DefaultLimits() Limits {
	return Limits{HeaderTimeout: 10 * time.Second, ReadTimeout: 20 * time.Second, WriteTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, MaxConns: 4096}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.HeaderTimeout == 0 {
		l.HeaderTimeout = d.HeaderTimeout
	}
	if l.ReadTimeout == 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = d.MaxConns
	}
	return l
}

// Validate reports every negative field.
func (l Limits) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header timeout", l.HeaderTimeout}, {"read timeout", l.ReadTimeout}, {"write timeout", l.WriteTimeout}, {"idle timeout", l.IdleTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", d.name, d.v))
		}
	}
	if l.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("max header bytes: %d is negative", l.MaxHeaderBytes))
	}
	if l.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max conns: %d is negative", l.MaxConns))
	}
	return errors.Join(errs...)
}

// Request bodies: the largest message any handler reads (connect.WithReadMaxBytes), and
// the largest body the router forwards, which leaves room for the envelope and for a
// compressed body slightly larger than the message it holds.
const (
	maxMessageBytes = 1 << 20
	maxForwardBytes = maxMessageBytes + 64<<10
)

// newServer is an HTTP/1.1 and h2c server (HTTP/2 on a TLS listener) for h bounded by l
// (fields already defaulted): header and whole-request read timeouts, write and idle
// timeouts, and header size. The connection cap is the listener's
// (netutil.LimitListener).
func newServer(l Limits, h http.Handler, log *slog.Logger) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true) // a TLS listener (serve --tls-cert)
	return &http.Server{
		Handler:           h,
		Protocols:         protocols,
		ReadHeaderTimeout: l.HeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
