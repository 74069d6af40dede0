package routing_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/routing"
)

// testCA is a cluster CA written to a directory, issuing node certificates.
type testCA struct {
	dir       string
	cert, key []byte
	certFile  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	cert, key, err := routing.NewCA(name, routing.CertOptions{Validity: time.Hour})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	dir := t.TempDir()
	ca := &testCA{dir: dir, cert: cert, key: key, certFile: filepath.Join(dir, "ca.crt")}
	writeFile(t, ca.certFile, cert)
	return ca
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// node issues a certificate naming id and returns the PeerTLS reading it (and this
// CA as the cluster CA, unless trust names another CA file).
func (ca *testCA) node(t *testing.T, id routing.Identity, trust string) *routing.PeerTLS {
	t.Helper()
	certFile, keyFile := ca.issue(t, id)
	if trust == "" {
		trust = ca.certFile
	}
	p, err := routing.LoadPeerTLS(certFile, keyFile, trust)
	if err != nil {
		t.Fatalf("LoadPeerTLS: %v", err)
	}
	return p
}

func (ca *testCA) issue(t *testing.T, id routing.Identity) (certFile, keyFile string) {
	t.Helper()
	cert, key, err := routing.IssueNodeCert(ca.cert, ca.key, id, routing.CertOptions{Validity: time.Hour, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatalf("IssueNodeCert(%s): %v", id, err)
	}
	// Each certificate gets its own directory: parallel subtests issue certificates
	// for the same identity, and a shared path would be read while another subtest
	// rewrites it ("failed to find any PEM data").
	base := filepath.Join(t.TempDir(), id.Region+"-"+id.NodeID)
	writeFile(t, base+".crt", cert)
	writeFile(t, base+".key", key)
	return base + ".crt", base + ".key"
}

// startPeer serves h on a real mutual-TLS peer listener (as a node's --peer-listen).
func startPeer(t *testing.T, p *routing.PeerTLS, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	go func() { _ = srv.Serve(tls.NewListener(ln, p.ServerConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// homeRouter is the us-1 home node: a Router in region us whose peer listener is
// served over mutual TLS with p, in front of a recorder.
func homeRouter(t *testing.T, p *routing.PeerTLS) (url string, rec *recorder) {
	t.Helper()
	rec = &recorder{name: "us-1"}
	tenants := newFakeTenants()
	tenants.home("globex", "us", 7)
	r, err := routing.NewRouter(routing.Config{Region: "us", NodeID: "us-1", Directory: routing.NewDirectory(tenants, time.Hour),
		Peers: fakePeers{}, PeerTLS: p, Metrics: prometheus.NewRegistry()}, rec)
	if err != nil {
		t.Fatal(err)
	}
	return startPeer(t, p, r.PeerHandler()), rec
}

func tlsMember(region, node, peerURL string) routing.Member {
	m := member(region, node, "http://"+refusingAddr()) // the API URL is never used to forward
	m.Peer = peerURL
	return m
}

// TestSecurityForwardOnlyToCertifiedPeer (issue 12, finding 1): a process that holds
// the gossip key, or a real node gossiping as another, advertises itself as a home
// node of us. The forwarder must send it nothing (no header, no body: the operator
// secret and passwords travel in them) and serve degraded instead, unless its
// certificate chains to the cluster CA and names exactly the region and node id it
// gossips.
func TestSecurityForwardOnlyToCertifiedPeer(t *testing.T) {
	t.Parallel()
	cluster := newTestCA(t, "cluster")
	rogueCA := newTestCA(t, "rogue")
	tests := []struct {
		name      string
		home      func(t *testing.T) *routing.PeerTLS // nil: a plaintext h2c peer
		gossipAs  string                              // node id the peer gossips
		wantRoute string
	}{
		{name: "certified peer (control)", home: func(t *testing.T) *routing.PeerTLS {
			return cluster.node(t, routing.Identity{Region: "us", NodeID: "us-1"}, "")
		}, gossipAs: "us-1", wantRoute: routing.RouteForwarded},
		{name: "certificate of another CA", home: func(t *testing.T) *routing.PeerTLS {
			return rogueCA.node(t, routing.Identity{Region: "us", NodeID: "us-1"}, "")
		}, gossipAs: "us-1", wantRoute: routing.RouteDegraded},
		{name: "certificate naming another node", home: func(t *testing.T) *routing.PeerTLS {
			return cluster.node(t, routing.Identity{Region: "us", NodeID: "us-2"}, "")
		}, gossipAs: "us-1", wantRoute: routing.RouteDegraded},
		{name: "certificate naming another region", home: func(t *testing.T) *routing.PeerTLS {
			return cluster.node(t, routing.Identity{Region: "eu", NodeID: "us-1"}, "")
		}, gossipAs: "us-1", wantRoute: routing.RouteDegraded},
		{name: "no TLS at all", gossipAs: "rogue-1", wantRoute: routing.RouteDegraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				url string
				rec *recorder
			)
			if tt.home != nil {
				url, rec = homeRouter(t, tt.home(t))
			} else {
				rec = &recorder{name: "rogue"}
				url = startH2C(t, rec).URL
			}
			self := cluster.node(t, routing.Identity{Region: here, NodeID: "eu-1"}, "")
			f := newFixture(t, nil, fakePeers{"us": {tlsMember("us", tt.gossipAs, url)}}, func(c *routing.Config) { c.PeerTLS = self })
			resp, body := f.do(t, request{method: "POST", target: "/v1/users", body: `{"password":"hunter2"}`,
				header: map[string]string{routing.TenantHeader: "globex", "Authorization": "Bearer operator-secret"}})
			if got := resp.Header.Get(routing.RouteHeader); got != tt.wantRoute {
				t.Errorf("%s = %q (body %q), want %q", routing.RouteHeader, got, body, tt.wantRoute)
			}
			want := 0
			if tt.wantRoute == routing.RouteForwarded {
				want = 1
			}
			if got := rec.count(); got != want {
				t.Errorf("the advertised home node received %d requests, want %d", got, want)
			}
		})
	}
}

// TestSecurityPeerListenerRequiresClusterCert (issue 12, finding 1): whoever reaches a
// node's peer listener cannot get a request served there without a client
// certificate of the cluster CA, nor pass a hop as another node's.
func TestSecurityPeerListenerRequiresClusterCert(t *testing.T) {
	t.Parallel()
	cluster := newTestCA(t, "cluster")
	rogueCA := newTestCA(t, "rogue")
	url, rec := homeRouter(t, cluster.node(t, routing.Identity{Region: "us", NodeID: "us-1"}, ""))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cluster.cert)
	clientCert := func(ca *testCA, id routing.Identity) []tls.Certificate {
		certFile, keyFile := ca.issue(t, id)
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	eu1 := routing.Identity{Region: "eu", NodeID: "eu-1"}
	tests := []struct {
		name       string
		certs      []tls.Certificate
		hop        string
		wantStatus int // 0: the handshake must fail
	}{
		{name: "no client certificate", hop: "eu/eu-1"},
		{name: "certificate of another CA", certs: clientCert(rogueCA, eu1), hop: "eu/eu-1"},
		{name: "hop naming another node", certs: clientCert(cluster, eu1), hop: "eu/eu-2", wantStatus: http.StatusForbidden},
		{name: "not a hop", certs: clientCert(cluster, eu1), wantStatus: http.StatusBadRequest},
		{name: "cluster certificate (control)", certs: clientCert(cluster, eu1), hop: "eu/eu-1", wantStatus: http.StatusOK},
	}
	// One case at a time: each compares the node's count of served requests before and
	// after its own, which a case running alongside (the control, served) would move.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := rec.count()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: tt.certs, MinVersion: tls.VersionTLS13}}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, url+"/v1/users", nil)
			req.Header.Set(routing.TenantHeader, "globex")
			if tt.hop != "" {
				req.Header.Set(routing.HopHeader, tt.hop)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if tt.wantStatus == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %s, want the TLS handshake refused", resp.Status)
				}
			} else {
				if err != nil {
					t.Fatalf("request: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus {
					t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
				}
			}
			if tt.wantStatus != http.StatusOK && rec.count() != before {
				t.Errorf("the node served the request")
			}
		})
	}
}

// TestSecurityForgedHopOnPublicPort (issue 12, findings 6 and 12): a client sends a
// Keyplane-Hop (and a placement epoch) to a node's client-facing listener. Before,
// the node served it locally without routing and took the hop's IP as the client's.
// Now the headers are dropped: the request is forwarded to the home region, whose
// node sees the real client address, carried by an authenticated hop.
func TestSecurityForgedHopOnPublicPort(t *testing.T) {
	t.Parallel()
	cluster := newTestCA(t, "cluster")
	url, rec := homeRouter(t, cluster.node(t, routing.Identity{Region: "us", NodeID: "us-1"}, ""))
	self := cluster.node(t, routing.Identity{Region: here, NodeID: "eu-1"}, "")
	f := newFixture(t, nil, fakePeers{"us": {tlsMember("us", "us-1", url)}}, func(c *routing.Config) { c.PeerTLS = self })
	forged := "us/us-1; ip=10.0.0.1; ts=" + time.Now().Format("20060102") + "; sig=AAAA"
	resp, _ := f.do(t, request{target: "/v1/users", header: map[string]string{routing.TenantHeader: "globex",
		routing.HopHeader: forged, routing.EpochHeader: "999999"}})
	if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteForwarded {
		t.Fatalf("%s = %q, want %q: a forged hop stopped routing", routing.RouteHeader, got, routing.RouteForwarded)
	}
	if n := f.local.count(); n != 0 {
		t.Errorf("the forwarder served %d requests itself, want 0", n)
	}
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("home saw %d requests, want 1", len(reqs))
	}
	if host, _, _ := net.SplitHostPort(reqs[0].RemoteAddr); host != "127.0.0.1" {
		t.Errorf("home saw client address %q, want the real client's 127.0.0.1", reqs[0].RemoteAddr)
	}
	if got := reqs[0].Header.Get(routing.EpochHeader); got != "7" {
		t.Errorf("home saw %s %q, want the forwarder's 7", routing.EpochHeader, got)
	}
}

// TestPeerTLSReload: writing new certificate files (here a whole new CA, as a CA
// rotation ends) makes new handshakes use them, on both sides, without a restart.
func TestPeerTLSReload(t *testing.T) {
	t.Parallel()
	old := newTestCA(t, "cluster-2026")
	id := routing.Identity{Region: "us", NodeID: "us-1"}
	certFile, keyFile := old.issue(t, id)
	server, err := routing.LoadPeerTLS(certFile, keyFile, old.certFile)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := homeRouter(t, server)
	addr := url[len("https://"):]

	// handshake dials the peer listener as a client with a certificate of ca, and
	// returns the serial number of the certificate the listener presented.
	handshake := func(ca *testCA) (string, error) {
		cf, kf := ca.issue(t, routing.Identity{Region: "eu", NodeID: "eu-1"})
		c, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{c}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // the test inspects the certificate itself
		if err != nil {
			return "", err
		}
		defer conn.Close()
		// TLS 1.3 reports a refused client certificate on the first read, so ask for
		// an answer: the listener sends one (a 400: no hop header) only once it has
		// accepted the certificate. The deadline only keeps a broken listener from
		// hanging the test; it is not part of the verdict.
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")); err != nil {
			return "", err
		}
		if _, err := conn.Read(make([]byte, 1)); err != nil {
			return "", err
		}
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	serialOf := func(file string) string {
		b, _ := os.ReadFile(file)
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}

	if got, err := handshake(old); err != nil || got != serialOf(certFile) {
		t.Fatalf("before the rotation: serial %s, err %v; want %s", got, err, serialOf(certFile))
	}
	next := newTestCA(t, "cluster-2027")
	newCert, newKey := next.issue(t, id)
	caPEM, _ := os.ReadFile(next.certFile)
	certPEM, _ := os.ReadFile(newCert)
	keyPEM, _ := os.ReadFile(newKey)
	writeFile(t, keyFile, keyPEM)
	writeFile(t, certFile, certPEM)
	writeFile(t, old.certFile, caPEM)

	got, err := handshake(next)
	if err != nil {
		t.Fatalf("after the rotation, a client of the new CA: %v", err)
	}
	if want := serialOf(certFile); got != want {
		t.Errorf("after the rotation the listener presented serial %s, want the new certificate's %s", got, want)
	}
	if _, err := handshake(old); err == nil {
		t.Errorf("after the rotation a client certificate of the old CA was accepted")
	}
	if got := server.Identity(); got != id {
		t.Errorf("Identity() = %s, want %s", got, id)
	}

	// A certificate naming another node is not taken: the last good one stays.
	want := serialOf(certFile)
	otherCert, otherKey := next.issue(t, routing.Identity{Region: "us", NodeID: "us-2"})
	for from, to := range map[string]string{otherKey: keyFile, otherCert: certFile} {
		b, _ := os.ReadFile(from)
		writeFile(t, to, b)
	}
	if got, err := handshake(next); err != nil || got != want {
		t.Errorf("after a certificate for another node was written: serial %s, err %v; want the previous %s", got, err, want)
	}
	if got := server.Identity(); got != id {
		t.Errorf("Identity() = %s, want %s", got, id)
	}
}

// TestPeerTLSRefusesBadFiles: a certificate that does not chain to the CA, or names
// no node, is refused at load.
func TestPeerTLSRefusesBadFiles(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "other")
	certFile, keyFile := other.issue(t, routing.Identity{Region: "us", NodeID: "us-1"})
	if _, err := routing.LoadPeerTLS(certFile, keyFile, ca.certFile); err == nil {
		t.Errorf("LoadPeerTLS accepted a certificate of another CA")
	}
	if _, err := routing.LoadPeerTLS("", keyFile, ca.certFile); err == nil {
		t.Errorf("LoadPeerTLS accepted no certificate file")
	}
	if _, _, err := routing.IssueNodeCert(ca.cert, ca.key, routing.Identity{Region: "us/evil", NodeID: "x"}, routing.CertOptions{Validity: time.Hour}); err == nil {
		t.Errorf("IssueNodeCert accepted a region with a slash")
	}
	if _, _, err := routing.IssueNodeCert(ca.cert, other.key, routing.Identity{Region: "us", NodeID: "x"}, routing.CertOptions{Validity: time.Hour}); err == nil {
		t.Errorf("IssueNodeCert accepted a key that is not the CA's")
	}
}

// TestSecurityGossipKeyHolderGetsNoForward (issue 12, finding 1): the attack as
// reported, through gossip. Processes that hold the gossip key join as home nodes of
// us (rogue-1 serving plaintext, rogue-2 with a certificate of its own CA) beside the
// real us-1. Every forward for a us tenant must reach us-1 and none a rogue, however
// often the router picks a rogue first.
func TestSecurityGossipKeyHolderGetsNoForward(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("gossip cluster")
	}
	cluster := newTestCA(t, "cluster")
	rogueCA := newTestCA(t, "rogue")
	us1URL, us1 := homeRouter(t, cluster.node(t, routing.Identity{Region: "us", NodeID: "us-1"}, ""))
	rogue1 := &recorder{name: "rogue-1"}
	rogue1URL := startH2C(t, rogue1).URL
	rogue2URL, rogue2 := homeRouter(t, rogueCA.node(t, routing.Identity{Region: "us", NodeID: "rogue-2"}, ""))

	gossip := func(region, node, peerURL string, seeds ...string) *routing.Membership {
		return joinWith(t, routing.MembershipConfig{Region: region, NodeID: node, URL: "http://" + refusingAddr(), PeerURL: peerURL,
			Version: "v1", Bind: "127.0.0.1:0", Join: seeds, Profile: routing.ProfileLocal, Keys: [][]byte{clusterKey}})
	}
	eu1 := gossip(here, "eu-1", "https://"+refusingAddr())
	for _, m := range []*routing.Membership{eu1, gossip("us", "us-1", us1URL, eu1.Addr()),
		gossip("us", "rogue-1", rogue1URL, eu1.Addr()), gossip("us", "rogue-2", rogue2URL, eu1.Addr())} {
		m.SetReady(true)
	}
	eventually(t, "eu-1 sees three ready us nodes", func() bool { return len(eu1.Ready("us")) == 3 })

	self := cluster.node(t, routing.Identity{Region: here, NodeID: "eu-1"}, "")
	// DownFor ~0: a rogue whose handshake failed is tried again on the next call.
	f := newFixture(t, nil, nil, func(c *routing.Config) { c.Peers, c.PeerTLS, c.DownFor = eu1, self, time.Nanosecond })
	const calls = 12
	for i := range calls {
		resp, body := f.do(t, request{method: "POST", target: "/v1/users", body: `{"password":"hunter2"}`,
			header: map[string]string{routing.TenantHeader: "globex", "Authorization": "Bearer operator-secret"}})
		if got := resp.Header.Get(routing.RouteHeader); got != routing.RouteForwarded || body != "served by us-1" {
			t.Errorf("call %d: %s = %q, body %q; want forwarded to us-1", i, routing.RouteHeader, got, body)
		}
	}
	if got := us1.count(); got != calls {
		t.Errorf("us-1 served %d calls, want %d", got, calls)
	}
	// Each call tries a rogue first with probability 2/3: all 12 missing them is 2e-6.
	if got := metric(t, f.reg, "keyplane_forward_failures_total", "home_region", "us"); got == 0 {
		t.Errorf("no forward to a rogue was attempted: the test proved nothing")
	}
	if n1, n2 := rogue1.count(), rogue2.count(); n1+n2 != 0 {
		t.Errorf("rogues received requests: rogue-1 %d, rogue-2 %d; want none", n1, n2)
	}
}

// TestServingTLSReload: the API listener's certificate (serve --tls-cert) is re-read
// when its files change; new connections get the new one.
func TestServingTLSReload(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "public")
	certFile, keyFile := ca.issue(t, routing.Identity{Region: "us", NodeID: "api"})
	s, err := routing.LoadServingTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.cert)
	serial := func() string {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	newCert, newKey := ca.issue(t, routing.Identity{Region: "us", NodeID: "api-2"})
	for from, to := range map[string]string{newKey: keyFile, newCert: certFile} {
		b, _ := os.ReadFile(from)
		writeFile(t, to, b)
	}
	if after := serial(); after == before {
		t.Errorf("after new files the listener still presents serial %s", before)
	}
}
