package region

import (
	"errors"
	"fmt"
	"io"
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
	// BodyTimeout: a request's body must arrive whole within this of its headers; a
	// client dripping it is cut off. Once the body is read the limit is lifted, so
	// long calls are bounded by WriteTimeout alone. It also bounds a streaming call's
	// request stream (gRPC reflection sessions).
	BodyTimeout time.Duration
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
	return Limits{HeaderTimeout: 10 * time.Second, BodyTimeout: 20 * time.Second, WriteTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, MaxConns: 4096}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.HeaderTimeout == 0 {
		l.HeaderTimeout = d.HeaderTimeout
	}
	if l.BodyTimeout == 0 {
		l.BodyTimeout = d.BodyTimeout
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
	}{{"header timeout", l.HeaderTimeout}, {"body timeout", l.BodyTimeout}, {"write timeout", l.WriteTimeout}, {"idle timeout", l.IdleTimeout}} {
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

// bodyDeadline gives a request's body d to arrive after its headers: a client that
// drips it is cut off when d passes (the body read fails, the call fails, the
// connection closes). Reading the body to its end lifts the deadline, so what the
// handler does next is bounded by the write timeout only. Requests without a body are
// left alone: on HTTP/1.1 the server is already reading ahead on their connection.
func bodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline when the body ends. Read by one goroutine.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
