package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// regionHeader names the fake server that answered.
const regionHeader = "Fake-Server"

// behaviour is how a fake server answers ValidateToken and ExchangeAPIKey.
type behaviour struct {
	code    connect.Code  // error code to answer; 0 answers success
	hang    bool          // never answer: block until the client goes or the test ends
	delay   time.Duration // sleep before answering, in /readyz too
	refused bool          // no server: connections are refused
}

// callLog records which servers received calls, in order. Safe for concurrent use.
type callLog struct {
	mu      sync.Mutex
	names   []string
	tenants []string // Keyplane-Tenant of each call
	keys    []string // Idempotency-Key of each call
}

func (l *callLog) add(name string, h http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names = append(l.names, name)
	l.tenants = append(l.tenants, h.Get(client.TenantHeader))
	l.keys = append(l.keys, h.Get(client.IdempotencyKeyHeader))
}

func (l *callLog) idempotencyKeys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.keys...)
}

func (l *callLog) calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.names...)
}

func (l *callLog) lastTenant() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tenants) == 0 {
		return "<no call>"
	}
	return l.tenants[len(l.tenants)-1]
}

// fakeAuth is a keyplane AuthService that answers by its behaviour.
type fakeAuth struct {
	keyplanev1connect.UnimplementedAuthServiceHandler
	name    string
	b       behaviour
	log     *callLog
	release <-chan struct{}
}

var _ keyplanev1connect.AuthServiceHandler = (*fakeAuth)(nil)

func (f *fakeAuth) answer(ctx context.Context, h http.Header) error {
	f.log.add(f.name, h)
	if f.b.hang {
		select {
		case <-ctx.Done(): // the propagated attempt timeout, or the client went
			return ctx.Err()
		case <-f.release:
			return connect.NewError(connect.CodeInternal, errors.New("fake hang ended"))
		}
	}
	if f.b.delay > 0 {
		time.Sleep(f.b.delay)
	}
	if f.b.code != 0 {
		return connect.NewError(f.b.code, errors.New("fake "+f.name))
	}
	return nil
}

func (f *fakeAuth) ValidateToken(ctx context.Context, req *connect.Request[keyplanev1.ValidateTokenRequest]) (*connect.Response[keyplanev1.ValidateTokenResponse], error) {
	if err := f.answer(ctx, req.Header()); err != nil {
		return nil, err
	}
	res := connect.NewResponse(&keyplanev1.ValidateTokenResponse{Active: true})
	res.Header().Set(regionHeader, f.name)
	return res, nil
}

// fakeAdmin is a keyplane AdminService whose CreateTenant records the call's headers.
type fakeAdmin struct {
	keyplanev1connect.UnimplementedAdminServiceHandler
	log *callLog
}

func (f *fakeAdmin) CreateTenant(_ context.Context, req *connect.Request[keyplanev1.CreateTenantRequest]) (*connect.Response[keyplanev1.CreateTenantResponse], error) {
	f.log.add("admin", req.Header())
	return connect.NewResponse(&keyplanev1.CreateTenantResponse{Tenant: &keyplanev1.Tenant{Id: req.Msg.Id}}), nil
}

func (f *fakeAuth) ExchangeAPIKey(ctx context.Context, req *connect.Request[keyplanev1.ExchangeAPIKeyRequest]) (*connect.Response[keyplanev1.ExchangeAPIKeyResponse], error) {
	if err := f.answer(ctx, req.Header()); err != nil {
		return nil, err
	}
	res := connect.NewResponse(&keyplanev1.ExchangeAPIKeyResponse{Token: &keyplanev1.Token{}})
	res.Header().Set(regionHeader, f.name)
	return res, nil
}

// startServer starts a fake region node named name and returns its URL. Its
// handlers return when the test ends.
func startServer(t *testing.T, name string, b behaviour, log *callLog) string {
	t.Helper()
	if b.refused {
		return refusingURL(t)
	}
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle(keyplanev1connect.NewAuthServiceHandler(&fakeAuth{name: name, b: b, log: log, release: release}))
	mux.Handle(keyplanev1connect.NewAdminServiceHandler(&fakeAdmin{log: log}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if b.hang {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		time.Sleep(b.delay)
		_, _ = w.Write([]byte(`{"ready":true}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets srv.Close finish
	return srv.URL
}

// refusingURL returns the URL of a port nothing listens on.
func refusingURL(t *testing.T) string {
	t.Helper()
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(600+lowPort.Add(1)%400)))
}

// lowPort hands out privileged ports nothing on the test machine listens on: a
// connection to one is refused, deterministically. (A port closed after listening on
// it could be taken meanwhile by a server of a parallel test.)
var lowPort atomic.Int32

// newClient returns a Client for cfg, closed when the test ends, and an
// AuthService client through it.
func newClient(t *testing.T, cfg client.Config) (*client.Client, keyplanev1connect.AuthServiceClient) {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c, keyplanev1connect.NewAuthServiceClient(c.HTTPClient(), client.BaseURL, c.Options()...)
}

// quick is a Config for tests: no probing, short pauses.
func quick(eps ...client.Endpoint) client.Config {
	return client.Config{
		Endpoints:     eps,
		ProbeInterval: -1,
		BackoffBase:   time.Millisecond,
		BackoffMax:    5 * time.Millisecond,
	}
}

// waitFor polls cond until it holds, failing the test after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}
