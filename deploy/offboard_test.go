package deploy_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/chaos/history"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

// offboardingAcrossRegions (issue 15, item 3): a leaver of acme (home us-east) holds
// tokens minted in every region; while validations of them run on every node of the
// three regions, it is offboarded through an eu-west node. The history checker finds
// no validation that started after the call returned and said active, and the service
// account the leaver owned now belongs to its manager and keeps working everywhere.
func offboardingAcrossRegions(t *testing.T, mr *multiRegion) {
	ctx := context.Background()
	const tenant = "acme"
	nodes := mr.cl.Nodes
	admin := mr.admin(mr.cl.RegionNodes("ap-south")[0].URL, tenant)
	human := func(name, manager string) string {
		t.Helper()
		r, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tenant,
			Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: name, ManagerId: manager}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Identity.Id
	}
	manager := human("Max", "")
	leaver := human("Lee", manager)
	sa, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: tenant,
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "lee's etl", OwnerId: leaver, Purpose: "etl",
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: tenant, IdentityId: sa.Msg.Identity.Id,
		Name: "etl", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	if err != nil {
		t.Fatal(err)
	}
	x, err := mr.auth(mr.cl.RegionNodes("eu-west")[0].URL, tenant).ExchangeAPIKey(ctx,
		connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: tenant, ApiKey: key.Msg.ApiKey}))
	if err != nil {
		t.Fatal(err)
	}
	nhiToken := x.Msg.Token.AccessToken
	cl, err := admin.CreateClient(ctx, connect.NewRequest(&keyplanev1.CreateClientRequest{TenantId: tenant, IdentityId: leaver, Name: "laptop"}))
	if err != nil {
		t.Fatal(err)
	}
	var toks []string // the leaver's, minted at every node
	for _, n := range nodes {
		form := url.Values{"grant_type": {"client_credentials"}}
		req, _ := http.NewRequest(http.MethodPost, n.URL+"/t/"+tenant+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(cl.Msg.ClientId, cl.Msg.ClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
			t.Fatalf("token at %s: %s %v", n.ID, resp.Status, err)
		}
		toks = append(toks, body.AccessToken)
	}
	keyOf := func(tok string) string { return tok[len(tok)-16:] }

	var mu sync.Mutex
	var ops []history.Op
	record := func(op history.Op) {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 20000 {
				select {
				case <-stop:
					return
				default:
				}
				tok, n := toks[rand.IntN(len(toks))], nodes[rand.IntN(len(nodes))]
				op := history.Op{Kind: history.Read, Key: keyOf(tok), Node: n.ID, Start: time.Now()}
				got := mr.validate(n.URL, tenant, tok)
				op.End, op.OK, op.Granted = time.Now(), got.err == nil, got.err == nil && got.active
				record(op)
			}
		})
	}
	time.Sleep(time.Duration(400+rand.IntN(400)) * time.Millisecond)
	via := mr.cl.RegionNodes("eu-west")[1]
	start := time.Now()
	_, err = mr.admin(via.URL, tenant).OffboardIdentity(ctx, connect.NewRequest(&keyplanev1.OffboardIdentityRequest{TenantId: tenant,
		IdentityId: leaver, Reason: "HR termination"}))
	end := time.Now()
	if err != nil {
		t.Errorf("offboard via %s: %v", via.ID, err)
	}
	for _, tok := range toks {
		record(history.Op{Kind: history.Revoke, Key: keyOf(tok), Node: via.ID, Start: start, End: end, OK: err == nil})
	}
	// Read on until every node has answered validations that started after the
	// offboarding returned (a fixed window would test nothing on a loaded machine),
	// bounded in time: the check below says so if the bound was reached first.
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		after := map[string]int{}
		for _, op := range ops {
			if op.Kind == history.Read && op.OK && op.Start.After(end) {
				after[op.Node]++
			}
		}
		for _, n := range nodes {
			if after[n.ID] < 3 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(time.Minute); !enough() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if vs := history.CheckRevocations(ops); len(vs) > 0 {
		for _, v := range vs[:min(len(vs), 10)] {
			t.Error(v)
		}
		t.Fatalf("%d linearizability violations in %d operations", len(vs), len(ops))
	}
	granted, nodesAfter := 0, map[string]bool{}
	for _, op := range ops {
		if op.Kind == history.Read && op.OK && op.Start.After(end) {
			nodesAfter[op.Node] = true
		}
		if op.Kind == history.Read && op.OK && op.Granted {
			granted++
		}
	}
	tested := history.ReadsAfterRevoke(ops)
	if tested < len(toks) || granted == 0 || len(nodesAfter) < len(nodes) {
		t.Fatalf("%d validations after the offboarding on %d of %d nodes, %d active before: the history does not test the guarantee",
			tested, len(nodesAfter), len(nodes), granted)
	}
	t.Logf("%d operations, %d active validations before, %d validations after the offboarding on %d nodes, 0 violations",
		len(ops), granted, tested, len(nodesAfter))

	got, err := admin.GetIdentity(ctx, connect.NewRequest(&keyplanev1.GetIdentityRequest{TenantId: tenant, Id: sa.Msg.Identity.Id}))
	if err != nil || got.Msg.Identity.OwnerId != manager {
		t.Fatalf("the leaver's NHI after offboarding: %v %v, want owned by the manager", got, err)
	}
	for _, n := range nodes {
		if v := mr.validate(n.URL, tenant, nhiToken); v.err != nil || !v.active {
			t.Errorf("the handed-over NHI's token at %s: %+v", n.ID, v)
		}
	}
}
