package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// memberMeta is the gossip metadata of a node (memberlist NodeMeta, at most
// 512 bytes).
type memberMeta struct {
	ID   string `json:"id"`
	Raft string `json:"raft"`
	// RPC is the internal port's address (the cluster service): the Raft
	// address, unless a test runs Raft over another transport.
	RPC  string `json:"rpc,omitempty"`
	HTTP string `json:"http"`
	// State is true once the node holds Raft state (bootstrapped, or
	// replicated to by a leader). A fresh node that sees such a member never
	// bootstraps: it waits to be added.
	State bool `json:"state,omitempty"`
	// Version is the node's build version (Config.Version).
	Version string `json:"version,omitempty"`
}

// member is one gossip member as last seen.
type member struct {
	memberMeta
	// Gossip is gossipAlive or gossipGone.
	Gossip string
	Addr   string
}

// memberTable is the latest gossip view, keyed by node id.
type memberTable struct {
	mu sync.RWMutex
	m  map[string]member
}

func newMemberTable() *memberTable { return &memberTable{m: map[string]member{}} }

func (t *memberTable) get(id string) (member, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.m[id]
	return m, ok
}

func (t *memberTable) put(m member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[m.ID] = m
}

func (t *memberTable) all() []member {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]member, 0, len(t.m))
	for _, m := range t.m {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Gossip health values in the member table. memberlist v0.6.0 does not
// expose a node's state through the *Node handed to event delegates (its
// internal nodeState.State shadows Node.State, which stays zero), so the
// health is derived from the event kind: join/update = alive, leave =
// gone (failed or left; memberlist does not tell which here).
const (
	gossipAlive = "alive"
	gossipGone  = "gone"
)

// delegate implements memberlist.Delegate (metadata only) and
// memberlist.EventDelegate (feeds the member table and a coalescing
// change signal; it never blocks memberlist).
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	b, err := json.Marshal(d.n.localMeta())
	if err != nil || len(b) > limit {
		d.n.log.Error("gossip metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(node *memberlist.Node)   { d.n.observeMember(node, gossipAlive) }
func (d delegate) NotifyLeave(node *memberlist.Node)  { d.n.observeMember(node, gossipGone) }
func (d delegate) NotifyUpdate(node *memberlist.Node) { d.n.observeMember(node, gossipAlive) }

// localMeta is this node's gossip metadata.
func (n *Node) localMeta() memberMeta {
	// The transport's address, not the configured string: it is what the
	// Raft configuration holds for this node (a hostname is resolved), so
	// reconciliation never sees a spurious address change.
	m := memberMeta{ID: string(n.nodeID), Raft: string(n.transport.LocalAddr()), HTTP: n.cfg.HTTPAdvertise, State: n.hasState.Load(), Version: n.cfg.Version}
	if n.mux != nil {
		m.RPC = n.mux.raft.Addr().String()
	}
	return m
}

// observeMember records a gossip event and signals the reconciler.
func (n *Node) observeMember(node *memberlist.Node, health string) {
	var meta memberMeta
	if err := json.Unmarshal(node.Meta, &meta); err != nil || meta.ID == "" {
		n.log.Warn("ignoring gossip member without valid metadata", "name", node.Name, "err", err)
		return
	}
	if meta.ID != node.Name {
		n.log.Warn("ignoring gossip member whose metadata id differs from its name", "name", node.Name, "id", meta.ID)
		return
	}
	if prev, ok := n.members.get(meta.ID); !ok || prev.Gossip != health {
		n.log.Info("gossip member", "member", meta.ID, "gossip", health)
	}
	n.members.put(member{memberMeta: meta, Gossip: health, Addr: node.Address()})
	select {
	case n.memberEvents <- struct{}{}:
	default:
	}
}

// startGossip starts memberlist, the background join and, for a fresh
// multi-node cluster, the bootstrap-expect watcher.
func (n *Node) startGossip() error {
	host, port, err := splitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("cluster: gossip address: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = string(n.nodeID)
	mc.BindAddr = host
	mc.BindPort = port
	if n.cfg.GossipAdvertise != "" {
		ah, ap, err := splitHostPort(n.cfg.GossipAdvertise)
		if err != nil {
			return fmt.Errorf("cluster: gossip advertise address: %w", err)
		}
		// An unspecified host (bound to all interfaces, no advertise
		// given) is left to memberlist, which picks a private address.
		ip := net.ParseIP(ah)
		if ip == nil && ah != "" {
			// memberlist wants an IP: resolve a host name once.
			ips, err := net.LookupIP(ah)
			if err == nil && len(ips) == 0 {
				err = errors.New("no addresses")
			}
			if err != nil {
				return fmt.Errorf("cluster: resolve gossip advertise host %q: %w", ah, err)
			}
			ip = ips[0]
		}
		if ip != nil && !ip.IsUnspecified() {
			mc.AdvertiseAddr = ip.String()
		}
		mc.AdvertisePort = ap
	}
	if len(n.cfg.GossipKey) > 0 {
		mc.SecretKey = n.cfg.GossipKey
	}
	d := delegate{n: n}
	mc.Delegate = d
	mc.Events = d
	mc.LogOutput = nil
	mc.Logger = newHCLogger(n.log).Named("memberlist").StandardLogger(nil)
	if n.cfg.HeartbeatTimeout > 0 && n.cfg.HeartbeatTimeout < time.Second {
		// Test tuning: faster failure detection and sync.
		mc.ProbeInterval = 250 * time.Millisecond
		mc.ProbeTimeout = 200 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.PushPullInterval = 2 * time.Second
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	n.ml = ml

	if len(n.cfg.Join) > 0 {
		n.wg.Add(1)
		go n.joinLoop()
	}
	n.wg.Add(1)
	go n.metaLoop()
	if !n.hasState.Load() && n.cfg.BootstrapExpect > 1 {
		n.wg.Add(1)
		go n.bootstrapExpectLoop()
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("split %q: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	return host, port, nil
}

// joinLoop joins the configured members, retrying with backoff until one
// join succeeds or the node closes.
func (n *Node) joinLoop() {
	defer n.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		k, err := n.ml.Join(n.cfg.Join)
		if k > 0 {
			n.log.Info("joined gossip", "contacted", k)
			return
		}
		n.log.Debug("gossip join failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// metaLoop re-advertises metadata once this node holds Raft state, so that
// fresh nodes stop considering a bootstrap.
func (n *Node) metaLoop() {
	defer n.wg.Done()
	advertised := n.hasState.Load()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !advertised && (n.hasState.Load() || n.raft.LastIndex() > 0) {
			n.hasState.Store(true)
			if err := n.ml.UpdateNode(time.Second); err != nil {
				n.log.Debug("gossip metadata update", "err", err)
				continue
			}
			advertised = true
		}
		if advertised {
			return
		}
	}
}

// bootstrapExpectLoop bootstraps a fresh multi-node cluster. It waits until
// gossip shows exactly BootstrapExpect alive members, none of which holds
// Raft state, then bootstraps all of them as voters sorted by id. Every
// such node computes the identical configuration, so the bootstraps agree.
// It gives up as soon as any member (or this node) holds state: that node
// is then added by the existing leader instead.
func (n *Node) bootstrapExpectLoop() {
	defer n.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastWhy := ""
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.hasState.Load() || n.raft.LastIndex() > 0 {
			return
		}
		servers, why := n.bootstrapCandidates()
		if why != "" {
			if why != lastWhy {
				n.log.Info("not bootstrapping yet", "reason", why)
				lastWhy = why
			}
			continue
		}
		if err := n.bootstrap(servers); err != nil {
			n.log.Error("bootstrap failed", "err", err)
		}
		return
	}
}

// bootstrapCandidates returns the servers to bootstrap with, or why the
// conditions do not hold yet.
//
// It reads the member table fed by the event delegate, never
// memberlist.Members(): the nodes that returns are mutated by memberlist
// without a lock the caller can take.
func (n *Node) bootstrapCandidates() ([]raft.Server, string) {
	self := n.localMeta()
	servers := []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(self.ID), Address: raft.ServerAddress(self.Raft)}}
	for _, m := range n.members.all() {
		if m.ID == self.ID || m.Gossip != gossipAlive {
			continue
		}
		if m.State {
			return nil, "member " + m.ID + " already holds raft state; waiting to be added by its leader"
		}
		if m.Raft == "" {
			return nil, "member " + m.ID + " advertises no raft address"
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Raft)})
	}
	if len(servers) < n.cfg.BootstrapExpect {
		return nil, fmt.Sprintf("waiting for %d members, seen %d", n.cfg.BootstrapExpect, len(servers))
	}
	if len(servers) > n.cfg.BootstrapExpect {
		// Different nodes could pick different subsets: never guess.
		return nil, fmt.Sprintf("seen %d fresh members, more than bootstrap-expect %d; refusing to pick a subset", len(servers), n.cfg.BootstrapExpect)
	}
	return servers, ""
}

// reconcileLoop runs on the ready leader: it reconciles the whole gossip
// member list into the Raft configuration at once, on every gossip change
// and periodically (to promote caught-up nonvoters).
func (n *Node) reconcileLoop(ctx context.Context) {
	interval := 2 * time.Second
	if n.cfg.HeartbeatTimeout > 0 && n.cfg.HeartbeatTimeout < time.Second {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	nonvoterSince := map[raft.ServerID]time.Time{}
	for {
		if err := n.reconcile(ctx, nonvoterSince); err != nil && ctx.Err() == nil {
			n.log.Warn("membership reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-n.memberEvents:
		case <-t.C:
		}
	}
}

// stabilization is how long a caught-up nonvoter stays a nonvoter before
// promotion (autopilot's "server stabilization time", scaled to the
// configured election timeout).
func (n *Node) stabilization() time.Duration {
	d := n.cfg.ElectionTimeout
	if d <= 0 {
		d = time.Second
	}
	return 2 * d
}

// reconcile adds unknown alive gossip members as nonvoters, fixes changed
// addresses, and promotes nonvoters that have caught up. Members that only
// fail are never removed: operators use RemoveServer.
//
// Promotion rule (a simple form of raft-autopilot's): a nonvoter is made a
// voter once it has been a nonvoter for stabilization(), is alive in
// gossip, and reports (over its internal HTTP endpoint) an applied index at
// least the leader's commit index taken just before asking. A voter that
// cannot catch up never weakens the quorum this way.
func (n *Node) reconcile(ctx context.Context, nonvoterSince map[raft.ServerID]time.Time) error {
	cf := n.raft.GetConfiguration()
	if err := waitFuture(ctx, cf); err != nil {
		return fmt.Errorf("get configuration: %w", err)
	}
	inConfig := map[raft.ServerID]raft.Server{}
	for _, s := range cf.Configuration().Servers {
		inConfig[s.ID] = s
	}
	var errs []error
	for _, m := range n.members.all() {
		if m.Gossip != gossipAlive || m.Raft == "" {
			continue
		}
		id := raft.ServerID(m.ID)
		addr := raft.ServerAddress(m.Raft)
		s, ok := inConfig[id]
		switch {
		case !ok:
			n.log.Info("adding gossip member as nonvoter", "member", m.ID, "raft", m.Raft)
			if err := waitFuture(ctx, n.raft.AddNonvoter(id, addr, 0, 0)); err != nil {
				errs = append(errs, fmt.Errorf("add nonvoter %s: %w", m.ID, err))
				continue
			}
			nonvoterSince[id] = time.Now()
		case s.Address != addr:
			n.log.Info("member's raft address changed", "member", m.ID, "old", s.Address, "new", addr)
			var f raft.IndexFuture
			if s.Suffrage == raft.Voter {
				f = n.raft.AddVoter(id, addr, 0, 0)
			} else {
				f = n.raft.AddNonvoter(id, addr, 0, 0)
			}
			if err := waitFuture(ctx, f); err != nil {
				errs = append(errs, fmt.Errorf("update address of %s: %w", m.ID, err))
			}
		case s.Suffrage == raft.Nonvoter:
			since, seen := nonvoterSince[id]
			if !seen {
				nonvoterSince[id] = time.Now()
				continue
			}
			if time.Since(since) < n.stabilization() {
				continue
			}
			caught, err := n.caughtUp(ctx, m)
			if err != nil {
				n.log.Debug("nonvoter status", "member", m.ID, "err", err)
				continue
			}
			if !caught {
				continue
			}
			n.log.Info("promoting caught-up nonvoter to voter", "member", m.ID)
			if err := waitFuture(ctx, n.raft.AddVoter(id, addr, 0, 0)); err != nil {
				errs = append(errs, fmt.Errorf("promote %s: %w", m.ID, err))
				continue
			}
			delete(nonvoterSince, id)
		}
	}
	return errors.Join(errs...)
}

// peerLastIndex asks a member for Raft's last index on it (the raft guard's
// check before a snapshot is sent); false when it cannot tell.
func (n *Node) peerLastIndex(id raft.ServerID) (uint64, bool) {
	ctx, cancel := context.WithTimeout(n.ctx, peerStatusTimeout)
	defer cancel()
	var st nodeStatusResponse
	if err := n.callPeer(ctx, string(id), "GET", rpcStatus, nil, &st); err != nil || st.ID != string(id) {
		return 0, false
	}
	return st.LastIndex, true
}

// peerStatusTimeout bounds peerLastIndex.
const peerStatusTimeout = 2 * time.Second

// caughtUp asks a member for its applied index and compares it with the
// leader's commit index taken before the request.
func (n *Node) caughtUp(ctx context.Context, m member) (bool, error) {
	want := n.raft.CommitIndex()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var st nodeStatusResponse
	if err := n.callPeer(ctx, m.ID, "GET", rpcStatus, nil, &st); err != nil {
		return false, err
	}
	if st.ID != m.ID {
		return false, fmt.Errorf("member %s answered as %q", m.ID, st.ID)
	}
	return st.AppliedIndex >= want, nil
}
