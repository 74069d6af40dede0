package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is one node of the cluster as gossip knows it.
type Member struct {
	Region  string `json:"r"`
	NodeID  string `json:"n"`
	URL     string `json:"u"` // the node's API URL, as other nodes reach it
	Version string `json:"v"`
	Ready   bool   `json:"ok"`
	// State is "alive" or "suspect"; dead and departed nodes are not members.
	State string `json:"-"`
}

// Gossip timing profiles. A dead node is declared dead after about
// ProbeInterval + ProbeTimeout + SuspicionMult × ProbeInterval (memberlist's suspicion
// timeout for clusters under ten nodes); docs/routing.md lists the figures.
const (
	ProfileWAN   = "wan"   // regions far apart: dead in about 6 s
	ProfileLAN   = "lan"   // one data centre: dead in about 3 s
	ProfileLocal = "local" // one machine (demo, tests): dead in about 1 s
)

// MembershipConfig configures gossip.
type MembershipConfig struct {
	Region, NodeID, URL, Version string
	// Bind is the host:port gossip listens on (TCP and UDP). Port 0 picks a free port.
	Bind string
	// Advertise is the host:port other nodes reach this node's gossip at; "" means Bind.
	Advertise string
	// Join lists host:port of nodes to join; a node keeps retrying the ones it has not
	// reached, so start order does not matter.
	Join []string
	// Profile is ProfileWAN (default), ProfileLAN or ProfileLocal.
	Profile string
	Log     *slog.Logger
}

// Validate reports the first invalid field.
func (c MembershipConfig) Validate() error {
	var errs []error
	if c.Region == "" || c.NodeID == "" {
		errs = append(errs, errors.New("gossip: region and node id are required"))
	}
	if c.URL == "" {
		errs = append(errs, errors.New("gossip: the node's advertised API URL is required"))
	}
	if _, _, err := splitHostPort(c.Bind); err != nil {
		errs = append(errs, fmt.Errorf("gossip listen: %w", err))
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("gossip advertise: %w", err))
		}
	}
	for _, j := range c.Join {
		if _, _, err := splitHostPort(j); err != nil {
			errs = append(errs, fmt.Errorf("join: %q: %w", j, err))
		}
	}
	switch c.Profile {
	case "", ProfileWAN, ProfileLAN, ProfileLocal:
	default:
		errs = append(errs, fmt.Errorf("gossip profile: %q is not one of wan, lan, local", c.Profile))
	}
	return errors.Join(errs...)
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", s)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", s)
	}
	return host, port, nil
}

// Membership is this node's view of the cluster, kept by gossip
// (hashicorp/memberlist). Safe for concurrent use.
type Membership struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	join []string
	stop chan struct{}
	done chan struct{}

	queue *memberlist.TransmitLimitedQueue

	mu     sync.Mutex
	self   Member
	onMove []func(tenant string, epoch int64)
}

// JoinMembership starts gossip and joins the configured nodes in the background.
func JoinMembership(cfg MembershipConfig) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = 200*time.Millisecond, 100*time.Millisecond, 3
		mc.GossipInterval, mc.PushPullInterval = 50*time.Millisecond, 5*time.Second
		mc.TCPTimeout = 2 * time.Second
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = 500*time.Millisecond, 250*time.Millisecond, 4
	default:
		// Probe timeouts must exceed the longest round trip (about 300 ms across the
		// world); WAN defaults take half a minute to call a node dead, too slow for
		// routing, so the interval is shorter.
		mc = memberlist.DefaultWANConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = time.Second, 800*time.Millisecond, 4
		mc.GossipInterval = 200 * time.Millisecond
	}
	mc.Name = cfg.NodeID
	host, port, _ := splitHostPort(cfg.Bind)
	mc.BindAddr, mc.BindPort = host, port
	if cfg.Advertise != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitHostPort(cfg.Advertise)
	}
	mc.Logger = log.New(slogWriter{cfg.Log}, "", 0)
	m := &Membership{log: cfg.Log, join: cfg.Join, stop: make(chan struct{}), done: make(chan struct{}),
		self: Member{Region: cfg.Region, NodeID: cfg.NodeID, URL: cfg.URL, Version: cfg.Version}}
	mc.Delegate = delegate{m}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: ml.NumMembers, RetransmitMult: 3}
	go m.rejoin()
	return m, nil
}

// Addr is the host:port gossip listens on.
func (m *Membership) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// rejoin joins every configured node that is not a live member, at once and then
// every two seconds until Leave: after a partition heals, or when a seed started
// late, the node finds the cluster again.
func (m *Membership) rejoin() {
	defer close(m.done)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		var missing []string
		live := map[string]bool{}
		for _, n := range m.ml.Members() {
			live[net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))] = true
		}
		for _, j := range m.join {
			if !live[j] {
				missing = append(missing, j)
			}
		}
		if len(missing) > 0 {
			if _, err := m.ml.Join(missing); err != nil {
				m.log.Debug("gossip join", "nodes", missing, "err", err)
			}
		}
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// SetReady updates this node's readiness and gossips it when it changed.
func (m *Membership) SetReady(ready bool) {
	m.mu.Lock()
	changed := m.self.Ready != ready
	m.self.Ready = ready
	m.mu.Unlock()
	if changed {
		if err := m.ml.UpdateNode(time.Second); err != nil {
			m.log.Debug("gossip readiness", "err", err)
		}
	}
}

// Members returns every live node (alive or suspect), this one included, sorted by
// region then node id.
func (m *Membership) Members() []Member {
	var out []Member
	for _, n := range m.ml.Members() {
		var mem Member
		if json.Unmarshal(n.Meta, &mem) != nil || mem.Region == "" {
			continue // not a keyplane node, or its meta has not arrived yet
		}
		mem.State = "alive"
		if n.State == memberlist.StateSuspect {
			mem.State = "suspect"
		}
		out = append(out, mem)
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.Region != b.Region {
			return compare(a.Region, b.Region)
		}
		return compare(a.NodeID, b.NodeID)
	})
	return out
}

// Ready returns the ready, alive (not suspect) nodes of a region.
func (m *Membership) Ready(region string) []Member {
	var out []Member
	for _, mem := range m.Members() {
		if mem.Region == region && mem.Ready && mem.State == "alive" {
			out = append(out, mem)
		}
	}
	return out
}

// moveMsg is the gossip broadcast announcing that a tenant was rehomed.
type moveMsg struct {
	Tenant string `json:"moved"`
	Epoch  int64  `json:"epoch"`
}

type moveBroadcast struct{ msg []byte }

func (b moveBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b moveBroadcast) Message() []byte                       { return b.msg }
func (b moveBroadcast) Finished()                             {}

// AnnounceMove gossips that a tenant moved to a new placement epoch, so every node
// drops its cached placement at once instead of when the cache expires. Best effort:
// the caches' TTL bounds staleness when a broadcast is lost.
func (m *Membership) AnnounceMove(tenant string, epoch int64) {
	b, _ := json.Marshal(moveMsg{Tenant: tenant, Epoch: epoch})
	m.queue.QueueBroadcast(moveBroadcast{msg: b})
}

// OnMove registers fn to be called (from gossip's goroutine; it must not block) when
// another node announces a tenant move.
func (m *Membership) OnMove(fn func(tenant string, epoch int64)) {
	m.mu.Lock()
	m.onMove = append(m.onMove, fn)
	m.mu.Unlock()
}

// Leave announces the departure (so peers stop routing here at once) and stops gossip.
func (m *Membership) Leave(timeout time.Duration) {
	select {
	case <-m.stop:
		return
	default:
	}
	close(m.stop)
	<-m.done
	if err := m.ml.Leave(timeout); err != nil {
		m.log.Debug("gossip leave", "err", err)
	}
	_ = m.ml.Shutdown()
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// delegate hands memberlist this node's metadata. memberlist calls it from several
// goroutines; it only reads self under the lock.
type delegate struct{ m *Membership }

func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	b, _ := json.Marshal(d.m.self)
	d.m.mu.Unlock()
	if len(b) > limit {
		d.m.log.Error("gossip metadata too large; peers will not route here", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// NotifyMsg receives gossip broadcasts: tenant moves.
func (d delegate) NotifyMsg(b []byte) {
	var mv moveMsg
	if json.Unmarshal(b, &mv) != nil || mv.Tenant == "" {
		return
	}
	d.m.mu.Lock()
	fns := slices.Clone(d.m.onMove)
	d.m.mu.Unlock()
	for _, fn := range fns {
		fn(mv.Tenant, mv.Epoch)
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if d.m.queue == nil {
		return nil
	}
	return d.m.queue.GetBroadcasts(overhead, limit)
}
func (delegate) LocalState(bool) []byte            { return nil }
func (delegate) MergeRemoteState(_ []byte, _ bool) {}

// slogWriter sends memberlist's log lines to slog at debug level (warnings and
// errors at warn), so gossip noise stays out of production logs.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	level := slog.LevelDebug
	if len(msg) > 7 && (msg[:6] == "[WARN]" || msg[:7] == "[ERROR]") {
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, "gossip", "msg", trimNewline(msg))
	return len(p), nil
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

var _ io.Writer = slogWriter{}
