package routing

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is one node of the cluster as gossip knows it.
type Member struct {
	Region string `json:"r"`
	NodeID string `json:"n"`
	URL    string `json:"u"` // the node's API URL, as other nodes reach it
	// Peer is the node's peer listener URL, where other nodes forward requests
	// (https: mutual TLS; http: h2c, development only).
	Peer    string `json:"p,omitempty"`
	Version string `json:"v"`
	Ready   bool   `json:"ok"`
	// Boot is when this lifetime of the node joined (Unix nanoseconds). Each process
	// gossips under a name of its own (node id and a random suffix), so a restarted node
	// is a new gossip member, never an older incarnation of the one that stopped; while
	// both are listed, the later Boot is the node.
	Boot int64 `json:"b"`
	// State is "alive": dead and departed nodes are not members. (A suspect node stays
	// listed until declared dead; the router's own failure memory skips it sooner.)
	State string `json:"-"`
}

// Gossip timing profiles. A dead node is declared dead after about
// ProbeInterval + ProbeTimeout + SuspicionMult × ProbeInterval (memberlist's suspicion
// timeout for clusters under ten nodes); docs/routing.md lists the figures.
const (
	ProfileWAN   = "wan"   // regions far apart: dead in about 6 s
	ProfileLAN   = "lan"   // one data centre: dead in about 3 s
	ProfileLocal = "local" // one machine (demo, tests): dead in about 2 s
)

// Readmission. Gossip spreads a change by a few best-effort UDP retransmissions and
// repairs what they miss by a full state exchange (push-pull) with one random peer
// every PushPullInterval; in a small cluster a lost readiness update or a lost
// refutation could therefore keep a node unrouted for many intervals (issue 11: a
// restarted node unseen for 30 s). Two state exchanges make it deterministic:
//
//   - announce: after this node's own state changes (start, readiness), it exchanges
//     state directly with every live peer, retrying each until it succeeds;
//   - rejoin: every RejoinInterval it exchanges state with every seed that is not a
//     live member and with every peer declared dead in the last DeadRetry, so a node
//     that was restarted, or declared dead while alive (a busy machine), is readmitted
//     by the peers themselves, whatever gossip lost.
//
// A peer hence sees a restarted node ready within about two RejoinIntervals of the
// node reporting ready (ReadmitBound).
const (
	RejoinInterval = 2 * time.Second
	DeadRetry      = 2 * time.Minute
)

// ReadmitBound is how long after a restarted node reports ready every live peer
// lists it ready, barring a partition: its own announce, or a peer's rejoin of the
// dead node followed by the exchange that brings its refuted incarnation.
func ReadmitBound() time.Duration { return 2*RejoinInterval + time.Second }

// MembershipConfig configures gossip.
type MembershipConfig struct {
	Region, NodeID, URL, Version string
	// PeerURL is where other nodes forward requests to this node (its peer listener).
	PeerURL string
	// Bind is the host:port gossip listens on (TCP and UDP). Port 0 picks a free port.
	Bind string
	// Advertise is the host:port other nodes reach this node's gossip at; "" means Bind.
	Advertise string
	// Join lists host:port of nodes to join; a node keeps retrying the ones it has not
	// reached, so start order does not matter.
	Join []string
	// Profile is ProfileWAN (default), ProfileLAN or ProfileLocal.
	Profile string
	// Keys encrypt and authenticate gossip (AES-GCM, 16, 24 or 32 bytes each): the
	// first encrypts what this node sends, every one decrypts what it receives, and a
	// message no key opens is dropped, so a process without a key can neither join nor
	// read the cluster's metadata. Rotate by adding the new key last on every node,
	// then moving it first on every node, then removing the old one (docs/security.md).
	Keys [][]byte
	// Insecure allows gossip without Keys: anyone who reaches the gossip port can then
	// join the cluster and receive forwarded requests. For development only.
	Insecure bool
	Log      *slog.Logger

	tune func(*memberlist.Config) // tests only: adjusts the profile's settings
}

// Validate reports every invalid field.
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
	if len(c.Keys) == 0 && !c.Insecure {
		errs = append(errs, errors.New("gossip keys: none given; gossip without a key lets anyone who reaches the port join the cluster (make one with `keyplane keys new-gossip-key`)"))
	}
	for i, k := range c.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip keys: key %d is %d bytes, want 16, 24 or 32", i+1, n))
		}
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
	addr  string
	once  sync.Once

	changed chan struct{} // this node's state changed: announce it (buffered, 1)

	name string // this lifetime's gossip name: NodeID~random

	// updating serializes UpdateNode: memberlist reads the local node's state outside
	// its lock there, so two concurrent calls (readiness, reconcile) race inside it.
	// Never held with mu (UpdateNode calls NodeMeta, which takes mu).
	updating sync.Mutex

	mu      sync.Mutex
	self    Member
	onMove  []func(tenant string, epoch int64)
	members map[string]peer     // gossip name → what gossip last said; filled by events
	current map[string]peer     // node id → its latest lifetime among members (by Boot)
	dead    map[string]deadPeer // node name → a peer declared dead or gone, for rejoin
	unsent  map[string]bool     // gossip addresses of live peers not yet told of our last change
	moves   map[moveMsg]bool    // moves heard (tenant, epoch), so each is relayed once
}

// deadPeer is a peer that gossip declared dead, or that left: rejoin keeps exchanging
// state with it until DeadRetry has passed, in case it is alive after all.
type deadPeer struct {
	addr  string
	since time.Time
}

// peer is a copy of what memberlist knows of a node: memberlist's own Node values
// change in place under its lock, so they are read only inside its event callbacks.
type peer struct {
	m    Member
	addr string // gossip host:port
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
		// One machine, but a busy one (tests, benchmarks): a probe answered after
		// 100 ms is a scheduling delay, not a dead node, so the timeout allows 300 ms
		// and three peers probe indirectly before a node is suspected.
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = 500*time.Millisecond, 300*time.Millisecond, 3
		mc.IndirectChecks, mc.RetransmitMult = 3, 4
		mc.GossipInterval, mc.PushPullInterval = 50*time.Millisecond, 5*time.Second
		mc.TCPTimeout = 2 * time.Second
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = 500*time.Millisecond, 250*time.Millisecond, 4
		mc.PushPullInterval = 10 * time.Second // a lost readiness change is repaired by the next full sync
	default:
		// Probe timeouts must exceed the longest round trip (about 300 ms across the
		// world); WAN defaults take half a minute to call a node dead, too slow for
		// routing, so the interval is shorter.
		mc = memberlist.DefaultWANConfig()
		mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = time.Second, 800*time.Millisecond, 4
		mc.GossipInterval, mc.PushPullInterval = 200*time.Millisecond, 10*time.Second
		mc.TCPTimeout = 5 * time.Second // a state exchange with an unreachable peer stalls rejoin no longer
	}
	if len(cfg.Keys) > 0 {
		ring, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
		mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = ring, true, true
	}
	m := &Membership{log: cfg.Log, join: cfg.Join, stop: make(chan struct{}), done: make(chan struct{}),
		changed: make(chan struct{}, 1),
		name:    cfg.NodeID + "~" + strings.ToLower(rand.Text()[:6]),
		self:    Member{Region: cfg.Region, NodeID: cfg.NodeID, URL: cfg.URL, Peer: cfg.PeerURL, Version: cfg.Version, Boot: time.Now().UnixNano()}}
	m.members, m.current, m.dead, m.unsent, m.moves = map[string]peer{}, map[string]peer{}, map[string]deadPeer{}, map[string]bool{}, map[moveMsg]bool{}
	mc.Name = m.name
	host, port, _ := splitHostPort(cfg.Bind)
	mc.BindAddr, mc.BindPort = host, port
	if cfg.Advertise != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitHostPort(cfg.Advertise)
	}
	mc.Logger = log.New(slogWriter{cfg.Log}, "", 0)
	if cfg.tune != nil {
		cfg.tune(mc)
	}
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: m.numMembers, RetransmitMult: 3}
	mc.Delegate = delegate{m}
	mc.Events = events{m}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	n := ml.LocalNode()
	m.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	go m.rejoin()
	return m, nil
}

func (m *Membership) numMembers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(len(m.current), 1)
}

// Addr is the host:port gossip listens on.
func (m *Membership) Addr() string { return m.addr }

// rejoin exchanges state (memberlist's Join: a TCP push-pull) with every seed that
// is not a live member and every peer declared dead within DeadRetry, at once and then
// every RejoinInterval until Leave, and announces this node's changes to every live
// peer: after a partition heals, a seed starts late, a node restarts or is declared
// dead while alive, the state exchange readmits it whatever gossip lost.
func (m *Membership) rejoin() {
	defer close(m.done)
	t := time.NewTicker(RejoinInterval)
	defer t.Stop()
	for {
		if targets := m.rejoinTargets(time.Now()); len(targets) > 0 {
			if _, err := m.ml.Join(twice(targets)); err != nil {
				m.log.Debug("gossip join", "nodes", targets, "err", err)
			}
		}
		m.reconcile()
		m.announce()
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.changed:
		}
	}
}

// rejoinTargets returns the seeds that are not live members and the peers declared
// dead within DeadRetry (forgetting older ones).
func (m *Membership) rejoinTargets(now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := map[string]bool{m.addr: true}
	for _, p := range m.members {
		live[p.addr] = true
	}
	var out []string
	for _, j := range m.join {
		if !live[j] {
			out = append(out, j)
			live[j] = true
		}
	}
	for name, d := range m.dead {
		switch {
		case now.Sub(d.since) > DeadRetry:
			delete(m.dead, name)
		case !live[d.addr]:
			out = append(out, d.addr)
			live[d.addr] = true
		}
	}
	return out
}

// announce exchanges state with every live peer not yet told of this node's last
// change, one at a time; a peer that does not answer is tried again next time.
func (m *Membership) announce() {
	m.mu.Lock()
	var to []string
	for addr := range m.unsent {
		to = append(to, addr)
	}
	m.mu.Unlock()
	for _, addr := range to {
		select {
		case <-m.stop:
			return
		default:
		}
		if _, err := m.ml.Join(twice([]string{addr})); err != nil {
			m.log.Debug("gossip announce", "node", addr, "err", err)
			continue
		}
		m.mu.Lock()
		delete(m.unsent, addr)
		m.mu.Unlock()
	}
}

// twice lists every address two times in a row. One state exchange can leave a peer
// behind: memberlist sends its own state before merging the peer's, so when the peer
// holds an older incarnation of this node above the one this node started with (a
// restart, a node declared dead), this node refutes it only after sending, and the
// peer keeps ignoring it. The second exchange carries the refuted incarnation.
func twice(addrs []string) []string {
	out := make([]string, 0, 2*len(addrs))
	for _, a := range addrs {
		out = append(out, a, a)
	}
	return out
}

// reconcile advertises this node's metadata again when gossip's copy of it (as the
// events last reported it) is not what the node says: memberlist drops an UpdateNode
// whose incarnation a concurrent refutation overtook, and the refutation keeps the
// older metadata (a node that turned ready while refuting "you are dead" stayed "not
// ready" for every peer: issue 11's flake).
func (m *Membership) reconcile() {
	m.mu.Lock()
	p, ok := m.members[m.name]
	want := m.self
	want.State = p.m.State
	stale := !ok || p.m != want
	m.mu.Unlock()
	if !stale {
		return
	}
	if err := m.updateNode(); err != nil {
		m.log.Debug("gossip metadata", "err", err)
	}
	m.markChanged()
}

// updateNode re-advertises this node's metadata, one call at a time.
func (m *Membership) updateNode() error {
	m.updating.Lock()
	defer m.updating.Unlock()
	return m.ml.UpdateNode(time.Second)
}

// markChanged records that every live peer must be told this node's state.
func (m *Membership) markChanged() {
	m.mu.Lock()
	for name, p := range m.members {
		if name != m.name {
			m.unsent[p.addr] = true
		}
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// SetReady updates this node's readiness and gossips it when it changed.
func (m *Membership) SetReady(ready bool) {
	m.mu.Lock()
	changed := m.self.Ready != ready
	m.self.Ready = ready
	m.mu.Unlock()
	if changed {
		if err := m.updateNode(); err != nil {
			m.log.Debug("gossip readiness", "err", err)
		}
		m.markChanged()
	}
}

// Members returns every live node, this one included, sorted by region then node id.
// A node leaves the list when gossip declares it dead or it leaves.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.current))
	for _, p := range m.current {
		out = append(out, p.m)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.NodeID, b.NodeID))
	})
	return out
}

// Ready returns the ready, live nodes of a region.
// It is on every forward's path: no sorting (the router shuffles), one small slice.
func (m *Membership) Ready(region string) []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	for _, p := range m.current {
		if p.m.Region == region && p.m.Ready {
			out = append(out, p.m)
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

// AnnounceMove tells every node that a tenant moved to a new placement epoch, so each
// drops its cached placement at once instead of when the cache expires. The move is
// sent to every member alive now over TCP (memberlist's reliable send), and gossiped
// too: every node relays a move the first time it hears it, which reaches a node that
// joins meanwhile. Gossip alone reaches every node only with high probability (each
// node relays to a few random peers, over UDP that a busy host drops), and rehomes are
// rare enough that a connection per member costs nothing. Best effort still: a node
// that hears nothing refreshes the placement when its cache's TTL expires.
func (m *Membership) AnnounceMove(tenant string, epoch int64) {
	mv := moveMsg{Tenant: tenant, Epoch: epoch}
	m.mu.Lock()
	m.heard(mv)
	m.mu.Unlock()
	b, _ := json.Marshal(mv)
	m.queue.QueueBroadcast(moveBroadcast{msg: b})
	for _, n := range m.ml.Members() {
		if n.Name == m.name {
			continue
		}
		go func() {
			if err := m.ml.SendReliable(n, b); err != nil {
				m.log.Debug("tenant move not sent directly; gossip carries it", "to", n.Name, "err", err)
			}
		}()
	}
}

// heard records a move and reports whether it is new. Callers hold m.mu.
func (m *Membership) heard(mv moveMsg) bool {
	if m.moves[mv] {
		return false
	}
	if len(m.moves) >= 10_000 {
		clear(m.moves)
	}
	m.moves[mv] = true
	return true
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
	m.once.Do(func() {
		close(m.stop)
		select { // a state exchange in flight ends within TCPTimeout; do not wait longer
		case <-m.done:
		case <-time.After(timeout):
		}
		if err := m.ml.Leave(timeout); err != nil {
			m.log.Debug("gossip leave", "err", err)
		}
		_ = m.ml.Shutdown()
	})
}

// events keeps Membership.members: memberlist calls it with its lock held, never
// concurrently, so the node's fields may be read here.
type events struct{ m *Membership }

// NotifyJoin: a node joined, or came back from dead. Both sides must see each
// other's latest state, which gossip may have lost: announce to it.
func (e events) NotifyJoin(n *memberlist.Node) {
	e.m.log.Debug("gossip member joined", "member", n.Name, "meta", string(n.Meta))
	if e.m.put(n) {
		e.m.mu.Lock()
		if n.Name != e.m.name {
			e.m.unsent[e.m.members[n.Name].addr] = true
		}
		e.m.mu.Unlock()
		select {
		case e.m.changed <- struct{}{}:
		default:
		}
	}
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	e.m.log.Debug("gossip member updated", "member", n.Name, "meta", string(n.Meta))
	e.m.put(n)
}

// NotifyLeave: a node was declared dead, or left. memberlist does not say which
// (it keeps the state outside the Node it passes), so both are retried by rejoin for
// DeadRetry: a stopped node refuses the connection at no cost, a node declared dead
// while alive is readmitted.
func (e events) NotifyLeave(n *memberlist.Node) {
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	e.m.log.Debug("gossip member left or dead", "member", n.Name)
	e.m.mu.Lock()
	delete(e.m.members, n.Name)
	delete(e.m.unsent, addr)
	e.m.dead[n.Name] = deadPeer{addr: addr, since: time.Now()}
	e.m.index()
	e.m.mu.Unlock()
}

// put records what gossip says of a node, and reports whether it is a keyplane node.
func (m *Membership) put(n *memberlist.Node) bool {
	mem, ok := decodeMember(n.Meta)
	if !ok {
		return false // not a keyplane node, or its metadata has not arrived yet
	}
	p := peer{m: mem, addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	m.mu.Lock()
	m.members[n.Name] = p
	delete(m.dead, n.Name)
	m.index()
	m.mu.Unlock()
	return true
}

// index rebuilds current: each node id's latest lifetime among the members. Events are
// rare, lookups are on every forward's path. Callers hold m.mu.
func (m *Membership) index() {
	clear(m.current)
	for _, p := range m.members {
		if cur, ok := m.current[p.m.NodeID]; !ok || p.m.Boot > cur.m.Boot {
			m.current[p.m.NodeID] = p
		}
	}
}

// decodeMember reads a peer's gossip metadata. Gossip is keyed, so only a node of the
// cluster sends it, but a bug or an old version must not make a member that routing
// cannot use: a region and a node id (each usable in a certificate identity) are
// required. The state is "alive" (memberlist reports only live nodes' metadata).
func decodeMember(meta []byte) (Member, bool) {
	var m Member
	if json.Unmarshal(meta, &m) != nil || !(Identity{Region: m.Region, NodeID: m.NodeID}).valid() {
		return Member{}, false
	}
	m.State = "alive"
	return m, true
}

// decodeMove reads a tenant-move broadcast: a tenant and an epoch that is not negative.
func decodeMove(b []byte) (moveMsg, bool) {
	var mv moveMsg
	if json.Unmarshal(b, &mv) != nil || mv.Tenant == "" || len(mv.Tenant) > 256 || mv.Epoch < 0 {
		return moveMsg{}, false
	}
	return mv, true
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
	mv, ok := decodeMove(b)
	if !ok {
		return
	}
	d.m.mu.Lock()
	isNew := d.m.heard(mv)
	fns := slices.Clone(d.m.onMove)
	d.m.mu.Unlock()
	if !isNew {
		return
	}
	d.m.queue.QueueBroadcast(moveBroadcast{msg: slices.Clone(b)})
	for _, fn := range fns {
		fn(mv.Tenant, mv.Epoch)
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
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
	if strings.HasPrefix(msg, "[WARN]") || strings.HasPrefix(msg, "[ERR]") || strings.HasPrefix(msg, "[ERROR]") {
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, "gossip", "msg", strings.TrimRight(msg, "\r\n"))
	return len(p), nil
}

var _ io.Writer = slogWriter{}
