package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/procfs"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/deploytest"
	"github.com/keyplane/keyplane/deploy/seed"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

// Bounds of TestSecurityLoginMemoryBound. With 2 hashing slots a node's argon2id work
// holds about 2 × 19 MiB; the node's peak resident set (VmHWM) must stay below
// loginRSSBound, 512 MiB, even in a -race build (measured: ~140 MiB plain, ~250 MiB
// with -race, from 30–70 MiB at rest). Without the bound, 200 concurrent logins hash at
// once: 200 × 19 MiB, about 3.7 GiB (issue 12 measured 1.7 GiB after 120).
const (
	loginBurst     = 200
	loginHashSlots = 2
	loginRSSBound  = 512 << 20
)

// TestSecurityLoginMemoryBound is finding 3 of issue 12: unauthenticated Login ran
// argon2id (19 MiB each) without a bound, and 120 concurrent logins with unknown emails
// took a node from ~40 MiB to 1.7 GiB, so that its gossip probes timed out. Now a
// per-node semaphore bounds the hashing: 200 concurrent unknown-email logins against a
// real node process (rate limits off, 2 hashing slots) keep its peak RSS under
// loginRSSBound, the logins past the semaphore's wait are refused with
// resource_exhausted and Retry-After, and the node stays ready.
func TestSecurityLoginMemoryBound(t *testing.T) {
	// The node process reads its flags from the environment this test sets.
	t.Setenv("KEYPLANE_LOGIN_RATE_PER_IP", "off")
	t.Setenv("KEYPLANE_LOGIN_RATE_PER_TENANT", "off")
	t.Setenv("KEYPLANE_PASSWORD_HASH_CONCURRENCY", strconv.Itoa(loginHashSlots))
	ctx := context.Background()
	cl, err := deploy.Start(ctx, deploy.Config{Binary: deploytest.Binary})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	node := cl.Nodes[0]
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, node.URL,
		connect.WithInterceptors(client.Bearer(cl.OperatorSecret), client.Tenant()))
	if _, err := seed.NewTenant(ctx, admin, seed.Spec{ID: "acme", Home: node.Region, Purpose: "login memory test"}); err != nil {
		t.Fatal(err)
	}
	proc, err := procfs.NewProc(node.Pid())
	if err != nil {
		t.Fatal(err)
	}
	before, err := proc.NewStatus()
	if err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: loginBurst}}
	auth := keyplanev1connect.NewAuthServiceClient(hc, node.URL, connect.WithInterceptors(client.Tenant()))
	var wg sync.WaitGroup
	codes := make([]connect.Code, loginBurst)
	retryAfter := make([]string, loginBurst)
	for i := range loginBurst {
		wg.Go(func() {
			_, err := auth.Login(ctx, connect.NewRequest(&keyplanev1.LoginRequest{TenantId: "acme",
				Email: fmt.Sprintf("nobody-%d@acme.example", i), Password: "a guessed password"}))
			codes[i] = connect.CodeOf(err)
			if ce := new(connect.Error); errors.As(err, &ce) {
				retryAfter[i] = ce.Meta().Get("Retry-After")
			}
		})
	}
	wg.Wait()
	after, err := proc.NewStatus()
	if err != nil {
		t.Fatal(err)
	}
	var evaluated, busy int
	for i, c := range codes {
		switch c {
		case connect.CodeUnauthenticated:
			evaluated++
		case connect.CodeResourceExhausted:
			busy++
			if retryAfter[i] == "" {
				t.Errorf("login %d refused without Retry-After", i)
			}
		default:
			t.Errorf("login %d: code %v, want unauthenticated or resource_exhausted", i, c)
		}
	}
	t.Logf("VmHWM %d MiB before, %d MiB after %d concurrent logins (%d evaluated, %d refused busy)",
		before.VmHWM>>20, after.VmHWM>>20, loginBurst, evaluated, busy)
	if evaluated < loginHashSlots {
		t.Fatalf("only %d logins evaluated: the test did not load the hashing slots", evaluated)
	}
	if after.VmHWM >= loginRSSBound {
		t.Fatalf("peak RSS %d MiB, want under %d MiB", after.VmHWM>>20, loginRSSBound>>20)
	}
	resp, err := http.Get(node.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !node.Running() {
		t.Fatalf("after the burst: /readyz %d, running %v; want a ready node", resp.StatusCode, node.Running())
	}
}
