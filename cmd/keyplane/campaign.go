package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

const campaignUsage = `Usage: keyplane campaign <create|list|evidence> [flags]
  create     start an access review campaign (docs/access-reviews.md)
  list       print the tenant's campaigns as JSON lines
  evidence   print a closed campaign's evidence report (--format md|json)`

func runCampaign(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stdout, campaignUsage)
		return usageErr("want a subcommand: create, list or evidence")
	}
	switch args[0] {
	case "create":
		return campaignCreate(ctx, args[1:], stdout)
	case "list":
		return campaignList(ctx, args[1:], stdout)
	case "evidence":
		return campaignEvidence(ctx, args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, campaignUsage)
		return nil
	}
	fmt.Fprintln(stdout, campaignUsage)
	return usageErr("unknown subcommand %q: want create, list or evidence", args[0])
}

const campaignCredentials = `
The bearer credential comes from --token-file or KEYPLANE_TOKEN (never a flag value):
an access token of an identity of the tenant holding iam.reviews.manage (create) or
iam.reviews.read (list, evidence), or the operator secret.`

var campaignScopeFlags = map[string]keyplanev1.CampaignScope{
	"nhis": keyplanev1.CampaignScope_CAMPAIGN_SCOPE_NHIS, "role": keyplanev1.CampaignScope_CAMPAIGN_SCOPE_ROLE,
	"group": keyplanev1.CampaignScope_CAMPAIGN_SCOPE_GROUP, "tenant": keyplanev1.CampaignScope_CAMPAIGN_SCOPE_TENANT,
}

func campaignCreate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "campaign create", "Start an access review campaign over a scope and print it (JSON).", campaignCredentials+`

Examples:
  keyplane campaign create --url https://iam.example --tenant acme --name "Q3 review" --scope tenant --deadline 336h
  keyplane campaign create --url https://iam.example --tenant acme --name "Payments admins" --scope role \
      --scope-id 0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b --deadline 2027-01-15T17:00:00Z --default revoke`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	name := fs.String("name", "", "campaign name (required)")
	scope := fs.String("scope", "", "what to review: nhis, role, group or tenant (required)")
	scopeID := fs.String("scope-id", "", "the role or group id of scopes role and group")
	deadline := fs.String("deadline", "", "the deadline: an RFC 3339 time, or a duration from now (336h) (required)")
	remind := fs.Duration("remind-every", 0, "reminder interval (default 168h, at least 1h)")
	def := fs.String("default", "keep", "what undecided non-sensitive access gets at the deadline: keep or revoke (sensitive access is revoked)")
	unused := fs.Int("unused-days", 0, "flag access unused for this many days (default 90)")
	client := fs.String("sign-in-client", "", "the OAuth client the review page signs reviewers in through")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	sc, ok := campaignScopeFlags[*scope]
	if !ok {
		return usageErr("--scope: want nhis, role, group or tenant, got %q", *scope)
	}
	var action keyplanev1.ReviewDecision
	switch *def {
	case "keep":
		action = keyplanev1.ReviewDecision_REVIEW_DECISION_KEEP
	case "revoke":
		action = keyplanev1.ReviewDecision_REVIEW_DECISION_REVOKE
	default:
		return usageErr("--default: want keep or revoke, got %q", *def)
	}
	at, err := deadlineFlag(*deadline, time.Now())
	if err != nil {
		return err
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	req := &keyplanev1.CreateCampaignRequest{TenantId: *tenant, Name: *name, Scope: sc, ScopeId: *scopeID, Deadline: timestamppb.New(at),
		DefaultAction: action, UnusedDays: int32(*unused), SignInClientId: *client}
	if *remind != 0 {
		req.ReminderInterval = durationpb.New(*remind)
	}
	rc := keyplanev1connect.NewReviewServiceClient(http.DefaultClient, api.url, api.options())
	resp, err := rc.CreateCampaign(ctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	_, err = writeJSONLines(stdout, []*keyplanev1.Campaign{resp.Msg.Campaign}, 0)
	return err
}

// deadlineFlag parses --deadline: an RFC 3339 time or a duration from now.
func deadlineFlag(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, usageErr("--deadline is required")
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, usageErr("--deadline: a duration from now must be positive, got %s", v)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usageErr("--deadline: want an RFC 3339 time or a duration, got %q", v)
	}
	return t, nil
}

func campaignList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "campaign list", "Print the tenant's access review campaigns, oldest first, as JSON lines.", campaignCredentials+`

Example:
  keyplane campaign list --url https://iam.example --tenant acme`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	rc := keyplanev1connect.NewReviewServiceClient(http.DefaultClient, api.url, api.options())
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	req := &keyplanev1.ListCampaignsRequest{TenantId: *tenant, PageSize: 500}
	for {
		resp, err := rc.ListCampaigns(ctx, connect.NewRequest(req))
		if err != nil {
			return fmt.Errorf("list campaigns: %w", err)
		}
		if _, err := writeJSONLines(w, resp.Msg.Campaigns, 0); err != nil {
			return err
		}
		if resp.Msg.NextPageToken == "" {
			return w.Flush()
		}
		req.PageToken = resp.Msg.NextPageToken
	}
}

func campaignEvidence(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "campaign evidence", "Print a closed campaign's evidence report: scope, reviewers, every decision with its justification and what it applied, the items defaulted at the deadline, and the controls served (SOC 2 CC6.2/CC6.3, ISO 27001 A.5.18).", campaignCredentials+`

Example:
  keyplane campaign evidence --url https://iam.example --tenant acme --campaign 0b6f3a4e-5c1d-4f7e-9a2b-3c4d5e6f7a8b --format md > q3-review.md`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	campaign := fs.String("campaign", "", "campaign id (required)")
	format := fs.String("format", "md", "md or json")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *format != "md" && *format != "json" {
		return usageErr("--format: want md or json, got %q", *format)
	}
	if *campaign == "" {
		return usageErr("--campaign is required")
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	rc := keyplanev1connect.NewReviewServiceClient(http.DefaultClient, api.url, api.options())
	resp, err := rc.GetEvidence(ctx, connect.NewRequest(&keyplanev1.GetEvidenceRequest{TenantId: *tenant, CampaignId: *campaign, Format: *format}))
	if err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	out := resp.Msg.Content
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	_, err = io.WriteString(stdout, out)
	return err
}
