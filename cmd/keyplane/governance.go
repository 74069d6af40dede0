package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	"github.com/keyplane/keyplane/region"
	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
)

// governanceCommands are the subcommands of `keyplane governance`; adding one is
// one row here.
var governanceCommands = []struct {
	name, summary string
	run           runner
}{
	{"inventory", "list a tenant's non-human identities with their risk findings (csv, json or table)", runGovernanceInventory},
	{"report", "write a tenant's governance figures and their trends (Markdown, JSON, SVG charts)", runGovernanceReport},
}

func runGovernance(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		for _, c := range governanceCommands {
			if c.name == args[0] {
				return c.run(ctx, args[1:], stdout)
			}
		}
	}
	fmt.Fprintln(stdout, "Usage: keyplane governance <subcommand> [flags]\n\nSubcommands:")
	names := make([]string, 0, len(governanceCommands))
	for _, c := range governanceCommands {
		fmt.Fprintf(stdout, "  %-10s %s\n", c.name, c.summary)
		names = append(names, c.name)
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		return nil
	}
	if len(args) == 0 {
		return usageErr("want a subcommand: %s", strings.Join(names, ", "))
	}
	return usageErr("unknown subcommand %q: want one of %s", args[0], strings.Join(names, ", "))
}

var nhiKinds = map[string]keyplanev1.IdentityKind{
	"service_account": keyplanev1.IdentityKind_IDENTITY_KIND_SERVICE_ACCOUNT,
	"workload":        keyplanev1.IdentityKind_IDENTITY_KIND_WORKLOAD,
	"device":          keyplanev1.IdentityKind_IDENTITY_KIND_DEVICE,
	"agent":           keyplanev1.IdentityKind_IDENTITY_KIND_AGENT,
}

func runGovernanceInventory(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand(stdout, "governance inventory", "List a tenant's non-human identities (NHIs) with kind, owner and its state, risk tier, credentials, oldest secret age, last use, least-privilege ratio and risk findings (docs/governance.md). It pages through GovernanceService.ListInventory of any node.", `
The bearer credential comes from --token-file or KEYPLANE_TOKEN (never a flag value):
an access token of an identity of the tenant holding iam.governance.read, or the
operator secret.

Formats: table (default; for people), csv (one row an NHI, findings joined by ';'),
json (one InventoryEntry of the API, protojson, a line).

Examples:
  KEYPLANE_TOKEN=$(cat token) keyplane governance inventory --url https://iam.example --tenant acme
  keyplane governance inventory --url http://127.0.0.1:8080 --tenant acme --token-file tok --finding orphaned --format csv`)
	fs := c.flags
	nodeURL := fs.String("url", "", "API URL of a keyplane node (required)")
	tenant := fs.String("tenant", "", "tenant whose NHIs to list (required)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (or KEYPLANE_TOKEN)")
	format := fs.String("format", "table", "table, csv or json")
	kind := fs.String("kind", "", "only NHIs of this kind: service_account, workload, device or agent")
	finding := fs.String("finding", "", "only NHIs with this finding: orphaned, expired, expiring, rotation_overdue, unused, static_secret or over_privileged")
	owner := fs.String("owner", "", "only NHIs owned by this identity id")
	limit := fs.Int("limit", 0, "stop after this many NHIs (0: all)")
	if err := c.parse(args); err != nil {
		return parseErr(err)
	}
	if *format != "table" && *format != "csv" && *format != "json" {
		return usageErr("--format: want table, csv or json, got %q", *format)
	}
	if *limit < 0 {
		return usageErr("--limit: want 0 or more, got %d", *limit)
	}
	req := &keyplanev1.ListInventoryRequest{OwnerId: *owner, PageSize: 500}
	if *kind != "" {
		k, ok := nhiKinds[*kind]
		if !ok {
			return usageErr("--kind: want service_account, workload, device or agent, got %q", *kind)
		}
		req.Kind = k
	}
	if *finding != "" {
		if _, ok := region.ParseFinding(*finding); !ok {
			return usageErr("--finding: unknown finding %q", *finding)
		}
		req.Finding = *finding
	}
	api, err := tenantAPIOf(*nodeURL, *tenant, *tokenFile)
	if err != nil {
		return err
	}
	req.TenantId = api.tenant
	gc := keyplanev1connect.NewGovernanceServiceClient(http.DefaultClient, api.url, api.options())
	var entries []*keyplanev1.InventoryEntry
	var at time.Time
	for {
		resp, err := gc.ListInventory(ctx, connect.NewRequest(req))
		if err != nil {
			return fmt.Errorf("list inventory: %w", err)
		}
		entries = append(entries, resp.Msg.Entries...)
		at = resp.Msg.EvaluateTime.AsTime()
		if *limit > 0 && len(entries) >= *limit {
			entries = entries[:*limit]
			break
		}
		if resp.Msg.NextPageToken == "" {
			break
		}
		req.PageToken = resp.Msg.NextPageToken
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	switch *format {
	case "json":
		if _, err := writeJSONLines(w, entries, 0); err != nil {
			return err
		}
	case "csv":
		if err := writeInventoryCSV(w, entries); err != nil {
			return err
		}
	default:
		writeInventoryTable(w, entries, at)
	}
	return w.Flush()
}

// inventoryColumns are the CSV columns, one an InventoryEntry field.
var inventoryColumns = []string{"identity_id", "kind", "display_name", "status", "purpose", "owner_id", "owner_state", "create_time", "expire_time",
	"risk_tier", "risk_tier_source", "federated", "credential_kinds", "oldest_secret_age_days", "last_use_time", "least_privilege_ratio", "findings"}

func writeInventoryCSV(w io.Writer, entries []*keyplanev1.InventoryEntry) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(inventoryColumns); err != nil {
		return err
	}
	for _, e := range entries {
		age := ""
		if e.OldestSecretAge != nil {
			age = strconv.FormatFloat(e.OldestSecretAge.AsDuration().Hours()/24, 'f', 1, 64)
		}
		if err := cw.Write([]string{e.IdentityId, kindName(e.Kind), e.DisplayName, statusName(e.Status), e.Purpose, e.OwnerId, ownerStateName(e.OwnerState),
			rfc3339(e.CreateTime.AsTime(), e.CreateTime != nil), rfc3339(e.ExpireTime.AsTime(), e.ExpireTime != nil), tierName(e.RiskTier), e.RiskTierSource,
			strconv.FormatBool(e.Federated), strings.Join(e.CredentialKinds, ";"), age, rfc3339(e.LastUseTime.AsTime(), e.LastUseTime != nil),
			strconv.FormatFloat(e.LeastPrivilegeRatio, 'f', 2, 64), findingList(e.Findings, ";")}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func writeInventoryTable(w io.Writer, entries []*keyplanev1.InventoryEntry, at time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tNAME\tSTATUS\tOWNER\tTIER\tSECRET AGE\tLAST USE\tLP\tFINDINGS")
	for _, e := range entries {
		age, last := "-", "never"
		if e.OldestSecretAge != nil {
			age = fmt.Sprintf("%dd", int(e.OldestSecretAge.AsDuration().Hours()/24))
		}
		if e.LastUseTime != nil {
			last = at.Sub(e.LastUseTime.AsTime()).Round(time.Second).String() + " ago"
		}
		findings := findingList(e.Findings, ",")
		if findings == "" {
			findings = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", e.IdentityId[:min(8, len(e.IdentityId))], kindName(e.Kind), e.DisplayName,
			statusName(e.Status), ownerStateName(e.OwnerState), tierName(e.RiskTier), age, last, e.LeastPrivilegeRatio, findings)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d non-human identities, judged at %s\n", len(entries), at.UTC().Format(time.RFC3339))
}

func findingList(fs []keyplanev1.RiskFinding, sep string) string {
	names := make([]string, 0, len(fs))
	for _, f := range fs {
		names = append(names, region.FindingName(f))
	}
	return strings.Join(names, sep)
}

func rfc3339(t time.Time, ok bool) string {
	if !ok {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func kindName(k keyplanev1.IdentityKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "IDENTITY_KIND_"))
}

func statusName(s keyplanev1.Status) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATUS_"))
}

func ownerStateName(s keyplanev1.OwnerState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OWNER_STATE_"))
}

func tierName(t keyplanev1.RiskTier) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "RISK_TIER_"))
}
