package routing

import (
	"net/http"
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
