// Package geoip maps IP addresses to countries with an IP → country database in
// MaxMind DB (MMDB) format: MaxMind's GeoLite2/GeoIP2 Country or City databases, or
// any database whose records carry country.iso_code the same way (DB-IP's, for
// example). Checks use it for the CEL variable request.country.
//
// The database is read into memory whole (not memory-mapped, so replacing the file
// cannot fault a lookup) and re-read when its modification time or size changes: a
// lookup looks at the file at most once every [DB.CheckEvery]. A file that does not
// open (half written, say) is not taken; the previous database stays in use.
package geoip

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// DefaultCheckEvery is how often DB looks for a changed file by default.
const DefaultCheckEvery = 10 * time.Second

// DB is an IP → country database read from a file. Safe for concurrent use by
// multiple goroutines.
type DB struct {
	path string
	log  *slog.Logger
	// CheckEvery is how often a lookup may look at the file for changes; zero or
	// negative means DefaultCheckEvery. Set it before the DB is used.
	CheckEvery time.Duration

	cur     atomic.Pointer[loaded]
	checked atomic.Int64 // when the file was last looked at (UnixNano)
	mu      sync.Mutex   // serializes reloads
}

// loaded is one read of the file. Immutable.
type loaded struct {
	r     *maxminddb.Reader
	stamp fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// Open reads the database at path. log may be nil (no logging); it hears of reloads
// and of changed files that were not taken.
func Open(path string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DB{path: path, log: log}
	l, err := read(path)
	if err != nil {
		return nil, err
	}
	d.cur.Store(l)
	d.checked.Store(time.Now().UnixNano())
	return d, nil
}

// read loads the file at path.
func read(path string) (*loaded, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database: %w", err)
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: not a MaxMind DB (MMDB) file: %w", path, err)
	}
	return &loaded{r: r, stamp: fileStamp{mod: fi.ModTime(), size: fi.Size()}}, nil
}

// Country returns the ISO 3166-1 alpha-2 code (such as "DE") of ip's country, or ""
// when the database has none for it (not in it, no country, not a two-letter code, or
// a record that does not decode).
func (d *DB) Country(ip netip.Addr) string {
	d.maybeReload()
	var code string
	if err := d.cur.Load().r.Lookup(ip.Unmap()).DecodePath(&code, "country", "iso_code"); err != nil {
		return ""
	}
	if len(code) != 2 || !upper(code[0]) || !upper(code[1]) {
		return ""
	}
	return code
}

func upper(c byte) bool { return c >= 'A' && c <= 'Z' }

// maybeReload looks at the file when CheckEvery has passed since the last look; one
// caller does, the others go on with the loaded database.
func (d *DB) maybeReload() {
	every := d.CheckEvery
	if every <= 0 {
		every = DefaultCheckEvery
	}
	last, now := d.checked.Load(), time.Now().UnixNano()
	if now-last < int64(every) || !d.checked.CompareAndSwap(last, now) {
		return
	}
	if _, err := d.Reload(); err != nil {
		d.log.Warn("geoip database changed but cannot be read; keeping the loaded one", "path", d.path, "err", err)
	}
}

// Reload re-reads the file if its modification time or size changed, and reports
// whether it did. On an error the loaded database stays in use.
func (d *DB) Reload() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fi, err := os.Stat(d.path)
	if err != nil {
		return false, fmt.Errorf("geoip database: %w", err)
	}
	if (fileStamp{mod: fi.ModTime(), size: fi.Size()}) == d.cur.Load().stamp {
		return false, nil
	}
	l, err := read(d.path)
	if err != nil {
		return false, err
	}
	d.cur.Store(l)
	d.log.Info("geoip database reloaded", "path", d.path, "build", l.r.Metadata.BuildTime().UTC().Format(time.RFC3339))
	return true, nil
}
