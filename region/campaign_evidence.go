package region

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keyplane/keyplane/schema"
)

// evidence is a closed campaign's evidence report: what was reviewed, by whom, what
// was decided and why, what was applied, and which items the deadline decided, mapped
// to the controls the review serves.
type evidence struct {
	Report      string             `json:"report"`
	Tenant      string             `json:"tenant"`
	GeneratedAt time.Time          `json:"generated_at"`
	Campaign    evidenceCampaign   `json:"campaign"`
	Controls    []evidenceControl  `json:"controls"`
	Summary     evidenceSummary    `json:"summary"`
	Items       []evidenceItem     `json:"items"`
	Reviewers   []evidenceReviewer `json:"reviewers"`
}

type evidenceCampaign struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Scope         string    `json:"scope"`
	ScopeID       string    `json:"scope_id,omitempty"`
	CreatedBy     string    `json:"created_by"`
	CreatedAt     time.Time `json:"created_at"`
	Deadline      time.Time `json:"deadline"`
	ClosedAt      time.Time `json:"closed_at"`
	DefaultAction string    `json:"default_action"`
	UnusedDays    int       `json:"unused_days"`
}

type evidenceControl struct {
	Framework string `json:"framework"`
	ID        string `json:"id"`
	Title     string `json:"title"`
	How       string `json:"how"`
}

type evidenceSummary struct {
	Items     int `json:"items"`
	Kept      int `json:"kept"`
	Revoked   int `json:"revoked"`
	Modified  int `json:"modified"`
	Defaulted int `json:"defaulted"`
	Sensitive int `json:"sensitive"`
}

type evidenceItem struct {
	ID            string     `json:"id"`
	Subject       string     `json:"subject"`
	SubjectID     string     `json:"subject_id"`
	SubjectKind   string     `json:"subject_kind"`
	Access        string     `json:"access"`
	Kind          string     `json:"kind"`
	BindingID     string     `json:"binding_id,omitempty"`
	GroupID       string     `json:"group_id,omitempty"`
	Roles         []string   `json:"roles"`
	Scopes        []string   `json:"scopes"`
	Sensitive     bool       `json:"sensitive"`
	LastUsed      *time.Time `json:"last_used"`
	Risks         []string   `json:"risks"`
	Reviewer      string     `json:"reviewer"`
	ReviewerID    string     `json:"reviewer_id"`
	Decision      string     `json:"decision"`
	Justification string     `json:"justification"`
	DecidedBy     string     `json:"decided_by"`
	DecidedAt     *time.Time `json:"decided_at"`
	Defaulted     bool       `json:"defaulted"`
	Applied       string     `json:"applied"`
}

type evidenceReviewer struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Items   int    `json:"items"`
	Decided int    `json:"decided"`
}

// reviewControls are the controls an access review serves.
var reviewControls = []evidenceControl{
	{Framework: "SOC 2", ID: "CC6.2", Title: "Registration and authorization of users; removal of access no longer required",
		How: "every access in scope was reviewed by its subject's owner or manager; access judged unneeded was removed in the decision's audited transaction"},
	{Framework: "SOC 2", ID: "CC6.3", Title: "Role-based access: authorize, modify or remove access based on roles and least privilege",
		How: "roles were kept, narrowed (modify) or revoked per item; sensitive access left undecided was revoked at the deadline"},
	{Framework: "ISO/IEC 27001:2022", ID: "A.5.18", Title: "Access rights: provisioned, reviewed, modified and removed",
		How: "a periodic review of access rights with recorded decisions, justifications, reviewers and the changes applied"},
}

func buildEvidence(tenantID string, c schema.Campaign, items []schema.ReviewItem, now time.Time) evidence {
	ev := evidence{Report: "keyplane access review evidence", Tenant: tenantID, GeneratedAt: now.UTC(),
		Campaign: evidenceCampaign{ID: c.ID, Name: c.Name, Scope: c.ScopeKind, ScopeID: c.ScopeID, CreatedBy: c.CreatedBy,
			CreatedAt: c.CreatedAt.UTC(), Deadline: c.Deadline.UTC(), ClosedAt: c.ClosedAt.UTC(), DefaultAction: c.DefaultAction, UnusedDays: c.UnusedDays},
		Controls: reviewControls, Items: []evidenceItem{}, Reviewers: []evidenceReviewer{}}
	reviewers := map[string]int{}
	for _, it := range items {
		e := evidenceItem{ID: it.ID, Subject: it.SubjectName, SubjectID: it.SubjectID, SubjectKind: it.SubjectKind, Kind: it.Kind,
			BindingID: it.BindingID, GroupID: it.GroupID, Roles: it.RoleNames, Scopes: it.Scopes, Sensitive: it.Sensitive,
			Risks: it.Risks(c.CreatedAt, c.UnusedDays), Reviewer: it.ReviewerName, ReviewerID: it.ReviewerID, Decision: it.Decision,
			Justification: it.Justification, DecidedBy: it.DecidedBy, Defaulted: it.Defaulted, Applied: it.Applied}
		e.Access = accessText(it)
		if e.Risks == nil {
			e.Risks = []string{}
		}
		if !it.LastUsed.IsZero() {
			t := it.LastUsed.UTC()
			e.LastUsed = &t
		}
		if !it.DecidedAt.IsZero() {
			t := it.DecidedAt.UTC()
			e.DecidedAt = &t
		}
		ev.Items = append(ev.Items, e)
		ev.Summary.Items++
		switch it.Decision {
		case schema.ReviewKeep:
			ev.Summary.Kept++
		case schema.ReviewRevoke:
			ev.Summary.Revoked++
		case schema.ReviewModify:
			ev.Summary.Modified++
		}
		if it.Defaulted {
			ev.Summary.Defaulted++
		}
		if it.Sensitive {
			ev.Summary.Sensitive++
		}
		if it.ReviewerID == "" {
			continue
		}
		k, ok := reviewers[it.ReviewerID]
		if !ok {
			k = len(ev.Reviewers)
			reviewers[it.ReviewerID] = k
			ev.Reviewers = append(ev.Reviewers, evidenceReviewer{ID: it.ReviewerID, Name: it.ReviewerName})
		}
		ev.Reviewers[k].Items++
		if it.Decision != "" && !it.Defaulted {
			ev.Reviewers[k].Decided++
		}
	}
	return ev
}

// accessText describes an item's access in one line.
func accessText(it schema.ReviewItem) string {
	var parts []string
	for k := range it.RoleNames {
		parts = append(parts, it.RoleNames[k]+" on "+it.Scopes[k])
	}
	if it.Kind == schema.ItemMembership {
		return "member of group " + it.GroupName + " (" + strings.Join(parts, ", ") + ")"
	}
	return strings.Join(parts, ", ")
}

// JSON is the report as indented JSON.
func (ev evidence) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode evidence: %w", err)
	}
	return append(b, '\n'), nil
}

// Markdown is the report as a Markdown document.
func (ev evidence) Markdown() string {
	var b strings.Builder
	c := ev.Campaign
	fmt.Fprintf(&b, "# Access review evidence: %s\n\n", mdText(c.Name))
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	scope := c.Scope
	if c.ScopeID != "" {
		scope += " " + c.ScopeID
	}
	for _, row := range [][2]string{{"Tenant", ev.Tenant}, {"Campaign", c.ID}, {"Scope", scope}, {"Created by", c.CreatedBy},
		{"Created", stamp(c.CreatedAt)}, {"Deadline", stamp(c.Deadline)}, {"Closed", stamp(c.ClosedAt)},
		{"Default action", c.DefaultAction + " (sensitive access: revoke)"}, {"Report generated", stamp(ev.GeneratedAt)}} {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], mdText(row[1]))
	}
	b.WriteString("\n## Controls\n\n| Framework | Control | What this review shows |\n|---|---|---|\n")
	for _, k := range ev.Controls {
		fmt.Fprintf(&b, "| %s | %s %s | %s |\n", k.Framework, k.ID, mdText(k.Title), mdText(k.How))
	}
	s := ev.Summary
	fmt.Fprintf(&b, "\n## Summary\n\n%d items: %d kept, %d revoked, %d modified; %d decided by default at the deadline; %d sensitive.\n",
		s.Items, s.Kept, s.Revoked, s.Modified, s.Defaulted, s.Sensitive)
	b.WriteString("\n## Reviewers\n\n| Reviewer | Items | Decided by the reviewer |\n|---|---|---|\n")
	for _, r := range ev.Reviewers {
		fmt.Fprintf(&b, "| %s (%s) | %d | %d |\n", mdText(r.Name), r.ID, r.Items, r.Decided)
	}
	b.WriteString("\n## Decisions\n\n| Subject | Access | Last used | Risks | Reviewer | Decision | Justification | Decided | Applied |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, it := range ev.Items {
		decision := it.Decision
		if it.Defaulted {
			decision += " (default)"
		}
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %s | %s | %s | %s by %s | %s |\n", mdText(it.Subject), it.SubjectKind, mdText(it.Access),
			stampPtr(it.LastUsed, "never"), strings.Join(it.Risks, ", "), mdText(cmpText(it.Reviewer, "none")), decision, mdText(it.Justification),
			stampPtr(it.DecidedAt, "—"), mdText(it.DecidedBy), mdText(it.Applied))
	}
	b.WriteString("\n## Defaulted at the deadline\n\n")
	n := 0
	for _, it := range ev.Items {
		if it.Defaulted {
			fmt.Fprintf(&b, "- %s: %s → %s (%s)\n", mdText(it.Subject), mdText(it.Access), it.Decision, mdText(it.Applied))
			n++
		}
	}
	if n == 0 {
		b.WriteString("None: every item was decided by its reviewer.\n")
	}
	return b.String()
}

func cmpText(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

func stamp(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "—"
	}
	return t.UTC().Format(time.RFC3339)
}

func stampPtr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return stamp(*t)
}

// mdText makes s safe in a Markdown table cell: one line, pipes escaped, no HTML.
func mdText(s string) string {
	r := strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ", "<", "&lt;", ">", "&gt;", "`", "'")
	return r.Replace(s)
}
