package region_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/chaos/history"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// TestRevocationIsLinearizable records a history of concurrent revokes and
// validations across three nodes (each with its own connection pool, as separate
// processes would have) and checks it: no validation that started after a revoke of
// its token was acknowledged may report the token active.
func TestRevocationIsLinearizable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)

	// Two more nodes on the fixture's database, each with its own pool.
	urls := []string{f.url}
	for _, id := range []string{"us-east-2", "us-east-3"} {
		pool := f.store.Pool()
		cfg := pool.Config().ConnString()
		p2, err := schema.Open(ctx, cfg, schema.PoolConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p2.Close)
		urls = append(urls, testNode(t, schema.New(p2, schema.Config{Region: "us-east", Node: id}), authConfig(f.kek, id)))
	}
	clients := make([]keyplanev1connect.AuthServiceClient, len(urls))
	for i, u := range urls {
		clients[i] = keyplanev1connect.NewAuthServiceClient(http.DefaultClient, u)
	}

	const tokens = 24
	toks := make([]string, tokens)
	for i := range toks {
		toks[i] = f.exchange(t)
	}

	var h recordedHistory
	record := h.record
	// Validators run until the history holds enough validations after the last revoke,
	// at most a minute.
	deadline := time.Now().Add(time.Minute)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for v := 0; v < 6; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 20000 && time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				i, node := rand.IntN(tokens), rand.IntN(len(clients))
				op := history.Op{Kind: history.Read, Key: toks[i][len(toks[i])-16:], Node: urls[node], Start: time.Now()}
				resp, err := clients[node].ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: "acme", Token: toks[i]}))
				op.End = time.Now()
				op.OK = err == nil
				op.Granted = err == nil && resp.Msg.Active
				record(op)
			}
		}()
	}
	for _, i := range rand.Perm(tokens) {
		time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
		node := rand.IntN(len(clients))
		op := history.Op{Kind: history.Revoke, Key: toks[i][len(toks[i])-16:], Node: urls[node], Start: time.Now()}
		_, err := clients[node].RevokeToken(ctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: "acme", Token: toks[i]}))
		op.End = time.Now()
		op.OK = err == nil
		record(op)
		if err != nil {
			t.Errorf("revoke: %v", err)
		}
	}
	h.waitAfterLast(4*tokens, deadline)
	close(stop)
	wg.Wait()
	ops := h.history()

	if vs := history.CheckRevocations(ops); len(vs) > 0 {
		for _, v := range vs[:min(len(vs), 10)] {
			t.Error(v)
		}
		t.Fatalf("%d linearizability violations in %d operations", len(vs), len(ops))
	}
	tested := history.ReadsAfterRevoke(ops)
	if tested < tokens {
		t.Fatalf("only %d validations started after a revoke: the history does not test the guarantee", tested)
	}
	t.Logf("%d operations, %d validations after an acknowledged revoke, 0 violations", len(ops), tested)
}
