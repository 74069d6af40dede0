package region

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRateLimitFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want RateLimit
		err  bool
	}{
		{in: "5", want: RateLimit{5, 10}},
		{in: "0.5:3", want: RateLimit{0.5, 3}},
		{in: "off", want: RateLimit{PerSecond: -1}},
		{in: "0", err: true},
		{in: "-1", err: true},
		{in: "NaN", err: true},
		{in: "+Inf", err: true},
		{in: "5:0", err: true},
		{in: "5:x", err: true},
		{in: "", err: true},
	} {
		var r RateLimit
		err := r.Set(c.in)
		if (err != nil) != c.err || (!c.err && r != c.want) {
			t.Errorf("Set(%q): got %+v, %v; want %+v, error %v", c.in, r, err, c.want, c.err)
		}
		if !c.err {
			var back RateLimit
			if err := back.Set(r.String()); err != nil || back != r {
				t.Errorf("Set(%q).String() = %q does not parse back: %+v %v", c.in, r.String(), back, err)
			}
		}
	}
}

// TestKeyedLimiterBounded: whatever the number of keys, the limiter keeps at most its
// maximum, and a key's bucket limits it.
func TestKeyedLimiterBounded(t *testing.T) {
	t.Parallel()
	k := newKeyedLimiter(RateLimit{PerSecond: 1, Burst: 2}, 100)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10_000 {
		k.allow(fmt.Sprintf("198.51.100.%d/%d", i%256, i), now)
		if k.size() > 100 {
			t.Fatalf("after %d keys: %d buckets, want at most 100", i+1, k.size())
		}
	}
	ok1, _ := k.allow("a", now)
	ok2, _ := k.allow("a", now)
	ok3, wait := k.allow("a", now)
	if !ok1 || !ok2 || ok3 || wait <= 0 || wait > time.Second {
		t.Fatalf("burst of 2: %v %v %v (wait %s); want two allowed, the third told to wait up to 1s", ok1, ok2, ok3, wait)
	}
	if ok, _ := k.allow("a", now.Add(time.Second)); !ok {
		t.Fatal("a second later the bucket should have a token")
	}
	// Idle buckets go first: after they refill, a new key evicts them.
	later := now.Add(time.Minute)
	for i := range 100 {
		k.allow(fmt.Sprintf("fresh-%d", i), later)
	}
	if k.size() > 100 {
		t.Fatalf("%d buckets", k.size())
	}
	if off := newKeyedLimiter(RateLimit{PerSecond: -1}, 10); off.size() != 0 {
		t.Fatal("an off limiter keeps buckets")
	} else if ok, _ := off.allow("x", now); !ok {
		t.Fatal("an off limiter refused")
	}
}

func TestAutoHashConcurrency(t *testing.T) {
	t.Parallel()
	if n := AutoHashConcurrency(); n < 1 || n > MaxAutoHashConcurrency {
		t.Fatalf("AutoHashConcurrency() = %d, want 1 to %d", n, MaxAutoHashConcurrency)
	}
	if memoryLimit() == 0 {
		t.Fatal("no memory limit could be read (cgroup, GOMEMLIMIT or /proc/meminfo)")
	}
}

func TestLoginConfigValidate(t *testing.T) {
	t.Parallel()
	if err := (LoginConfig{}).Validate(); err != nil {
		t.Fatalf("zero value: %v", err)
	}
	for _, c := range []LoginConfig{
		{HashConcurrency: -1},
		{HashWait: -time.Second},
		{StepUpWindow: time.Second},
		{StepUpWindow: 48 * time.Hour},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

func TestSourceIP(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1:5000":             "127.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":      "192.0.2.7", // an IPv4 client on a dual-stack listener
		"[fe80::1%eth0]:80":          "fe80::/64", // counted without its zone
		"not an address":             "",
		"":                           "",
	} {
		if got := sourceIP(in); got != want {
			t.Errorf("sourceIP(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPairLimiterKeepsNoBucketForImpossibleTenants: the tenant a request names is
// chosen by the caller, up to a header's size; one that cannot exist (not a tenant
// id) gets no bucket, so random long names cannot fill the limiter or evict real
// tenants' buckets. Real tenants are still limited.
func TestPairLimiterKeepsNoBucketForImpossibleTenants(t *testing.T) {
	t.Parallel()
	m, err := newMetrics(prometheus.NewRegistry(), Config{Region: "us-east", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	p := newPairLimiter("token", RateLimit{PerSecond: -1}, RateLimit{PerSecond: 0.0001, Burst: 1}, 100)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		if err := p.allow(context.Background(), m, "", strings.Repeat("X", 1000)+strconv.Itoa(i), now); err != nil {
			t.Fatalf("an impossible tenant was limited: %v", err)
		}
	}
	if n := p.perTen.size(); n != 0 {
		t.Fatalf("%d tenant buckets for impossible tenants, want 0", n)
	}
	if err := p.allow(context.Background(), m, "", "acme", now); err != nil {
		t.Fatal(err)
	}
	if err := p.allow(context.Background(), m, "", "acme", now); err == nil {
		t.Fatal("a real tenant past its burst was not limited")
	}
}
