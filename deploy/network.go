package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/keyplane/keyplane/schema/pglocal"
)

// DefaultRTT is the simulated round trip between two regions of the local cluster:
// us-east↔eu-west 70 ms, us-east↔ap-south 200 ms, eu-west↔ap-south 150 ms, 1 ms
// within a region, 100 ms between regions not listed.
func DefaultRTT(a, b string) time.Duration {
	if a == b {
		return time.Millisecond
	}
	pair := []string{a, b}
	slices.Sort(pair)
	switch strings.Join(pair, "|") {
	case "eu-west|us-east":
		return 70 * time.Millisecond
	case "ap-south|us-east":
		return 200 * time.Millisecond
	case "ap-south|eu-west":
		return 150 * time.Millisecond
	}
	return 100 * time.Millisecond
}

// Link is one simulated network path: from a region (its clients, or its nodes) to
// one node, through a toxiproxy latency proxy on 127.0.0.1.
type Link struct {
	Kind string // "client" (an application in From calling Node) or "peer" (a node of From forwarding to Node)
	From string
	Node *Node
	Addr string // host:port to dial instead of the node's own address

	proxy    *toxiproxy.Proxy
	upstream string
	down     bool // guarded by network.mu
}

// URL is the link's address as an http:// URL.
func (l *Link) URL() string { return "http://" + l.Addr }

// network holds every link of a cluster. The proxies run inside the process that
// started the cluster (toxiproxy as a library: the kernel here has no netem).
type network struct {
	srv   *toxiproxy.ApiServer
	cutMu sync.Mutex // serializes partitions and heals

	mu    sync.Mutex
	links []*Link
	rtt   map[[2]string]time.Duration
	cut   map[[2]string]bool // from → to regions whose links are down
}

func newNetwork(rtt func(a, b string) time.Duration, regions []string) *network {
	logger := zerolog.Nop()
	n := &network{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), logger),
		rtt: map[[2]string]time.Duration{}, cut: map[[2]string]bool{}}
	for _, a := range regions {
		for _, b := range regions {
			n.rtt[[2]string{a, b}] = rtt(a, b)
		}
	}
	return n
}

// add creates and starts a link from region from to node nd on a free port.
func (n *network) add(kind, from string, nd *Node) (*Link, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	name := kind + ":" + from + "->" + nd.ID
	upstream := strings.TrimPrefix(nd.URL, "http://")
	if kind == "peer" {
		upstream = nd.Peer // nodes forward to each other's peer listeners
	}
	p := toxiproxy.NewProxy(n.srv, name, addr, upstream)
	if err := n.srv.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("start proxy %s: %w", name, err)
	}
	l := &Link{Kind: kind, From: from, Node: nd, Addr: addr, proxy: p, upstream: p.Upstream}
	if err := n.setLatency(l, n.rtt[[2]string{from, nd.Region}]); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.links = append(n.links, l)
	n.mu.Unlock()
	return l, nil
}

// setLatency makes the link's round trip rtt: half each way (whole milliseconds, the
// odd one upstream).
func (n *network) setLatency(l *Link, rtt time.Duration) error {
	ms := rtt.Milliseconds()
	up, down := (ms+1)/2, ms/2
	for _, t := range []struct {
		stream string
		ms     int64
	}{{"upstream", up}, {"downstream", down}} {
		name := "latency_" + t.stream
		body := fmt.Sprintf(`{"name":%q,"type":"latency","stream":%q,"attributes":{"latency":%d}}`, name, t.stream, t.ms)
		// Replace rather than update: toxiproxy's UpdateToxicJson decodes into the toxic
		// its pipes are reading (a data race); a new toxic is installed atomically.
		if l.proxy.Toxics.GetToxic(name) != nil {
			if err := l.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
				return fmt.Errorf("set latency on %s: %w", l.proxy.Name, err)
			}
		}
		if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			return fmt.Errorf("set latency on %s: %w", l.proxy.Name, err)
		}
	}
	return nil
}

// SetRTT changes the simulated round trip between regions a and b (both directions,
// clients and nodes alike) while the cluster runs.
func (n *network) SetRTT(a, b string, rtt time.Duration) error {
	if rtt < 0 {
		return errors.New("round trip must not be negative")
	}
	n.mu.Lock()
	if _, ok := n.rtt[[2]string{a, b}]; !ok {
		n.mu.Unlock()
		return fmt.Errorf("unknown region pair %s, %s", a, b)
	}
	n.rtt[[2]string{a, b}], n.rtt[[2]string{b, a}] = rtt, rtt
	links := slices.Clone(n.links)
	n.mu.Unlock()
	var errs []error
	for _, l := range links {
		if (l.From == a && l.Node.Region == b) || (l.From == b && l.Node.Region == a) {
			errs = append(errs, n.setLatency(l, rtt))
		}
	}
	return errors.Join(errs...)
}

// RTT is the configured round trip between two regions.
func (n *network) RTT(a, b string) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rtt[[2]string{a, b}]
}

// Partition cuts every link from region a to region b (and from b to a unless
// oneWay): open connections are closed and new ones refused. Gossip is not proxied,
// so nodes still see each other alive; requests across the cut fail fast instead.
func (n *network) Partition(a, b string, oneWay bool) error {
	return n.setCut(a, b, oneWay, true)
}

// Heal restores every link between a and b, both ways.
func (n *network) Heal(a, b string) error {
	return n.setCut(a, b, false, false)
}

func (n *network) setCut(a, b string, oneWay, cut bool) error {
	if a == b {
		return errors.New("partition needs two different regions")
	}
	n.cutMu.Lock()
	defer n.cutMu.Unlock()
	n.mu.Lock()
	if _, ok := n.rtt[[2]string{a, b}]; !ok {
		n.mu.Unlock()
		return fmt.Errorf("unknown region pair %s, %s", a, b)
	}
	n.cut[[2]string{a, b}] = cut
	if !oneWay {
		n.cut[[2]string{b, a}] = cut
	}
	type update struct {
		l    *Link
		down bool
	}
	var change []update
	for _, l := range n.links {
		if down := n.cut[[2]string{l.From, l.Node.Region}]; down != l.down {
			l.down = down
			change = append(change, update{l, down})
		}
	}
	n.mu.Unlock()
	var errs []error
	for _, u := range change {
		errs = append(errs, u.l.proxy.Update(&toxiproxy.Proxy{Listen: u.l.Addr, Upstream: u.l.upstream, Enabled: !u.down}))
	}
	return errors.Join(errs...)
}

// linksTo returns the links of a kind from region from to the nodes of region to.
func (n *network) linksTo(kind, from, to string) []*Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*Link
	for _, l := range n.links {
		if l.Kind == kind && l.From == from && l.Node.Region == to {
			out = append(out, l)
		}
	}
	return out
}

func (n *network) stop() {
	_ = n.srv.Collection.Clear()
}

// freeAddr reserves a port on 127.0.0.1 (see pglocal.FreePort) as host:port.
func freeAddr() (string, error) {
	port, err := pglocal.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// LatencyLink is a standalone simulated link: the same kind of latency proxy the
// cluster's links are, to any upstream. The bench sends a trivial request through one
// to measure what the proxies themselves add beyond their configured delay.
type LatencyLink struct {
	n *network
	l *Link
}

// NewLatencyLink starts a latency proxy on 127.0.0.1 to upstream (host:port) with round
// trip rtt (half each way, as cluster links).
func NewLatencyLink(upstream string, rtt time.Duration) (*LatencyLink, error) {
	n := newNetwork(func(string, string) time.Duration { return rtt }, []string{"calibration"})
	l, err := n.add("client", "calibration", &Node{ID: "calibration", Region: "calibration", URL: "http://" + upstream})
	if err != nil {
		n.stop()
		return nil, err
	}
	return &LatencyLink{n: n, l: l}, nil
}

// URL is the link's address as an http:// URL.
func (l *LatencyLink) URL() string { return l.l.URL() }

// Close stops the proxy.
func (l *LatencyLink) Close() { l.n.stop() }
