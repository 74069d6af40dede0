package routing_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// fakeTenants is an in-memory routing.TenantReader that counts reads. Safe for
// concurrent use.
type fakeTenants struct {
	mu      sync.Mutex
	tenants map[string]schema.Tenant
	err     error
	reads   int
	hold    chan struct{} // when set, a read waits for it to close (or its context to end)
}

func newFakeTenants() *fakeTenants { return &fakeTenants{tenants: map[string]schema.Tenant{}} }

func (f *fakeTenants) GetTenant(ctx context.Context, id string) (schema.Tenant, error) {
	f.mu.Lock()
	f.reads++
	// The row as it is when the read starts, as a database read's snapshot.
	t, ok := f.tenants[id]
	err, hold := f.err, f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return schema.Tenant{}, ctx.Err()
		}
	}
	if err != nil {
		return schema.Tenant{}, err
	}
	if !ok {
		return schema.Tenant{}, fmt.Errorf("%w: tenant %q", schema.ErrNotFound, id)
	}
	return t, nil
}

// home places a tenant in a region at an epoch.
func (f *fakeTenants) home(id, region string, epoch int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tenants[id] = schema.Tenant{ID: id, Name: id, HomeRegion: region, PlacementEpoch: epoch}
}

func (f *fakeTenants) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeTenants) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

var _ routing.TenantReader = (*fakeTenants)(nil)

func TestDirectoryLookup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// between runs after the first lookup, before the second.
		between   func(d *routing.Directory, src *fakeTenants)
		minEpoch  int64
		wantReads int
		want      routing.Placement
	}{
		{
			name:      "cached within ttl",
			between:   func(*routing.Directory, *fakeTenants) {},
			wantReads: 1,
			want:      routing.Placement{Tenant: "acme", Home: "eu", Epoch: 3},
		},
		{
			name:      "cached entry hides a rehome within ttl",
			between:   func(_ *routing.Directory, src *fakeTenants) { src.home("acme", "us", 4) },
			wantReads: 1,
			want:      routing.Placement{Tenant: "acme", Home: "eu", Epoch: 3},
		},
		{
			name:      "min epoch equal to cached",
			between:   func(_ *routing.Directory, src *fakeTenants) { src.home("acme", "us", 4) },
			minEpoch:  3,
			wantReads: 1,
			want:      routing.Placement{Tenant: "acme", Home: "eu", Epoch: 3},
		},
		{
			name:      "min epoch newer than cached rereads",
			between:   func(_ *routing.Directory, src *fakeTenants) { src.home("acme", "us", 4) },
			minEpoch:  4,
			wantReads: 2,
			want:      routing.Placement{Tenant: "acme", Home: "us", Epoch: 4},
		},
		{
			name: "forget rereads",
			between: func(d *routing.Directory, src *fakeTenants) {
				src.home("acme", "us", 4)
				d.Forget("acme")
			},
			wantReads: 2,
			want:      routing.Placement{Tenant: "acme", Home: "us", Epoch: 4},
		},
		{
			name:      "forget another tenant keeps the entry",
			between:   func(d *routing.Directory, _ *fakeTenants) { d.Forget("globex") },
			wantReads: 1,
			want:      routing.Placement{Tenant: "acme", Home: "eu", Epoch: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeTenants()
			src.home("acme", "eu", 3)
			d := routing.NewDirectory(src, time.Hour)
			if _, err := d.Lookup(ctx, "acme", 0); err != nil {
				t.Fatalf("first Lookup: %v", err)
			}
			tt.between(d, src)
			got, err := d.Lookup(ctx, "acme", tt.minEpoch)
			if err != nil {
				t.Fatalf("second Lookup: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lookup = %+v, want %+v", got, tt.want)
			}
			if n := src.readCount(); n != tt.wantReads {
				t.Errorf("reads = %d, want %d", n, tt.wantReads)
			}
		})
	}
}

func TestDirectoryTTLExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newFakeTenants()
	src.home("acme", "eu", 3)
	d := routing.NewDirectory(src, time.Nanosecond)
	if _, err := d.Lookup(ctx, "acme", 0); err != nil {
		t.Fatalf("first Lookup: %v", err)
	}
	src.home("acme", "us", 4)
	time.Sleep(time.Millisecond) // well past the 1 ns ttl
	got, err := d.Lookup(ctx, "acme", 0)
	if err != nil {
		t.Fatalf("second Lookup: %v", err)
	}
	if want := (routing.Placement{Tenant: "acme", Home: "us", Epoch: 4}); !reflect.DeepEqual(got, want) {
		t.Errorf("Lookup after ttl = %+v, want %+v", got, want)
	}
	if n := src.readCount(); n != 2 {
		t.Errorf("reads = %d, want 2", n)
	}
}

func TestDirectoryErrorsAreNotCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(src *fakeTenants)
		wantErr error
	}{
		{name: "unknown tenant", setup: func(*fakeTenants) {}, wantErr: schema.ErrNotFound},
		{name: "store down", setup: func(src *fakeTenants) { src.fail(schema.ErrUnavailable) }, wantErr: schema.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFakeTenants()
			tt.setup(src)
			d := routing.NewDirectory(src, time.Hour)
			_, err := d.Lookup(ctx, "acme", 0)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Lookup error = %v, want %v", err, tt.wantErr)
			}
			src.fail(nil)
			src.home("acme", "eu", 1)
			got, err := d.Lookup(ctx, "acme", 0)
			if err != nil {
				t.Fatalf("Lookup after recovery: %v", err)
			}
			if got.Home != "eu" {
				t.Errorf("Lookup after recovery: home %q, want %q", got.Home, "eu")
			}
			if n := src.readCount(); n != 2 {
				t.Errorf("reads = %d, want 2 (the error must not be cached)", n)
			}
		})
	}
}

func TestDirectoryConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newFakeTenants()
	for i := range 8 {
		src.home(fmt.Sprintf("t%d", i), "eu", 1)
	}
	d := routing.NewDirectory(src, time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				tenant := fmt.Sprintf("t%d", (g+i)%8)
				if i%10 == 0 {
					d.Forget(tenant)
				}
				if p, err := d.Lookup(ctx, tenant, 0); err != nil || p.Tenant != tenant {
					t.Errorf("Lookup(%s) = %+v, %v", tenant, p, err)
				}
			}
		})
	}
	wg.Wait()
}

// Concurrent lookups of a tenant whose entry is missing or expired share one read of
// its row (a busy tenant's entry expiring, or a slow database, must not send every
// in-flight request to the database); a caller whose context ends stops waiting
// without failing the others.
func TestDirectoryCoalescesReads(t *testing.T) {
	t.Parallel()
	src := newFakeTenants()
	src.home("acme", "eu", 3)
	src.hold = make(chan struct{})
	d := routing.NewDirectory(src, time.Hour)

	const callers = 16
	errs := make(chan error, callers)
	for range callers {
		go func() {
			p, err := d.Lookup(context.Background(), "acme", 0)
			if err == nil && p.Home != "eu" {
				err = fmt.Errorf("home %q, want eu", p.Home)
			}
			errs <- err
		}()
	}
	impatient, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := d.Lookup(impatient, "acme", 0)
		left <- err
	}()
	for src.readCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller whose context ended: %v, want context.Canceled while the read is held", err)
	}
	close(src.hold)
	for range callers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Every caller that arrived while the read was held joined it: one read for all.
	// (A caller scheduled only after the read ended would find the entry cached.)
	if n := src.readCount(); n != 1 {
		t.Fatalf("%d reads for %d concurrent lookups, want 1", n, callers+1)
	}
}

// A lookup that needs a newer placement epoch than a shared read returns reads
// again on its own: a read that began before a move cannot satisfy it.
func TestDirectoryMinEpochAfterSharedRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newFakeTenants()
	src.home("acme", "eu", 3)
	d := routing.NewDirectory(src, time.Hour)
	src.hold = make(chan struct{})
	first := make(chan routing.Placement, 1)
	go func() {
		p, _ := d.Lookup(ctx, "acme", 0)
		first <- p
	}()
	for src.readCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The move commits while the first read is held; a forwarded request names it.
	src.home("acme", "us", 4)
	second := make(chan routing.Placement, 1)
	go func() {
		p, err := d.Lookup(ctx, "acme", 4)
		if err != nil {
			t.Error(err)
		}
		second <- p
	}()
	waitForSharedReaders(t, 2) // the second lookup has joined the held read
	close(src.hold)
	<-first
	if p := <-second; p.Home != "us" || p.Epoch != 4 {
		t.Fatalf("lookup at epoch 4: %+v, want home us at epoch 4", p)
	}
}

// waitForSharedReaders waits until n callers wait in Directory.read (its shared read
// held by the fake), reading every goroutine's stack: a joined caller gives no other
// sign.
func waitForSharedReaders(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for range 5000 {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if strings.Count(stacks, "routing.(*Directory).read(") >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("fewer than %d callers ever waited for the shared read", n)
}
