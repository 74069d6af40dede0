package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/demo"
)

// target is the cluster a run works on: one it started, or one a state file describes.
type target struct {
	regions []string
	// clientURLs[from][to]: the URLs an application in region from uses for region to.
	clientURLs map[string]map[string][]string
	adminURL   map[string]string // region → a node's URL, for seeding and read-back
	nodeURLs   []string
	secret     string
	local      *deploy.Cluster // nil for a cluster from a state file
}

func localTarget(cl *deploy.Cluster) *target {
	t := &target{regions: cl.Regions(), clientURLs: map[string]map[string][]string{}, adminURL: map[string]string{},
		secret: cl.OperatorSecret, local: cl}
	for _, from := range t.regions {
		t.clientURLs[from] = map[string][]string{}
		for _, to := range t.regions {
			t.clientURLs[from][to] = cl.ClientURLs(from, to)
		}
		t.adminURL[from] = cl.RegionNodes(from)[0].URL
	}
	for _, n := range cl.Nodes {
		t.nodeURLs = append(t.nodeURLs, n.URL)
	}
	return t
}

// loadTarget reads a state file (the format `keyplane demo --state-file` writes).
func loadTarget(path string) (*target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var st demo.State // what chaos reads: operator_secret_file, regions[].node_urls, client_urls
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	secret, err := os.ReadFile(st.OperatorSecretFile)
	if err != nil {
		return nil, fmt.Errorf("state file %s: operator_secret_file: %w", path, err)
	}
	t := &target{clientURLs: st.ClientURLs, adminURL: map[string]string{}, secret: strings.TrimSpace(string(secret))}
	for _, r := range st.Regions {
		if len(r.NodeURLs) == 0 || len(st.ClientURLs[r.Name]) == 0 {
			return nil, fmt.Errorf("state file %s: region %q needs node_urls and client_urls", path, r.Name)
		}
		t.regions = append(t.regions, r.Name)
		t.adminURL[r.Name] = r.NodeURLs[0]
		t.nodeURLs = append(t.nodeURLs, r.NodeURLs...)
	}
	if len(t.regions) == 0 {
		return nil, fmt.Errorf("state file %s: no regions", path)
	}
	return t, nil
}

// settle waits until the cluster routes normally again: for a local cluster, until
// gossip lists every node ready; otherwise until every node's /readyz answers 200.
func (t *target) settle(ctx context.Context) error {
	if t.local != nil {
		return t.local.WaitRouted(ctx, 30*time.Second)
	}
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, u := range t.nodeURLs {
		for {
			resp, err := hc.Get(u + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s not ready 60 s after the recovery step", u)
			}
			if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

var errNeedsCommand = errors.New("against a cluster from a state file every drill needs --fault-cmd and --recover-cmd")
