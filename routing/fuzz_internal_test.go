package routing

import (
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
