package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/routing/client"
)

func runAudit(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(stdout, "Usage: keyplane audit export [flags]   stream a tenant's audit events as JSON lines")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return usageErr("want a subcommand: export")
	}
	c := newCommand(stdout, "audit export", "Stream a tenant's audit events, newest first, as JSON lines (one AuditEvent of the API, protojson, a line) for a SIEM. It pages through AdminService.ListAuditEvents of any node; filters narrow it.", `
The bearer credential comes from --token-file or KEYPLANE_TOKEN (never a flag value):
an access token of an identity of the tenant allowed to read its audit log, or the
operator secret.

Examples:
  KEYPLANE_TOKEN=$(cat token) keyplane audit export --url https://iam.example --tenant acme --since 24h
  keyplane audit export --url http://127.0.0.1:8080 --tenant acme --token-file tok \
      --since 2026-12-01T00:00:00Z --action credential. > acme-audit.jsonl`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant whose events to export (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	since := fs.String("since", "", "only events at or after this: an RFC 3339 time, or a duration back from now (24h)")
	until := fs.String("until", "", "only events before this: an RFC 3339 time, or a duration back from now")
	actor := fs.String("actor", "", `only this actor ("operator", "identity:<uuid>", "client:<id>")`)
	action := fs.String("action", "", `only this action, or a prefix ending in "." ("credential.")`)
	pageSize := fs.Int("page-size", 500, "events per request, 1 to 1000")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	if *pageSize < 1 || *pageSize > 1000 {
		return usageErr("--page-size: want 1 to 1000, got %d", *pageSize)
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	now := time.Now()
	req := &keyplanev1.ListAuditEventsRequest{TenantId: *tenant, PageSize: int32(*pageSize), Actor: *actor, Action: *action}
	if req.StartTime, err = timeFlag("since", *since, now); err != nil {
		return err
	}
	if req.EndTime, err = timeFlag("until", *until, now); err != nil {
		return err
	}
	admin := keyplanev1connect.NewAdminServiceClient(http.DefaultClient, api.url, api.options())
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	for {
		resp, err := admin.ListAuditEvents(ctx, connect.NewRequest(req))
		if err != nil {
			return fmt.Errorf("list audit events: %w", err)
		}
		if _, err := writeJSONLines(w, resp.Msg.Events, 0); err != nil {
			return err
		}
		if resp.Msg.NextPageToken == "" {
			return w.Flush()
		}
		req.PageToken = resp.Msg.NextPageToken
	}
}

// tenantAPI is a node's API URL, a tenant and a bearer token: what the commands that
// page through a tenant's listings as JSON lines (audit export, decisions list) take.
type tenantAPI struct{ url, tenant, token string }

// tenantAPIOf checks the --url, --tenant and --token-file flags (the token from the
// file or KEYPLANE_TOKEN, never a flag value).
func tenantAPIOf(nodeURL, tenant, tokenFile string) (tenantAPI, error) {
	if u, err := url.Parse(nodeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return tenantAPI{}, usageErr("--url: want the http(s) URL of a node, got %q", nodeURL)
	}
	if tenant == "" {
		return tenantAPI{}, usageErr("--tenant is required")
	}
	token, err := secretText(tokenFile, "KEYPLANE_TOKEN", "token file")
	if err != nil {
		return tenantAPI{}, usageErr("%v", err)
	}
	if token = strings.TrimSpace(token); token == "" {
		return tenantAPI{}, usageErr("a bearer token is required: --token-file or KEYPLANE_TOKEN")
	}
	return tenantAPI{url: strings.TrimSuffix(nodeURL, "/"), tenant: tenant, token: token}, nil
}

// options are the Connect client options of a call to api: the bearer token and the
// Keyplane-Tenant header routing goes by.
func (api tenantAPI) options() connect.ClientOption {
	return connect.WithInterceptors(client.Tenant(), client.Bearer(api.token))
}

// writeJSONLines writes ms as protojson, one a line, stopping after limit lines when
// limit is positive; it returns how many it wrote.
func writeJSONLines[M proto.Message](w io.Writer, ms []M, limit int) (int, error) {
	n := 0
	for _, m := range ms {
		if limit > 0 && n == limit {
			break
		}
		line, err := protojson.Marshal(m)
		if err != nil {
			return n, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
		}
		if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// timeFlag parses an RFC 3339 time or a duration back from now; "" is no bound.
func timeFlag(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(t), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return nil, usageErr("--%s: want an RFC 3339 time (2026-12-01T00:00:00Z) or a positive duration (24h), got %q", name, v)
	}
	return timestamppb.New(now.Add(-d)), nil
}
