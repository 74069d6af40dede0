package region_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/schema/schematest"
)

// TestSecurityDrippingBodyIsCutOff (issue 12, finding 9): a POST whose body drips a
// byte at a time held its connection and handler indefinitely. With a read timeout the
// server gives up on it long before the body could complete, over HTTP/1.1 and h2c.
func TestSecurityDrippingBodyIsCutOff(t *testing.T) {
	t.Parallel()
	cfg := nodeConfig()
	cfg.Limits = region.Limits{ReadTimeout: 300 * time.Millisecond}
	n := serveRouted(t, cfg, nil)
	const size, drip = 400, 50 * time.Millisecond // the whole body would take 20 s

	t.Run("http1", func(t *testing.T) {
		t.Parallel()
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.api, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /keyplane.v1.AuthService/ValidateToken HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
		answered := make(chan string, 1)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				answered <- "connection closed: " + err.Error()
				return
			}
			answered <- resp.Status
		}()
		sent := dripUntil(t, func(b []byte) error { _, err := conn.Write(b); return err }, size, drip, answered)
		if sent >= size {
			t.Fatalf("the server read all %d dripped bytes", size)
		}
		t.Logf("cut off after %d of %d bytes", sent, size)
	})
	t.Run("h2c", func(t *testing.T) {
		t.Parallel()
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: p}
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		req, err := http.NewRequest(http.MethodPost, n.api+"/keyplane.v1.AuthService/ValidateToken", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = size
		answered := make(chan string, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if err != nil {
				answered <- "stream reset: " + err.Error()
				return
			}
			resp.Body.Close()
			answered <- resp.Status
		}()
		sent := dripUntil(t, func(b []byte) error { _, err := pw.Write(b); return err }, size, drip, answered)
		_ = pw.Close()
		if sent >= size {
			t.Fatalf("the server read all %d dripped bytes", size)
		}
		t.Logf("cut off after %d of %d bytes", sent, size)
	})
}

// dripUntil writes one byte per interval until size are written or the server
// answers, and returns how many were written.
func dripUntil(t *testing.T, write func([]byte) error, size int, interval time.Duration, answered <-chan string) int {
	t.Helper()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for sent := 0; sent < size; sent++ {
		select {
		case how := <-answered:
			t.Logf("server: %s", how)
			return sent
		case <-tick.C:
		}
		if err := write([]byte(" ")); err != nil {
			t.Logf("write: %v", err)
			return sent
		}
	}
	return size
}

// TestSecurityConnectionCap (issue 12, finding 9): a node accepted every connection
// it was offered. With a cap of 2, two held connections are served and three more
// wait unserved; closing one lets exactly one of them in.
func TestSecurityConnectionCap(t *testing.T) {
	t.Parallel()
	cfg := nodeConfig()
	cfg.Limits = region.Limits{MaxConns: 2}
	n := serveRouted(t, cfg, nil)
	addr := strings.TrimPrefix(n.api, "http://")
	ask := func() (net.Conn, <-chan struct{}) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n") // keep-alive: the connection stays
		done := make(chan struct{})
		go func() {
			if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil && resp.StatusCode == http.StatusOK {
				close(done)
			}
		}()
		return conn, done
	}
	var held []net.Conn
	for range 2 {
		conn, done := ask()
		<-done
		held = append(held, conn)
	}
	answered := make(chan int, 3)
	for i := range 3 {
		_, done := ask()
		go func() { <-done; answered <- i }()
	}
	count := func(grace time.Duration) int {
		n := 0
		for {
			select {
			case <-answered:
				n++
			case <-time.After(grace):
				return n
			}
		}
	}
	if got := count(500 * time.Millisecond); got != 0 {
		t.Fatalf("%d connections past the cap of 2 were served while 2 were held", got)
	}
	_ = held[0].Close()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("no waiting connection was served after a held one closed")
	}
	if got := count(500 * time.Millisecond); got != 0 {
		t.Fatalf("closing one connection let %d more in, want exactly 1", got+1)
	}
}

// TestSecurityBodyLimits (issue 12, finding 9): every Connect handler bounds what it
// reads into memory, the health and reflection services too (connect reads any size
// unless told).
func TestSecurityBodyLimits(t *testing.T) {
	t.Parallel()
	n := serveRouted(t, nodeConfig(), nil)
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/keyplane.v1.AuthService/ValidateToken"} {
		resp, err := http.Post(n.api+path, "application/proto", strings.NewReader(strings.Repeat("\x0a", 2<<20)))
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, _ = io.Copy(&body, resp.Body)
		resp.Body.Close()
		if !strings.Contains(body.String(), "resource_exhausted") {
			t.Errorf("POST %s with 2 MiB: %s %.200q, want resource_exhausted", path, resp.Status, body.String())
		}
	}
}

// A forward may take up to the forward timeout, and its answer must still be written:
// a node refuses routing whose forward timeout the write timeout would cut.
func TestEnableRoutingNeedsForwardsShorterThanWrites(t *testing.T) {
	t.Parallel()
	store := schematest.NewStore(t, "us-east")
	for _, tt := range []struct {
		write, forward time.Duration
		ok             bool
	}{
		{write: time.Minute, forward: 0, ok: true}, // the default forward timeout, 10 s
		{write: time.Minute, forward: 59 * time.Second, ok: true},
		{write: time.Minute, forward: time.Minute},
		{write: 5 * time.Second, forward: 0},
	} {
		cfg := nodeConfig()
		cfg.IssuerBase = "http://127.0.0.1:1"
		cfg.Limits = region.Limits{WriteTimeout: tt.write}
		n, err := region.New(cfg, store, nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		peerLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = peerLn.Close() })
		err = n.EnableRouting(region.Routing{Peers: gossipView, ForwardTimeout: tt.forward, PeerListener: peerLn})
		if (err == nil) != tt.ok || err != nil && !strings.Contains(err.Error(), "write timeout") {
			t.Errorf("write timeout %v, forward timeout %v: %v, want ok=%v", tt.write, tt.forward, err, tt.ok)
		}
	}
}
