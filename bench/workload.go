package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing"
)

// Workloads, in the order `--workload all` runs them.
var Workloads = []string{"validate", "introspect", "check", "check-token", "check-reload", "exchange", "revoke", "mixed", "noisy-neighbour"}

// floorOf names each decision workload's floor: the one point read any answer to it
// must make, whatever keyplane caches ("" for none). Ratio and p99 diff are against it.
var floorOf = map[string]string{"validate": "session", "introspect": "session", "check": "identity", "check-token": "principal-session",
	"check-reload": "identity"}

// secondOf names a second, labelled baseline: for a check by identity id, the read of
// all the principal's bindings (what a check without keyplane's policy cache reads).
var secondOf = map[string]string{"check": "bindings", "check-reload": "bindings"}

// clients are the generated clients of one worker.
type clients struct {
	auth  keyplanev1connect.AuthServiceClient
	check keyplanev1connect.CheckServiceClient
	admin keyplanev1connect.AdminServiceClient
	url   string
}

// workload builds the op for a workload. writes counts policy writes (check-reload,
// mixed).
func (e *env) workload(name string, conc, reloadEvery int, writes *atomic.Int64) (op, error) {
	cs := make([]clients, conc)
	for w := range cs {
		u := e.url(w)
		cs[w] = clients{url: u,
			auth:  keyplanev1connect.NewAuthServiceClient(e.hc, u, e.operator),
			check: keyplanev1connect.NewCheckServiceClient(e.hc, u, e.operator),
			admin: keyplanev1connect.NewAdminServiceClient(e.hc, u, e.operator)}
	}
	var n atomic.Int64
	validate := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		s := t.sessions[rand.IntN(len(t.sessions))]
		resp, err := cs[w%len(cs)].auth.ValidateToken(ctx, connect.NewRequest(&keyplanev1.ValidateTokenRequest{TenantId: t.id, Token: s.token}))
		if err != nil {
			return "", 0, err
		}
		if !resp.Msg.Active {
			return "", 0, inactiveError{"a live token validated inactive: " + resp.Msg.Reason}
		}
		route := resp.Header().Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	check := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		resp, err := cs[w%len(cs)].check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.id,
			Principal:  &keyplanev1.CheckRequest_IdentityId{IdentityId: t.identities[rand.IntN(len(t.identities))]},
			Permission: benchPermission, Resource: fmt.Sprintf("res/%d/doc", rand.IntN(t.resources))}))
		if err != nil {
			return "", 0, err
		}
		route := resp.Header().Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	// checkToken is check with a live access token as the principal: keyplane
	// validates it (revocation included), then checks its subject.
	checkToken := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		p := t.principals[rand.IntN(len(t.principals))]
		resp, err := cs[w%len(cs)].check.Check(ctx, connect.NewRequest(&keyplanev1.CheckRequest{TenantId: t.id,
			Principal:  &keyplanev1.CheckRequest_Token{Token: p.token},
			Permission: benchPermission, Resource: fmt.Sprintf("res/%d/doc", rand.IntN(t.resources))}))
		if err != nil {
			return "", 0, err
		}
		if strings.HasPrefix(resp.Msg.Reason, "token inactive") {
			return "", 0, inactiveError{"a live token's check was denied: " + resp.Msg.Reason}
		}
		route := resp.Header().Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	// policyWrite toggles one membership of a tenant: one policy change, one new
	// revision, so every node reloads once.
	policyWrite := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		member := !t.member.Load()
		var err error
		var hdr http.Header
		if member {
			var r *connect.Response[keyplanev1.AddGroupMemberResponse]
			r, err = cs[w%len(cs)].admin.AddGroupMember(ctx, connect.NewRequest(&keyplanev1.AddGroupMemberRequest{TenantId: t.id,
				GroupId: t.groups[0], IdentityId: t.toggler}))
			if err == nil {
				hdr = r.Header()
			}
		} else {
			var r *connect.Response[keyplanev1.RemoveGroupMemberResponse]
			r, err = cs[w%len(cs)].admin.RemoveGroupMember(ctx, connect.NewRequest(&keyplanev1.RemoveGroupMemberRequest{TenantId: t.id,
				GroupId: t.groups[0], IdentityId: t.toggler}))
			if err == nil {
				hdr = r.Header()
			}
		}
		if connect.CodeOf(err) == connect.CodeAlreadyExists || connect.CodeOf(err) == connect.CodeNotFound {
			err = nil // another worker toggled it first
		}
		if err != nil {
			return "", 0, err
		}
		t.member.Store(member)
		writes.Add(1)
		route := hdr.Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	exchange := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		resp, err := cs[w%len(cs)].auth.ExchangeAPIKey(ctx, connect.NewRequest(&keyplanev1.ExchangeAPIKeyRequest{TenantId: t.id, ApiKey: t.apiKey}))
		if err != nil {
			return "", 0, err
		}
		route := resp.Header().Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	revoke := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		var tok string
		select {
		case tok = <-t.revoke:
		default:
			return "", 0, errNoToken
		}
		resp, err := cs[w%len(cs)].auth.RevokeToken(ctx, connect.NewRequest(&keyplanev1.RevokeTokenRequest{TenantId: t.id, Token: tok}))
		if err != nil {
			return "", 0, err
		}
		route := resp.Header().Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	introspect := func(ctx context.Context, w int) (string, time.Duration, error) {
		t := e.pick()
		s := t.sessions[rand.IntN(len(t.sessions))]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, cs[w%len(cs)].url+"/t/"+t.id+"/oauth2/introspect",
			strings.NewReader(url.Values{"token": {s.token}}.Encode()))
		if err != nil {
			return "", 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(t.clientID, t.clientSecret)
		resp, err := e.hc.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		var body struct {
			Active bool `json:"active"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, resp.Body)
			return "", 0, fmt.Errorf("introspect: %s: %w", resp.Status, cmp.Or(err, errors.New("unexpected status")))
		}
		if !body.Active {
			return "", 0, inactiveError{"a live token introspected inactive"}
		}
		route := resp.Header.Get(routing.RouteHeader)
		return route, e.rtt(w, t, route), nil
	}
	switch name {
	case "validate":
		return validate, nil
	case "introspect":
		return introspect, nil
	case "check":
		return check, nil
	case "check-token":
		return checkToken, nil
	case "check-reload":
		return func(ctx context.Context, w int) (string, time.Duration, error) {
			if n.Add(1)%int64(reloadEvery) == 0 {
				if _, _, err := policyWrite(ctx, w); err != nil {
					return "", 0, err
				}
			}
			return check(ctx, w)
		}, nil
	case "exchange":
		return exchange, nil
	case "revoke":
		return revoke, nil
	case "mixed":
		// 94% check, 5% validate, 0.9% exchange, 0.1% writes (revoke or policy change).
		return func(ctx context.Context, w int) (string, time.Duration, error) {
			switch x := rand.IntN(1000); {
			case x < 940:
				return check(ctx, w)
			case x < 990:
				return validate(ctx, w)
			case x < 999:
				return exchange(ctx, w)
			case rand.IntN(2) == 0: // the last 0.1%: half policy changes, half revokes
				return policyWrite(ctx, w)
			default:
				return revoke(ctx, w)
			}
		}, nil
	}
	return nil, fmt.Errorf("unknown workload %q (one of %s, all)", name, strings.Join(Workloads, ", "))
}

// baselineOp is a raw read done with pgx against the same database: a floor (a point
// read by full primary key) or the bindings read.
func (e *env) baselineOp(kind string) op {
	switch kind {
	case "session", "principal-session":
		return func(ctx context.Context, _ int) (string, time.Duration, error) {
			t := e.pick()
			pool := t.sessions
			if kind == "principal-session" {
				pool = t.principals
			}
			s := pool[rand.IntN(len(pool))]
			var revoked bool
			var expires time.Time
			err := e.pool.QueryRow(ctx, `SELECT revoked_at IS NOT NULL, expires_at FROM sessions
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, t.home, t.id, s.id).Scan(&revoked, &expires)
			return "", 0, err
		}
	case "identity":
		return func(ctx context.Context, _ int) (string, time.Duration, error) {
			t := e.pick()
			var kind, status string
			var attrs []byte
			var expires *time.Time
			err := e.pool.QueryRow(ctx, `SELECT kind, status, attributes, expires_at FROM identities
WHERE crdb_region = $1 AND tenant_id = $2 AND id = $3`, t.home, t.id, t.identities[rand.IntN(len(t.identities))]).Scan(&kind, &status, &attrs, &expires)
			return "", 0, err
		}
	case "bindings":
		return func(ctx context.Context, _ int) (string, time.Duration, error) {
			t := e.pick()
			rows, err := e.pool.Query(ctx, `
SELECT id, role_id, scope, effect, condition FROM bindings
WHERE crdb_region = $1 AND tenant_id = $2 AND principal_id = $3
UNION ALL
SELECT b.id, b.role_id, b.scope, b.effect, b.condition FROM group_members m
JOIN bindings b ON b.crdb_region = m.crdb_region AND b.tenant_id = m.tenant_id AND b.principal_id = m.group_id
WHERE m.crdb_region = $1 AND m.tenant_id = $2 AND m.identity_id = $3`, t.home, t.id, t.identities[rand.IntN(len(t.identities))])
			if err != nil {
				return "", 0, err
			}
			for rows.Next() {
			}
			rows.Close()
			return "", 0, rows.Err()
		}
	}
	return nil
}

// baselineQuery describes a baseline for the report.
var baselineQuery = map[string]string{
	"session":           "SELECT … FROM sessions WHERE crdb_region, tenant_id, id (point read of the token's session row)",
	"principal-session": "SELECT … FROM sessions WHERE crdb_region, tenant_id, id (point read of the principal token's session row)",
	"identity":          "SELECT … FROM identities WHERE crdb_region, tenant_id, id (point read of the principal's identity row)",
	"bindings":          "the principal's bindings, direct and through its groups (UNION ALL of two indexed reads)",
}
