package region

import (
	"net/netip"
	"testing"
)

func TestPeerIP(t *testing.T) {
	t.Parallel()
	tests := []struct{ addr, want string }{
		{"203.0.113.7:5555", "203.0.113.7"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1"},
		{"203.0.113.7:0", "203.0.113.7"}, // an authenticated hop's client address
		{"", ""},                         // a hop whose client address is unknown
		{"203.0.113.7", ""},
		{"example.com:80", ""},
		{"[fe80::1%eth0]:80", ""},
		{"@:80", ""},
	}
	for _, tt := range tests {
		if got := peerIP(tt.addr); got != tt.want {
			t.Errorf("peerIP(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// FuzzPeerIP: whatever the remote address, request.ip is empty or a canonical IP
// address without a zone.
func FuzzPeerIP(f *testing.F) {
	for _, s := range []string{"203.0.113.7:5555", "[2001:db8::1]:443", "", "x", "[::ffff:1.2.3.4]:1", "[fe80::1%25eth0]:1", "1.2.3.4:99999:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		ip := peerIP(addr)
		if ip == "" {
			return
		}
		a, err := netip.ParseAddr(ip)
		if err != nil || a.String() != ip || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("peerIP(%q) = %q, not a canonical IP", addr, ip)
		}
	})
}
