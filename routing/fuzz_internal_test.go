package routing

import (
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// FuzzHopHeader: a hop header from anyone never panics, and yields an IP only when
// signed with the key for that tenant.
func FuzzHopHeader(f *testing.F) {
	key := HopKey("fuzz-operator-secret-0123456789")
	now := time.Unix(1_800_000_000, 0)
	f.Add(signHop(key, "us-east/us-east-1", "acme", "203.0.113.7", now), "acme")
	f.Add("us-east/us-east-1", "acme")
	f.Add("a; ip=1.2.3.4; ts=1800000000; sig=AAAA", "acme")
	f.Add(";;;=;ip=;ts=-1;sig=%%%", "")
	f.Fuzz(func(t *testing.T, header, tenant string) {
		ip := trustedIP(key, header, tenant, now)
		if ip == "" {
			return
		}
		if signHop(key, parseHop(header).From, tenant, ip, time.Unix(parseHop(header).TS, 0)) == "" {
			t.Fatalf("trusted %q from %q but cannot re-sign it", ip, header)
		}
		if trustedIP(HopKey("another secret entirely"), header, tenant, now) != "" {
			t.Fatalf("header %q verifies under another key", header)
		}
	})
}

// FuzzCallerTimeout: whatever the timeout headers say, the forward gets a positive
// deadline no longer than the limit.
func FuzzCallerTimeout(f *testing.F) {
	for _, s := range []string{"100", "0", "-5", "9223372036854775807", "99999999H", "1n", "10m", "abc", ""} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, connectMS, grpc string) {
		h := http.Header{}
		h.Set("Connect-Timeout-Ms", connectMS)
		h.Set("Grpc-Timeout", grpc)
		limit := 10 * time.Second
		if d := callerTimeout(h, limit); d <= 0 || d > limit {
			t.Fatalf("callerTimeout(%q, %q) = %v, want (0, %v]", connectMS, grpc, d, limit)
		}
	})
}

// FuzzMemberMeta: whatever gossip metadata a peer sends, decoding never panics, and a
// member it yields has an identity a certificate can name and survives a round trip.
func FuzzMemberMeta(f *testing.F) {
	good, _ := json.Marshal(Member{Region: "us-east", NodeID: "us-east-1", URL: "http://127.0.0.1:8080", Peer: "https://127.0.0.1:8443", Ready: true, Boot: 1})
	f.Add(good)
	f.Add([]byte(`{"r":"us-east/evil","n":"x"}`))
	f.Add([]byte(`{"r":"","n":"x","ok":true}`))
	f.Add([]byte(`{"r":"a","n":"b","b":-1,"p":"javascript:alert(1)"}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, meta []byte) {
		m, ok := decodeMember(meta)
		if !ok {
			return
		}
		id := Identity{Region: m.Region, NodeID: m.NodeID}
		if !id.valid() || m.State != "alive" {
			t.Fatalf("decodeMember(%q) = %+v, an unusable member", meta, m)
		}
		u, err := url.Parse(id.URI().String()) // as x509 reads a URI SAN back
		if err != nil {
			t.Fatalf("identity %s: URI %q does not parse: %v", id, id.URI(), err)
		}
		if got, ok := identityOf(&x509.Certificate{URIs: []*url.URL{u}}); !ok || got != id {
			t.Fatalf("identity %s does not survive a certificate URI: %v %v", id, got, ok)
		}
		b, _ := json.Marshal(m)
		if again, ok := decodeMember(b); !ok || again != m {
			t.Fatalf("decodeMember round trip: %+v → %+v", m, again)
		}
	})
}

// FuzzMoveMessage: a move broadcast never panics the decoder, and one it accepts names
// a tenant and an epoch that is not negative.
func FuzzMoveMessage(f *testing.F) {
	f.Add([]byte(`{"moved":"globex","epoch":8}`))
	f.Add([]byte(`{"moved":"","epoch":8}`))
	f.Add([]byte(`{"moved":"x","epoch":-1}`))
	f.Add([]byte(`{"moved":"x","epoch":1e99}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		mv, ok := decodeMove(b)
		if ok && (mv.Tenant == "" || mv.Epoch < 0 || len(mv.Tenant) > 256) {
			t.Fatalf("decodeMove(%q) accepted %+v", b, mv)
		}
	})
}

// FuzzHopIP: whatever a hop header says, the client IP taken from it is empty or an
// IP address; over an unauthenticated connection only a signed one is taken, and
// without a key none.
func FuzzHopIP(f *testing.F) {
	key := HopKey("fuzz-operator-secret-0123456789")
	now := time.Unix(1_800_000_000, 0)
	f.Add(signHop(key, "us-east/us-east-1", "acme", "203.0.113.7", now), "acme", true)
	f.Add("us-east/us-east-1; ip=10.0.0.1", "acme", false)
	f.Add("x; ip=::1; ip=999.1.1.1", "", true)
	f.Add("; ip=1.2.3.4%eth0", "t", true)
	f.Fuzz(func(t *testing.T, header, tenant string, authenticated bool) {
		for _, k := range [][]byte{key, nil} {
			ip := hopIP(k, header, tenant, authenticated, now)
			if ip != "" && net.ParseIP(ip) == nil {
				t.Fatalf("hopIP(%q) = %q, not an IP", header, ip)
			}
			if !authenticated && len(k) == 0 && ip != "" {
				t.Fatalf("hopIP took %q from an unauthenticated, unsigned hop %q", ip, header)
			}
			if !authenticated && ip != "" && trustedIP(k, header, tenant, now) != ip {
				t.Fatalf("hopIP took an unsigned %q over an unauthenticated connection", ip)
			}
		}
	})
}

// FuzzTenantOf: whatever the header and path, TenantOf never panics; a tenant it
// returns is the one the header names or, without a header, the one the handler's
// http.ServeMux reads from /t/{tenant}/; a header and path naming different tenants
// are always refused.
func FuzzTenantOf(f *testing.F) {
	for _, s := range [][2]string{{"acme", "/t/acme/oauth2/token"}, {"", "/t/acme/jwks"}, {"acme", "/t/globex/x"},
		{"", "/t/a%2Fb/x"}, {"a/b", "/t/a%2Fb/x"}, {"", "/t/%zz/x"}, {"", "/keyplane.v1.AuthService/Login"}, {"x", "/t//x"}} {
		f.Add(s[0], s[1])
	}
	var seen string
	mux := http.NewServeMux()
	mux.HandleFunc("/t/{tenant}/", func(_ http.ResponseWriter, r *http.Request) { seen = r.PathValue("tenant") })
	f.Fuzz(func(t *testing.T, header, path string) {
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return
		}
		r := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}
		if header != "" {
			r.Header.Set(TenantHeader, header)
		}
		got, err := TenantOf(r)
		fromPath, perr := pathTenant(u)
		switch {
		case perr != nil:
			if err == nil {
				t.Fatalf("path %q does not parse (%v) yet TenantOf = %q", path, perr, got)
			}
		case header != "" && fromPath != "" && header != fromPath:
			if err == nil {
				t.Fatalf("header %q and path %q disagree, yet TenantOf = %q", header, path, got)
			}
		case err != nil:
			t.Fatalf("TenantOf(header %q, path %q): %v", header, path, err)
		case header != "" && got != header:
			t.Fatalf("TenantOf(header %q, path %q) = %q, want the header", header, path, got)
		case header == "":
			seen = "\x00"
			mux.ServeHTTP(httptest.NewRecorder(), r)
			if seen != "\x00" && seen != got {
				t.Fatalf("path %q: TenantOf = %q but the handler reads tenant %q", path, got, seen)
			}
		}
	})
}
