package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

func runDecisions(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stdout, "Usage: keyplane decisions list [flags]   print a tenant's logged permission decisions as JSON lines")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return usageErr("want a subcommand: list")
	}
	c := newCommand(stdout, "decisions list", "Print a tenant's logged permission decisions, newest first, as JSON lines (one Decision of the API, protojson, a line; denied ones carry the explain trace). It pages through DecisionService.ListDecisions of any node; filters narrow it.", `
The bearer credential comes from --token-file or KEYPLANE_TOKEN (never a flag value):
an access token of an identity of the tenant holding iam.decisions.read, or the
operator secret.

Examples:
  KEYPLANE_TOKEN=$(cat token) keyplane decisions list --url https://iam.example --tenant acme --denied --since 1h
  keyplane decisions list --url http://127.0.0.1:8080 --tenant acme --token-file tok \
      --principal 0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b --resource-prefix projects/alpha/ --limit 50`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant whose decisions to list (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	since := fs.String("since", "", "only decisions at or after this: an RFC 3339 time, or a duration back from now (24h)")
	until := fs.String("until", "", "only decisions before this: an RFC 3339 time, or a duration back from now")
	principal := fs.String("principal", "", "only decisions about this identity id")
	permission := fs.String("permission", "", "only this permission")
	resource := fs.String("resource", "", "only this resource")
	prefix := fs.String("resource-prefix", "", "only resources starting with this")
	denied := fs.Bool("denied", false, "only denied decisions")
	allowed := fs.Bool("allowed", false, "only allowed decisions")
	limit := fs.Int("limit", 0, "stop after this many decisions (0: all)")
	if err := c.parse(args[1:]); err != nil {
		return parseErr(err)
	}
	if *denied && *allowed {
		return usageErr("--denied and --allowed exclude each other")
	}
	if *limit < 0 {
		return usageErr("--limit: want 0 or more, got %d", *limit)
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	now := time.Now()
	req := &keyplanev1.ListDecisionsRequest{TenantId: *tenant, PrincipalId: *principal, Permission: *permission, Resource: *resource,
		ResourcePrefix: *prefix, PageSize: 500}
	switch {
	case *denied:
		req.Outcome = keyplanev1.Decision_DECISION_DENY
	case *allowed:
		req.Outcome = keyplanev1.Decision_DECISION_ALLOW
	}
	if req.StartTime, err = timeFlag("since", *since, now); err != nil {
		return err
	}
	if req.EndTime, err = timeFlag("until", *until, now); err != nil {
		return err
	}
	dc := keyplanev1connect.NewDecisionServiceClient(http.DefaultClient, api.url, api.options())
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	printed := 0
	for {
		resp, err := dc.ListDecisions(ctx, connect.NewRequest(req))
		if err != nil {
			return fmt.Errorf("list decisions: %w", err)
		}
		left := 0
		if *limit > 0 {
			left = *limit - printed
		}
		n, err := writeJSONLines(w, resp.Msg.Decisions, left)
		if err != nil {
			return err
		}
		if printed += n; *limit > 0 && printed == *limit || resp.Msg.NextPageToken == "" {
			return w.Flush()
		}
		req.PageToken = resp.Msg.NextPageToken
	}
}
