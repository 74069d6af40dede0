package geoip_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/keyplane/keyplane/region/geoip"
)

// writeMMDB writes a country database mapping each CIDR to its iso_code (a GeoIP2
// Country record: {"country": {"iso_code": code}}), replacing path atomically.
func writeMMDB(t *testing.T, path string, countries map[string]string) {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-Country", IncludeReservedNetworks: true, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, code := range countries {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(code)}}); err != nil {
			t.Fatal(err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// touch moves path's modification time, so a rewrite of the same size is seen as a
// change on file systems with coarse timestamps too.
func touch(t *testing.T, path string, by time.Duration) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime().Add(by), fi.ModTime().Add(by)); err != nil {
		t.Fatal(err)
	}
}

func TestCountry(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "country.mmdb")
	writeMMDB(t, path, map[string]string{"127.0.0.0/8": "DE", "::1/128": "US", "192.0.2.0/24": "de", "198.51.100.0/24": "XYZ"})
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ ip, want string }{
		{"127.0.0.1", "DE"},
		{"127.255.0.9", "DE"},
		{"::ffff:127.0.0.1", "DE"},
		{"::1", "US"},
		{"::2", ""},
		{"8.8.8.8", ""},
		{"192.0.2.1", ""},    // lower case: not a code
		{"198.51.100.1", ""}, // three letters: not alpha-2
	} {
		if got := db.Country(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Country(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

func TestOpenRefusesWhatIsNotAnMMDB(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := geoip.Open(filepath.Join(dir, "missing.mmdb"), nil); err == nil {
		t.Fatal("Open of a missing file succeeded")
	}
	bad := filepath.Join(dir, "bad.mmdb")
	if err := os.WriteFile(bad, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := geoip.Open(bad, nil); err == nil {
		t.Fatal("Open of a text file succeeded")
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "country.mmdb")
	writeMMDB(t, path, map[string]string{"127.0.0.0/8": "DE"})
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if changed, err := db.Reload(); changed || err != nil {
		t.Fatalf("Reload of an unchanged file = %v, %v; want false, nil", changed, err)
	}

	writeMMDB(t, path, map[string]string{"127.0.0.0/8": "FR"})
	touch(t, path, time.Second)
	if changed, err := db.Reload(); !changed || err != nil {
		t.Fatalf("Reload of a changed file = %v, %v; want true, nil", changed, err)
	}
	if got := db.Country(lo); got != "FR" {
		t.Fatalf("after reload Country = %q, want FR", got)
	}

	// A broken file is not taken: the loaded database stays in use.
	if err := os.WriteFile(path, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := db.Reload(); changed || err == nil {
		t.Fatalf("Reload of a broken file = %v, %v; want false and an error", changed, err)
	}
	if got := db.Country(lo); got != "FR" {
		t.Fatalf("after a broken file Country = %q, want FR", got)
	}
}

// TestLookupsReload: lookups notice a changed file by themselves once CheckEvery has
// passed.
func TestLookupsReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "country.mmdb")
	writeMMDB(t, path, map[string]string{"127.0.0.0/8": "DE"})
	db, err := geoip.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.CheckEvery = time.Nanosecond
	lo := netip.MustParseAddr("127.0.0.1")
	writeMMDB(t, path, map[string]string{"127.0.0.0/8": "JP"})
	touch(t, path, time.Second)
	for range 1000 {
		if db.Country(lo) == "JP" {
			return
		}
	}
	t.Fatalf("Country = %q after 1000 lookups, want JP from the rewritten file", db.Country(lo))
}
