package core

import (
	"fmt"
	"math/rand"
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// link is a live direct link to a neighbour.
type link struct {
	peer      NodeID
	meta      NodeMeta // from the handshake
	timers    Timers
	lastHeard time.Time
	lastPing  time.Time
	rtt       time.Duration // EWMA; 0 until the first pong
	// probeAt is when a probe ping went out (zero: none pending); the link
	// is dead if nothing is heard from the peer by probeBy.
	probeAt time.Time
	probeBy time.Time
	// stale: silent for longer than the fence lease; withdrawn from this
	// node's LSA until heard again.
	stale bool
}

// Stats are counters the shell exports as metrics.
type Stats struct {
	Forwarded    uint64 // frames relayed for other nodes
	NoRoute      uint64 // frames dropped: no route to the destination
	TTLExpired   uint64
	BadMessages  uint64 // system or routed frames whose body did not decode
	LinksDead    uint64 // links declared dead by the heartbeat or a probe
	Probes       uint64 // links probed because a neighbour's link died
	ProbesFailed uint64 // of those, links declared dead by the probe
	// AntiEntropyTruncated counts anti-entropy rounds cut at
	// AntiEntropyBytes (another round follows).
	AntiEntropyTruncated uint64
	// AntiEntropyUnconfirmed counts buckets that differed in a comparison
	// and were not sent, pending a second look (replication in flight).
	AntiEntropyUnconfirmed uint64
}

// Core is one node's cluster state machine. It is not safe for concurrent
// use: the shell owns it from one goroutine.
type Core struct {
	cfg  Config
	self NodeID
	rnd  *rand.Rand

	start     time.Time
	now       time.Time
	seq       uint64 // own LSA sequence
	lastFlood time.Time
	dirtyLSA  bool

	// chunkRecs is onChunk's record list, reused: Apply keeps none.
	chunkRecs [][]byte

	links   map[NodeID]*link
	lsdb    map[NodeID]*LSA
	tomb    map[NodeID]uint64 // removed node -> highest removed incarnation
	routes  map[NodeID]NodeID // destination -> next hop
	paths   map[NodeID][]NodeID
	up      map[NodeID]bool // reachable, self excluded
	everUp  map[NodeID]bool
	hadLink bool // an LSA from another node arrived: the view is not just self

	tags         []*tagState
	overrides    map[string]override
	claims       map[string]map[NodeID]claim // tag -> node -> its latest claim
	claimSeq     uint64
	lastTagFlood time.Time
	lastCame     time.Time            // a node last came up in this node's view
	closedAt     map[NodeID]time.Time // when the peer's kernel closed our link
	lost         map[NodeID]loss      // nodes that went down, and how

	caps     map[string]*capState
	capNames []string
	streams  map[uint64]*outStream // donor side, by request id
	reqSeq   uint64
	lastAE   time.Time
	aeAgain  map[NodeID]*aeRest   // what truncated rounds left, by peer
	aeSusp   map[aeKey]*aeSuspect // buckets seen differing once, not yet sent
	aeCheck  map[aeKey]time.Time  // when to send our digest again, to confirm

	out   Ready
	stats Stats
}

// New builds a core. now is the process start time.
func New(cfg Config, now time.Time) *Core {
	cfg.fill()
	c := &Core{
		cfg:       cfg,
		self:      cfg.Self.ID,
		rnd:       rand.New(rand.NewSource(cfg.Seed)),
		start:     now,
		now:       now,
		links:     map[NodeID]*link{},
		lsdb:      map[NodeID]*LSA{},
		tomb:      map[NodeID]uint64{},
		routes:    map[NodeID]NodeID{},
		paths:     map[NodeID][]NodeID{},
		up:        map[NodeID]bool{},
		everUp:    map[NodeID]bool{},
		overrides: map[string]override{},
		claims:    map[string]map[NodeID]claim{},
		closedAt:  map[NodeID]time.Time{},
		lost:      map[NodeID]loss{},
		caps:      map[string]*capState{},
		streams:   map[uint64]*outStream{},
		lastAE:    now,
		aeAgain:   map[NodeID]*aeRest{},
		aeSusp:    map[aeKey]*aeSuspect{},
		aeCheck:   map[aeKey]time.Time{},
	}
	c.cfg.Self.Synced = nil
	for _, t := range cfg.Tags {
		c.tags = append(c.tags, &tagState{spec: t})
	}
	for _, m := range cfg.Known {
		if m.ID != 0 && m.ID != c.self {
			m.Synced = nil
			c.lsdb[m.ID] = &LSA{Origin: m.ID, Meta: m}
		}
	}
	c.originate()
	return c
}

// Self is the node's own metadata as currently advertised.
func (c *Core) Self() NodeMeta { return c.lsdb[c.self].Meta }

// Stats returns the counters.
func (c *Core) Stats() Stats { return c.stats }

// Ready drains the output accumulated so far.
func (c *Core) Ready() Ready {
	if c.dirtyLSA {
		c.originate()
	}
	r := c.out
	c.out = Ready{}
	return r
}

func (c *Core) event(e Event) { c.out.Events = append(c.out.Events, e) }

// sendTo queues a frame for a direct neighbour.
func (c *Core) sendTo(peer NodeID, f *wire.Frame) {
	c.out.Sends = append(c.out.Sends, Send{To: peer, Frame: f})
}

// route queues a frame for any node, through the next hop.
func (c *Core) route(f *wire.Frame) bool {
	hop, ok := c.routes[f.Dst]
	if !ok {
		c.stats.NoRoute++
		return false
	}
	c.sendTo(hop, f)
	return true
}

func (c *Core) sysFrame(typ wire.MsgType, dst NodeID, body []byte) *wire.Frame {
	return &wire.Frame{Version: wire.Version, Type: typ, Src: c.self, Dst: dst, TTL: wire.DefaultTTL, Cap: wire.SystemCap, Body: body}
}

// SetDraining advertises that a drain was requested (see NodeMeta).
func (c *Core) SetDraining(now time.Time, draining bool) {
	c.now = now
	if c.cfg.Self.Draining != draining {
		c.cfg.Self.Draining = draining
		c.dirtyLSA = true
		c.originate()
	}
}

// SetDrained changes the drained flag advertised to the cluster. A drained
// node is not eligible for sharing tags.
func (c *Core) SetDrained(now time.Time, drained bool) {
	c.now = now
	if c.cfg.Self.Drained != drained {
		c.cfg.Self.Drained = drained
		c.dirtyLSA = true
		c.recompute()
	}
}

// Admit decides whether a peer that proved the cluster key may link up.
func (c *Core) Admit(peer NodeMeta) error {
	switch {
	case peer.ID == 0:
		return fmt.Errorf("node id 0 is not valid")
	case peer.ID == c.self:
		return fmt.Errorf("duplicate node id %d: it is this node's id (%s)", peer.ID, c.cfg.Self.ClusterAddr)
	}
	if inc, ok := c.tomb[peer.ID]; ok && peer.Incarnation <= inc {
		return fmt.Errorf("node %d was removed from the cluster; restart it to rejoin", peer.ID)
	}
	if l, ok := c.links[peer.ID]; ok && l.meta.Incarnation != peer.Incarnation {
		return fmt.Errorf("duplicate node id %d: already linked to it at %s", peer.ID, l.meta.ClusterAddr)
	}
	if a, ok := c.lsdb[peer.ID]; ok && c.up[peer.ID] && a.Meta.Incarnation != peer.Incarnation {
		return fmt.Errorf("duplicate node id %d: already up at %s", peer.ID, a.Meta.ClusterAddr)
	}
	return nil
}

// LinkUp registers a direct link that passed the handshake and Admit.
func (c *Core) LinkUp(now time.Time, peer NodeMeta) {
	c.now = now
	if peer.ID == c.self || peer.ID == 0 {
		return
	}
	t := c.cfg.LAN
	if c.cfg.WANOnly || peer.Region != c.cfg.Self.Region {
		t = c.cfg.WAN
	}
	c.links[peer.ID] = &link{peer: peer.ID, meta: peer, timers: t, lastHeard: now}
	// A fresh neighbour gets the whole database: this is how a node that
	// knows one seed learns the cluster.
	c.sendDatabase(peer.ID)
	c.ping(c.links[peer.ID])
	c.dirtyLSA = true
	c.originate()
}

// loss is how a node went down in this node's view.
type loss struct {
	at time.Time
	// closed: our link to it was closed by its side (EOF/RST) just
	// before, so its process is gone and holds no tag.
	closed bool
}

// LinkDown removes a direct link that the peer's side closed (EOF or
// RST): its process exited or was killed, and the kernel closed its TCP.
// Tags it held move without a fence margin.
func (c *Core) LinkDown(now time.Time, peer NodeID) {
	if _, ok := c.links[peer]; ok {
		c.closedAt[peer] = now
	}
	c.LinkFailed(now, peer)
}

// LinkFailed removes a direct link lost without proof that the peer is
// gone (a socket error other than EOF/RST): tags it held move only after
// the fence margin, as after a heartbeat timeout.
func (c *Core) LinkFailed(now time.Time, peer NodeID) {
	c.now = now
	if _, ok := c.links[peer]; !ok {
		return
	}
	delete(c.links, peer)
	c.dirtyLSA = true
	c.originate()
}

// Linked reports whether a direct link to peer is up.
func (c *Core) Linked(peer NodeID) bool { _, ok := c.links[peer]; return ok }

// Heard records that a frame from neighbour arrived at t. The shell stamps
// arrivals on its reader goroutines, so liveness does not wait for the
// core to work through a backlog of data.
func (c *Core) Heard(neighbour NodeID, t time.Time) {
	if l, ok := c.links[neighbour]; ok && t.After(l.lastHeard) {
		l.lastHeard = t
		c.heard(l)
	}
}

// Tick advances time: heartbeats, dead links, LSA refresh, sync timers,
// anti-entropy.
func (c *Core) Tick(now time.Time) {
	c.now = now
	died := false
	lease := c.FenceLease()
	for _, id := range c.sortedLinks() {
		l := c.links[id]
		if !l.probeAt.IsZero() && !l.lastHeard.Before(l.probeAt) {
			l.probeAt = time.Time{}
		}
		probeFailed := !l.probeAt.IsZero() && now.After(l.probeBy)
		if probeFailed || now.Sub(l.lastHeard) > l.timers.DeadAfter {
			c.stats.LinksDead++
			if probeFailed {
				c.stats.ProbesFailed++
			}
			delete(c.links, id)
			c.out.Close = append(c.out.Close, id)
			c.dirtyLSA = true
			died = true
			continue
		}
		if !l.stale && now.Sub(l.lastHeard) > lease {
			l.stale = true
			c.dirtyLSA = true
			died = true
		}
		if now.Sub(l.lastPing) >= pingEvery(l, lease) {
			c.ping(l)
		}
	}
	if died {
		// A link that timed out (or went stale) may mean this node is the
		// one cut off: check the others now rather than after their (WAN)
		// dead times, so that a holder cut off fences itself promptly.
		for _, id := range c.sortedLinks() {
			c.probe(c.links[id])
		}
	}
	if c.dirtyLSA || now.Sub(c.lastFlood) >= c.cfg.LSARefresh {
		c.originate()
	}
	c.tickSync()
	c.tickAntiEntropy()
	c.recomputeTags()
	c.refreshTags()
}

func (c *Core) sortedLinks() []NodeID {
	ids := make([]NodeID, 0, len(c.links))
	for id := range c.links {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// heard brings a stale link back into the LSA.
func (c *Core) heard(l *link) {
	if l.stale {
		l.stale = false
		c.dirtyLSA = true
	}
}

// probe pings l at once and declares it dead unless the peer is heard
// within ProbeTimeout plus twice the link's RTT (capped at its dead time).
// Probes run when another link died or another node lost its link to
// this peer: a frozen node is then dropped by every neighbour within a
// LAN dead time plus the probe, not each neighbour's own (WAN) dead time.
func (c *Core) probe(l *link) {
	if !l.probeAt.IsZero() || l.stale {
		return // a stale link is already withdrawn; it closes at DeadAfter
	}
	l.probeAt = c.now
	l.probeBy = c.now.Add(min(c.cfg.ProbeTimeout+2*l.rtt, l.timers.DeadAfter))
	c.stats.Probes++
	c.ping(l)
}

func (c *Core) ping(l *link) {
	l.lastPing = c.now
	var w wire.Writer
	w.I64(c.now.UnixNano())
	f := c.sysFrame(wire.MsgPing, 0, w.B)
	f.Flags |= wire.FlagPriority
	c.sendTo(l.peer, f)
}

// Recv takes a frame that arrived on the direct link from neighbour.
func (c *Core) Recv(now time.Time, neighbour NodeID, f *wire.Frame) {
	c.now = now
	l, ok := c.links[neighbour]
	if !ok {
		return // link already declared dead; the shell is closing it
	}
	// Any data counts as liveness, so a busy link never looks dead.
	l.lastHeard = now
	c.heard(l)
	if f.Dst != 0 && f.Dst != c.self {
		c.forward(f)
		return
	}
	if f.Cap != wire.SystemCap {
		c.deliver(f)
		return
	}
	r := wire.Reader{B: f.Body}
	switch f.Type {
	case wire.MsgPing:
		f2 := c.sysFrame(wire.MsgPong, 0, f.Body)
		f2.Flags |= wire.FlagPriority
		c.sendTo(neighbour, f2)
		return
	case wire.MsgPong:
		sent := r.I64()
		if r.Err == nil {
			if rtt := now.Sub(time.Unix(0, sent)); rtt >= 0 {
				if l.rtt == 0 {
					l.rtt = rtt
				} else {
					l.rtt = (7*l.rtt + rtt) / 8
				}
			}
		}
	case wire.MsgLSA:
		a := decodeLSA(&r)
		if r.Err == nil {
			c.onLSA(neighbour, a)
		}
	case wire.MsgRemoveNode:
		id, inc := r.U32(), r.U64()
		if r.Err == nil {
			c.onRemove(neighbour, id, inc)
		}
	case wire.MsgTagOverride:
		o := decodeOverride(&r)
		if r.Err == nil {
			c.onOverride(neighbour, o)
		}
	case msgTagClaim:
		k := decodeClaim(&r)
		if r.Err == nil {
			c.onClaim(neighbour, k)
		}
	case wire.MsgSyncRequest, wire.MsgSyncChunk, wire.MsgSyncAck, wire.MsgSyncAbort:
		c.onSync(f, &r)
	case wire.MsgDigest, wire.MsgDelta, wire.MsgDeltaRequest:
		c.onAntiEntropy(f, &r)
	default:
		// Unknown system types come from newer peers: ignore them.
		return
	}
	if r.Err != nil {
		c.stats.BadMessages++
	}
}

func (c *Core) forward(f *wire.Frame) {
	if f.TTL <= 1 {
		c.stats.TTLExpired++
		return
	}
	g := *f
	g.TTL--
	if c.route(&g) {
		c.stats.Forwarded++
	}
}

// deliver hands a capability frame to its module, or holds it while the
// capability syncs.
func (c *Core) deliver(f *wire.Frame) {
	cs, ok := c.caps[f.Cap]
	if !ok {
		return
	}
	if cs.state != Synced {
		cs.buffer(c, f)
		return
	}
	if cs.spec.Handle != nil {
		cs.spec.Handle(f.Src, f.Type, f.Body)
	}
}

// Send queues a capability message for node dst (routed if not direct).
// It reports false when dst is unreachable.
func (c *Core) Send(now time.Time, capName string, typ wire.MsgType, dst NodeID, body []byte) bool {
	c.now = now
	if dst == c.self {
		return false
	}
	return c.route(&wire.Frame{Version: wire.Version, Type: typ, Src: c.self, Dst: dst, TTL: wire.DefaultTTL, Cap: capName, Body: body})
}

// SendMatching sends to every reachable node whose metadata matches (all
// of them when match is nil) and returns how many were sent.
func (c *Core) SendMatching(now time.Time, capName string, typ wire.MsgType, match func(NodeMeta) bool, body []byte) int {
	n := 0
	for _, id := range c.UpNodes() {
		a := c.lsdb[id]
		if a == nil || (match != nil && !match(a.Meta)) {
			continue
		}
		if c.Send(now, capName, typ, id, body) {
			n++
		}
	}
	return n
}
