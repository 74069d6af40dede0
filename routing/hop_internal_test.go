package routing

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestTrustedIP(t *testing.T) {
	t.Parallel()
	key := HopKey("cluster secret")
	now := time.Unix(1_790_000_000, 0)
	signed := signHop(key, "us/us-1", "acme", "203.0.113.7", now)
	signed6 := signHop(key, "us/us-1", "acme", "2001:db8::1", now)
	sig := signed[strings.Index(signed, "sig=")+len("sig="):]
	flipped := "A"
	if sig[0] == 'A' {
		flipped = "B"
	}

	tests := []struct {
		name   string
		key    []byte
		header string
		tenant string
		now    time.Time
		want   string
	}{
		{name: "signed", key: key, header: signed, tenant: "acme", now: now, want: "203.0.113.7"},
		{name: "signed IPv6", key: key, header: signed6, tenant: "acme", now: now, want: "2001:db8::1"},
		{name: "a minute old", key: key, header: signed, tenant: "acme", now: now.Add(time.Minute), want: "203.0.113.7"},
		{name: "a minute ahead", key: key, header: signed, tenant: "acme", now: now.Add(-time.Minute), want: "203.0.113.7"},
		{name: "stale", key: key, header: signed, tenant: "acme", now: now.Add(time.Minute + time.Second), want: ""},
		{name: "from the future", key: key, header: signed, tenant: "acme", now: now.Add(-time.Minute - time.Second), want: ""},
		{name: "tampered signature", key: key, header: strings.Replace(signed, "sig="+sig[:1], "sig="+flipped, 1), tenant: "acme", now: now, want: ""},
		{name: "tampered ip", key: key, header: strings.Replace(signed, "ip=203.0.113.7", "ip=203.0.113.8", 1), tenant: "acme", now: now, want: ""},
		{name: "tampered timestamp", key: key, header: strings.Replace(signed, "ts=1790000000", "ts=1790000001", 1), tenant: "acme", now: now, want: ""},
		{name: "tampered sender", key: key, header: strings.Replace(signed, "us/us-1", "us/us-2", 1), tenant: "acme", now: now, want: ""},
		{name: "other tenant", key: key, header: signed, tenant: "globex", now: now, want: ""},
		{name: "other key", key: HopKey("another secret"), header: signed, tenant: "acme", now: now, want: ""},
		{name: "no key here", key: nil, header: signed, tenant: "acme", now: now, want: ""},
		{name: "unsigned", key: key, header: "us/us-1", tenant: "acme", now: now, want: ""},
		{name: "signature not base64", key: key, header: "us/us-1; ip=203.0.113.7; ts=1790000000; sig=!!!", tenant: "acme", now: now, want: ""},
		{name: "ip not an address", key: key, header: "us/us-1; ip=pipe; ts=1790000000; sig=" + sig, tenant: "acme", now: now, want: ""},
		{name: "empty", key: key, header: "", tenant: "acme", now: now, want: ""},
		{name: "garbage", key: key, header: ";;;=;ip;ts=;sig", tenant: "acme", now: now, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := trustedIP(tt.key, tt.header, tt.tenant, tt.now); got != tt.want {
				t.Errorf("trustedIP(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestSignHop(t *testing.T) {
	t.Parallel()
	key := HopKey("cluster secret")
	now := time.Unix(1_790_000_000, 0)
	tests := []struct {
		name       string
		key        []byte
		ip         string
		wantSigned bool
	}{
		{name: "key and IPv4", key: key, ip: "203.0.113.7", wantSigned: true},
		{name: "key and IPv6", key: key, ip: "2001:db8::1", wantSigned: true},
		{name: "no key", key: nil, ip: "203.0.113.7", wantSigned: false},
		{name: "not an IP", key: key, ip: "example.com", wantSigned: true},
		{name: "empty IP", key: key, ip: "", wantSigned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := signHop(tt.key, "us/us-1", "acme", tt.ip, now)
			h := parseHop(got)
			if h.From != "us/us-1" {
				t.Errorf("signHop = %q: from %q, want %q", got, h.From, "us/us-1")
			}
			if signed := h.Sig != ""; signed != tt.wantSigned {
				t.Fatalf("signHop = %q: signed %v, want %v", got, signed, tt.wantSigned)
			}
			if !tt.wantSigned {
				want := "us/us-1"
				if net.ParseIP(tt.ip) != nil {
					want += "; ip=" + tt.ip // unsigned: only a mutual-TLS peer takes it
				}
				if got != want {
					t.Errorf("signHop = %q, want %q", got, want)
				}
				return
			}
			wantIP := tt.ip
			if net.ParseIP(wantIP) == nil {
				wantIP = "" // signed, so the hop's origin is trusted, but no address
			}
			if h.IP != wantIP || h.TS != now.Unix() {
				t.Errorf("signHop = %q: ip %q ts %d, want ip %q ts %d", got, h.IP, h.TS, wantIP, now.Unix())
			}
			if from := hopFrom(tt.key, got, "acme", false, now); from != "us/us-1" {
				t.Errorf("hopFrom(signed %q) = %q, want us/us-1", got, from)
			}
			if from := hopFrom(tt.key, got, "other-tenant", false, now); from != "" {
				t.Errorf("hopFrom(%q signed for acme, tenant other-tenant) = %q, want none", got, from)
			}
		})
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{in: "1H", want: time.Hour, wantOK: true},
		{in: "2M", want: 2 * time.Minute, wantOK: true},
		{in: "3S", want: 3 * time.Second, wantOK: true},
		{in: "4m", want: 4 * time.Millisecond, wantOK: true},
		{in: "5u", want: 5 * time.Microsecond, wantOK: true},
		{in: "6n", want: 6 * time.Nanosecond, wantOK: true},
		{in: "99999999S", want: 99999999 * time.Second, wantOK: true}, // eight digits, the most allowed
		{in: "100000000S"}, // nine digits
		{in: ""},
		{in: "S"},
		{in: "5"},
		{in: "5s"},
		{in: "5x"},
		{in: "0S"},
		{in: "-1S"},
		{in: "1.5S"},
		{in: "S5"},
		{in: " 5S"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, ok := parseGRPCTimeout(tt.in)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCallerTimeout(t *testing.T) {
	t.Parallel()
	const limit = 10 * time.Second
	tests := []struct {
		name          string
		connect, grpc string
		want          time.Duration
	}{
		{name: "none", want: limit},
		{name: "connect", connect: "1500", want: 1500 * time.Millisecond},
		{name: "grpc", grpc: "2S", want: 2 * time.Second},
		{name: "connect wins over grpc", connect: "1000", grpc: "5S", want: time.Second},
		{name: "connect wins even when longer", connect: "5000", grpc: "1S", want: 5 * time.Second},
		{name: "connect zero falls back to grpc", connect: "0", grpc: "2S", want: 2 * time.Second},
		{name: "connect negative", connect: "-5", want: limit},
		{name: "connect not a number", connect: "soon", grpc: "3S", want: 3 * time.Second},
		{name: "grpc bad", grpc: "3s", want: limit},
		{name: "connect capped", connect: "60000", want: limit},
		{name: "grpc capped", grpc: "1H", want: limit},
		// Values whose conversion to a Duration overflows int64 must still be capped,
		// not wrap around to a negative (already expired) timeout.
		{name: "connect overflowing", connect: "9223372036854775807", want: limit},
		{name: "grpc overflowing", grpc: "99999999H", want: limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tt.connect != "" {
				h.Set("Connect-Timeout-Ms", tt.connect)
			}
			if tt.grpc != "" {
				h.Set("Grpc-Timeout", tt.grpc)
			}
			if got := callerTimeout(h, limit); got != tt.want {
				t.Errorf("callerTimeout(Connect-Timeout-Ms %q, Grpc-Timeout %q) = %v, want %v", tt.connect, tt.grpc, got, tt.want)
			}
		})
	}
}

func TestSetTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		in          http.Header
		left        time.Duration
		wantConnect string
		wantGRPC    string
	}{
		{name: "connect", in: http.Header{}, left: 1500 * time.Millisecond, wantConnect: "1500"},
		{name: "grpc keeps its header", in: http.Header{"Grpc-Timeout": {"5S"}}, left: 2 * time.Second, wantGRPC: "2000m"},
		{name: "at least a millisecond", in: http.Header{}, left: time.Microsecond, wantConnect: "1"},
		{name: "expired", in: http.Header{}, left: -time.Second, wantConnect: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			setTimeout(tt.in, tt.left)
			if got := tt.in.Get("Connect-Timeout-Ms"); got != tt.wantConnect {
				t.Errorf("Connect-Timeout-Ms = %q, want %q", got, tt.wantConnect)
			}
			if got := tt.in.Get("Grpc-Timeout"); got != tt.wantGRPC {
				t.Errorf("Grpc-Timeout = %q, want %q", got, tt.wantGRPC)
			}
		})
	}
}

func TestCopyHeaders(t *testing.T) {
	t.Parallel()
	src := http.Header{
		"Authorization":    {"Bearer x"},
		"Content-Type":     {"application/grpc"},
		"Connection":       {"close"},
		"Keep-Alive":       {"timeout=5"},
		"Upgrade":          {"h2c"},
		"Te":               {"trailers"},
		HopHeader:          {"us/us-1"},
		EpochHeader:        {"3"},
		RouteHeader:        {RouteLocal},
		ViaHeader:          {"us/us-1"},
		"X-Multi":          {"a", "b"},
		"Trailer":          {"Grpc-Status"},
		"Proxy-Connection": {"keep-alive"},
	}
	dst := http.Header{}
	copyHeaders(dst, src)
	want := http.Header{
		"Authorization": {"Bearer x"},
		"Content-Type":  {"application/grpc"},
		"Te":            {"trailers"},
		"X-Multi":       {"a", "b"},
	}
	if len(dst) != len(want) {
		t.Errorf("copied %d headers %v, want %d %v", len(dst), dst, len(want), want)
	}
	for k, vv := range want {
		if got := strings.Join(dst[k], ","); got != strings.Join(vv, ",") {
			t.Errorf("%s = %q, want %q", k, got, strings.Join(vv, ","))
		}
	}

	t.Run("te other than trailers", func(t *testing.T) {
		t.Parallel()
		dst := http.Header{}
		copyHeaders(dst, http.Header{"Te": {"gzip"}})
		if got := dst.Get("Te"); got != "" {
			t.Errorf("Te = %q, want it dropped", got)
		}
	})
	t.Run("copy does not alias the source", func(t *testing.T) {
		t.Parallel()
		dst := http.Header{}
		copyHeaders(dst, src)
		dst["X-Multi"][0] = "changed"
		if got := src["X-Multi"][0]; got != "a" {
			t.Errorf("source X-Multi = %q after changing the copy, want %q", got, "a")
		}
	})
}

// TestHopFromNeedsTrust: the entry region (request.region) comes from a hop only over
// an authenticated connection or when the hop is signed, fresh and for this tenant.
func TestHopFromNeedsTrust(t *testing.T) {
	t.Parallel()
	key := HopKey("cluster secret")
	now := time.Unix(1_790_000_000, 0)
	signed := signHop(key, "eu-west/eu-west-1", "acme", "203.0.113.7", now)
	tests := []struct {
		name          string
		key           []byte
		header        string
		authenticated bool
		at            time.Time
		want          string
	}{
		{"signed", key, signed, false, now, "eu-west/eu-west-1"},
		{"unsigned, authenticated connection", nil, "eu-west/eu-west-1; ip=203.0.113.7", true, now, "eu-west/eu-west-1"},
		{"unsigned, unauthenticated", key, "eu-west/eu-west-1; ip=203.0.113.7", false, now, ""},
		{"no key, unauthenticated", nil, signed, false, now, ""},
		{"stale signature", key, signed, false, now.Add(2 * hopSkew), ""},
		{"signature of another key", HopKey("another"), signed, false, now, ""},
		{"origin edited", key, strings.Replace(signed, "eu-west/", "us-east/", 1), false, now, ""},
	}
	for _, tt := range tests {
		if got := hopFrom(tt.key, tt.header, "acme", tt.authenticated, tt.at); got != tt.want {
			t.Errorf("%s: hopFrom = %q, want %q", tt.name, got, tt.want)
		}
	}
}
