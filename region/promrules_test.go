package region_test

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyplane/keyplane/canary"
	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema/schematest"
)

var updateMetrics = flag.Bool("update-metrics", false, "rewrite testdata/metrics.golden from the node's metrics")

// recordingRegistry remembers every collector registered, so that the test can list
// every metric a node can export, including labelled families with no series yet
// (a scrape shows a family only once it has one).
type recordingRegistry struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegistry) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recordingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegistry) names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range r.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// exportedMetrics is every metric name a routed node with peer TLS, and the canary,
// can export.
func exportedMetrics(t *testing.T) (node, all []string) {
	t.Helper()
	ca, caKey, err := routing.NewCA("metrics test", routing.CertOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id := routing.Identity{Region: "us-east", NodeID: "us-east-1"}
	cert, key, err := routing.IssueNodeCert(ca, caKey, id, routing.CertOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.crt": ca, "node.crt": cert, "node.key": key}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsc, err := routing.LoadPeerTLS(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	reg := &recordingRegistry{Registry: prometheus.NewRegistry()}
	store := schematest.NewStore(t, "us-east")
	n, err := region.New(region.Config{Region: "us-east", NodeID: "us-east-1", OperatorSecret: secret, IssuerBase: "https://iam.test"}, store, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n.EnableRouting(region.Routing{Peers: staticPeers{}, PeerListener: ln, PeerTLS: tlsc}); err != nil {
		t.Fatal(err)
	}
	node = reg.names()
	creg := &recordingRegistry{Registry: prometheus.NewRegistry()}
	if _, err := canary.New(canary.Config{Regions: []canary.Region{{Name: "us-east", URL: "http://127.0.0.1:1"}}, Tenant: "t",
		ClientID: "c", ClientSecret: "s", Registry: creg}); err != nil {
		t.Fatal(err)
	}
	all = append(slices.Clone(node), creg.names()...)
	slices.Sort(all)
	return node, all
}

// TestMetricsGolden pins the names of every metric a node exports
// (testdata/metrics.golden): a rename breaks dashboards, alerts and people's
// queries, so it must be deliberate (go test ./region -run TestMetricsGolden
// -update-metrics). The governance, review and analytics families are part of it.
func TestMetricsGolden(t *testing.T) {
	t.Parallel()
	node, _ := exportedMetrics(t)
	got := strings.Join(node, "\n") + "\n"
	golden := filepath.Join("testdata", "metrics.golden")
	if *updateMetrics {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update-metrics to create it)", err)
	}
	if got != string(want) {
		t.Errorf("the node's metric names changed; if on purpose, run go test ./region -run TestMetricsGolden -update-metrics.\ngot:\n%s\nwant:\n%s", got, want)
	}
	for _, family := range []string{"keyplane_governance_", "keyplane_review_", "keyplane_analytics_"} {
		if !slices.ContainsFunc(node, func(n string) bool { return strings.HasPrefix(n, family) }) {
			t.Errorf("no %s* metric", family)
		}
	}
}

var (
	metricRef    = regexp.MustCompile(`\bkeyplane_[a-z0-9_]+`)
	recordingRef = regexp.MustCompile(`\bkeyplane:[a-z0-9_:]+`)
	recordDef    = regexp.MustCompile(`(?m)^\s*- record: (\S+)`)
)

// TestAlertsAndDashboardsNameExportedMetrics fails when a rule or a dashboard of
// deploy/prometheus names a metric nothing exports, or a recording rule nothing
// records: such an alert can never fire and such a panel stays empty.
func TestAlertsAndDashboardsNameExportedMetrics(t *testing.T) {
	t.Parallel()
	_, exported := exportedMetrics(t)
	files, err := filepath.Glob("../deploy/prometheus/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	dashboards, _ := filepath.Glob("../deploy/prometheus/dashboards/*.json")
	files = append(files, dashboards...)
	if len(files) < 3 {
		t.Fatalf("found only %v under deploy/prometheus", files)
	}
	recorded := map[string]bool{}
	var texts []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b))
		for _, m := range recordDef.FindAllStringSubmatch(string(b), -1) {
			recorded[m[1]] = true
		}
	}
	seen := 0
	for i, text := range texts {
		for _, ref := range metricRef.FindAllString(text, -1) {
			base := ref
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(ref, suffix); ok && slices.Contains(exported, b) {
					base = b
				}
			}
			if !slices.Contains(exported, base) {
				t.Errorf("%s names %s, which no node or canary exports", files[i], ref)
			}
			seen++
		}
		for _, ref := range recordingRef.FindAllString(text, -1) {
			if !recorded[ref] {
				t.Errorf("%s uses %s, which no recording rule records", files[i], ref)
			}
		}
	}
	if seen < 20 {
		t.Errorf("only %d metric references found: the scan is broken", seen)
	}
}
