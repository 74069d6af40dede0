package bench_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/region/kek"
	"github.com/keyplane/keyplane/schema"
	"github.com/keyplane/keyplane/schema/schematest"
)

func TestMain(m *testing.M) { os.Exit(schematest.Run(m)) }

// parallelism × GOMAXPROCS goroutines issue requests: 16 on a 2-core machine.
const parallelism = 8

type benchEnv struct {
	url      string
	hc       *http.Client
	operator connect.UnaryInterceptorFunc
	auth     keyplanev1connect.AuthServiceClient
	store    *schema.Store
	kek      *kek.KEK
	token    string
	session  string
	subject  string // the service account the token is for
	apiKey   string
}

const benchSecret = "bench-operator-secret-0123456789"

// setup starts a node on a TCP port of 127.0.0.1 and seeds a tenant "bench" with a
// service account, its API key and a token.
func setup(b *testing.B) *benchEnv {
	b.Helper()
	store := schematest.NewStore(b, "us-east")
	text, _ := kek.Generate()
	k, _ := kek.Parse(text)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serveNode(b, store, k, "bench-1", "https://iam.bench", ln)
	return seedBench(b, "http://"+ln.Addr().String(), &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, store, k)
}

// serveNode builds a node of region us-east on store and serves it on ln until the
// benchmark ends.
func serveNode(b *testing.B, store *schema.Store, k *kek.KEK, id, issuerBase string, ln net.Listener) {
	b.Helper()
	node, err := region.New(region.Config{Region: "us-east", NodeID: id, OperatorSecret: region.Secret(benchSecret), KEK: k,
		IssuerBase: issuerBase}, store, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = node.Serve(sctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
}

// seedBench creates tenant "bench" through the node at url: an owner, a service
// account with an API key, and a token exchanged from it.
func seedBench(b *testing.B, url string, hc *http.Client, store *schema.Store, k *kek.KEK) *benchEnv {
	b.Helper()
	ctx := context.Background()
	operator := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+benchSecret)
			return next(ctx, req)
		}
	})
	admin := keyplanev1connect.NewAdminServiceClient(hc, url, connect.WithInterceptors(operator))
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	_, err := admin.CreateTenant(ctx, connect.NewRequest(&keyplanev1.CreateTenantRequest{Id: "bench", Name: "Bench", HomeRegion: "us-east"}))
	must(err)
	owner, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "bench",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_HUMAN, DisplayName: "owner"}))
	must(err)
	sa, err := admin.CreateIdentity(ctx, connect.NewRequest(&keyplanev1.CreateIdentityRequest{TenantId: "bench",
		Kind: keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT, DisplayName: "load", OwnerId: owner.Msg.Identity.Id,
		Purpose: "benchmark", ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour))}))
	must(err)
	key, err := admin.CreateAPIKey(ctx, connect.NewRequest(&keyplanev1.CreateAPIKeyRequest{TenantId: "bench", IdentityId: sa.Msg.Identity.Id,
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}))
	must(err)
	env := &benchEnv{url: url, hc: hc, operator: operator, auth: keyplanev1connect.NewAuthServiceClient(hc, url), store: store, kek: k,
		apiKey: key.Msg.ApiKey, subject: sa.Msg.Identity.Id}
	tok, err := env.auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: "bench", ApiKey: env.apiKey}))
	must(err)
	env.token, env.session = tok.Msg.Token.AccessToken, tok.Msg.Token.SessionId
	return env
}

// baseline is the same logical read as a validation, done directly with pgx: the
// point read of the token's session row at its home partition.
func (e *benchEnv) baseline(ctx context.Context) error {
	var revoked bool
	var expires time.Time
	return e.store.Pool().QueryRow(ctx, `SELECT revoked_at IS NOT NULL, expires_at FROM sessions
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, "us-east", "bench", e.session).Scan(&revoked, &expires)
}

func (e *benchEnv) runBaseline(b *testing.B) { parallel(b, e.baseline) }

// parallel runs op from parallelism × GOMAXPROCS goroutines until the benchmark has
// its b.N operations, stopping at the first error.
func parallel(b *testing.B, op func(ctx context.Context) error) {
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := op(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkValidateToken: keyplane's ValidateToken over HTTP (signature check, tenant
// read, one session+identity read) against the raw session-row read, in one run.
func BenchmarkValidateToken(b *testing.B) {
	env := setup(b)
	b.Run("baseline-sql", env.runBaseline)
	req := &keyplanev1.ValidateTokenRequest{TenantId: "bench", Token: env.token}
	b.Run("keyplane", func(b *testing.B) {
		parallel(b, func(ctx context.Context) error {
			resp, err := env.auth.ValidateToken(ctx, connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("validate: %w", err)
			}
			if !resp.Msg.Active {
				return fmt.Errorf("validate: inactive: %v", resp.Msg)
			}
			return nil
		})
	})
}

// BenchmarkExchangeAPIKey: an API key exchange (key lookup, a session and its audit
// event written in one transaction, a token signed) against the raw session-row read.
func BenchmarkExchangeAPIKey(b *testing.B) {
	env := setup(b)
	b.Run("baseline-sql", env.runBaseline)
	req := &keyplanev1.ExchangeAPIKeyRequest{TenantId: "bench", ApiKey: env.apiKey}
	b.Run("keyplane", func(b *testing.B) {
		parallel(b, func(ctx context.Context) error {
			if _, err := env.auth.ExchangeAPIKey(ctx, connect.NewRequest(req)); err != nil {
				return fmt.Errorf("exchange: %w", err)
			}
			return nil
		})
	})
}
