package core

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Adj is one direct link as advertised by its origin.
type Adj struct {
	Peer NodeID
	RTT  time.Duration
}

// LSA is a link-state advertisement: a node's metadata and direct links.
// A higher Seq replaces a lower one. Seq starts from the wall clock, so a
// restarted node outranks its previous life without remembering anything.
type LSA struct {
	Origin NodeID
	Seq    uint64
	Meta   NodeMeta
	Links  []Adj // sorted by Peer
}

func (a *LSA) encode() []byte {
	var w wire.Writer
	w.U32(a.Origin)
	w.U64(a.Seq)
	a.Meta.encode(&w)
	w.U32(uint32(len(a.Links)))
	for _, l := range a.Links {
		w.U32(l.Peer)
		w.U32(uint32(min(l.RTT.Microseconds(), 1<<32-1)))
	}
	return w.B
}

func decodeLSA(r *wire.Reader) *LSA {
	a := &LSA{Origin: r.U32(), Seq: r.U64()}
	a.Meta = decodeMeta(r)
	n := r.Count(8)
	for i := 0; i < n && r.Err == nil; i++ {
		a.Links = append(a.Links, Adj{Peer: r.U32(), RTT: time.Duration(r.U32()) * time.Microsecond})
	}
	if (a.Origin == 0 || a.Meta.ID != a.Origin) && r.Err == nil {
		r.Err = wire.ErrShort
	}
	return a
}

func (a *LSA) hasLink(peer NodeID) bool {
	_, ok := slices.BinarySearchFunc(a.Links, peer, func(x Adj, p NodeID) int { return int(int64(x.Peer) - int64(p)) })
	return ok
}

// originate builds and floods the node's own LSA.
func (c *Core) originate() {
	c.dirtyLSA = false
	c.lastFlood = c.now
	seq := uint64(c.now.UnixNano())
	if seq <= c.seq {
		seq = c.seq + 1
	}
	c.seq = seq
	meta := c.cfg.Self
	meta.Synced = c.syncedCaps()
	a := &LSA{Origin: c.self, Seq: seq, Meta: meta}
	for _, id := range c.sortedLinks() {
		if l := c.links[id]; !l.stale {
			a.Links = append(a.Links, Adj{Peer: id, RTT: l.rtt})
		}
	}
	c.lsdb[c.self] = a
	c.flood(a, 0)
	c.recompute()
}

func (c *Core) flood(a *LSA, except NodeID) {
	body := a.encode()
	for _, id := range c.sortedLinks() {
		if id != except {
			c.sendTo(id, c.sysFrame(wire.MsgLSA, 0, body))
		}
	}
}

// sendDatabase gives a new neighbour everything it needs to know.
func (c *Core) sendDatabase(peer NodeID) {
	c.sendClaims(peer)
	for _, id := range c.sortedIDs() {
		c.sendTo(peer, c.sysFrame(wire.MsgLSA, 0, c.lsdb[id].encode()))
	}
	for id, inc := range c.tomb {
		c.sendTo(peer, c.removeFrame(id, inc))
	}
	for _, name := range c.sortedOverrides() {
		c.sendTo(peer, c.sysFrame(wire.MsgTagOverride, 0, c.overrides[name].encode()))
	}
}

func (c *Core) sortedIDs() []NodeID {
	ids := make([]NodeID, 0, len(c.lsdb))
	for id := range c.lsdb {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (c *Core) onLSA(from NodeID, a *LSA) {
	if a.Origin == c.self {
		// Our own LSA from a previous life: jump past it and re-advertise.
		if a.Seq >= c.seq {
			c.seq = a.Seq
			c.dirtyLSA = true
		}
		return
	}
	if inc, ok := c.tomb[a.Origin]; ok {
		if a.Meta.Incarnation <= inc {
			return
		}
		delete(c.tomb, a.Origin) // restarted after removal: welcome back
	}
	old, had := c.lsdb[a.Origin]
	if had && old.Seq >= a.Seq {
		return
	}
	// Trust the view only once a neighbour's database arrives (with the
	// claims it sends first), not on the bare link: a node that knows only
	// itself would elect itself.
	c.hadLink = true
	c.lsdb[a.Origin] = a
	if had {
		c.probeLostNeighbours(old, a)
	}
	// A peer that just became synced for a capability we hold: compare
	// notes at once rather than on the next anti-entropy round.
	if c.up[a.Origin] {
		for _, name := range c.capNames {
			if a.Meta.syncedFor(name) && (!had || !old.Meta.syncedFor(name)) && c.aeReady(name, a.Origin) {
				c.sendDigest(name, a.Origin)
			}
		}
	}
	c.flood(a, from)
	c.recompute()
}

// probeLostNeighbours probes this node's own links to every peer that a's
// origin no longer lists: if the origin lost it by heartbeat, the peer may
// be frozen, and this node's link to it (a WAN link, say) would otherwise
// keep it reachable for a whole WAN dead time.
func (c *Core) probeLostNeighbours(old, a *LSA) {
	for _, adj := range old.Links {
		if _, still := slices.BinarySearchFunc(a.Links, adj.Peer, func(x Adj, p NodeID) int { return cmp.Compare(x.Peer, p) }); still {
			continue
		}
		if l, ok := c.links[adj.Peer]; ok {
			c.probe(l)
		}
	}
}

func (c *Core) removeFrame(id NodeID, inc uint64) *wire.Frame {
	var w wire.Writer
	w.U32(id)
	w.U64(inc)
	return c.sysFrame(wire.MsgRemoveNode, 0, w.B)
}

// RemoveNode forgets a node cluster-wide. Only a node that is down can be
// removed: a live one would come straight back.
func (c *Core) RemoveNode(now time.Time, id NodeID) error {
	c.now = now
	a, ok := c.lsdb[id]
	switch {
	case id == c.self:
		return errorf("node %d is this node", id)
	case !ok:
		return fmt.Errorf("%w %d", ErrUnknownNode, id)
	case c.up[id]:
		return errorf("node %d is up: stop it first", id)
	}
	c.onRemove(0, id, a.Meta.Incarnation)
	return nil
}

func (c *Core) onRemove(from NodeID, id NodeID, inc uint64) {
	if id == c.self {
		return
	}
	if old, ok := c.tomb[id]; ok && old >= inc {
		return
	}
	if a, ok := c.lsdb[id]; ok && a.Meta.Incarnation > inc {
		return // a newer life of that node already joined
	}
	c.tomb[id] = inc
	delete(c.lsdb, id)
	delete(c.everUp, id)
	for _, l := range c.sortedLinks() {
		if l != from {
			c.sendTo(l, c.removeFrame(id, inc))
		}
	}
	c.recompute()
}

// recompute derives routes and reachability from the database, and emits
// node up/down events, then re-evaluates sync and tags.
func (c *Core) recompute() {
	routes := map[NodeID]NodeID{}
	paths := map[NodeID][]NodeID{}
	seen := map[NodeID]bool{c.self: true}
	// BFS over two-way links; neighbours in id order give a deterministic
	// tie-break between equal-length paths (lowest ids first).
	queue := []NodeID{c.self}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		a := c.lsdb[cur]
		if a == nil {
			continue
		}
		for _, adj := range a.Links {
			n := adj.Peer
			if seen[n] {
				continue
			}
			if cur == c.self {
				if l, ok := c.links[n]; !ok || l.stale {
					continue
				}
			}
			b := c.lsdb[n]
			if b == nil || !b.hasLink(cur) {
				continue // one-way: not a usable link yet
			}
			seen[n] = true
			if cur == c.self {
				routes[n] = n
				paths[n] = []NodeID{n}
			} else {
				routes[n] = routes[cur]
				paths[n] = append(slices.Clip(paths[cur]), n)
			}
			queue = append(queue, n)
		}
	}
	c.routes, c.paths = routes, paths
	up := map[NodeID]bool{}
	for id := range routes {
		up[id] = true
	}
	// Switch to the new view first: heal and down handling below ask
	// whether peers are up.
	old := c.up
	c.up = up
	var came, went []NodeID
	for id := range up {
		if !old[id] {
			came = append(came, id)
		}
	}
	for id := range old {
		if !up[id] {
			went = append(went, id)
		}
	}
	slices.Sort(came)
	slices.Sort(went)
	for _, id := range came {
		c.lastCame = c.now
		delete(c.lost, id)
		delete(c.closedAt, id)
		if c.everUp[id] {
			c.scheduleHeal(id)
		}
		c.everUp[id] = true
		c.event(Event{Kind: EventNodeUp, Node: id})
	}
	for _, id := range went {
		// A close counts as death only if the node disappears right after
		// it (its other neighbours see the same close); otherwise it was
		// that side's own heartbeat timeout and it may be alive.
		at, ok := c.closedAt[id]
		c.lost[id] = loss{at: c.now, closed: ok && c.now.Sub(at) <= c.cfg.LAN.DeadAfter}
		delete(c.closedAt, id)
		c.event(Event{Kind: EventNodeDown, Node: id})
		c.peerGone(id)
	}
	c.recomputeTags()
}

// UpNodes lists reachable nodes (self excluded), sorted.
func (c *Core) UpNodes() []NodeID {
	ids := make([]NodeID, 0, len(c.up))
	for id := range c.up {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// IsUp reports whether id is reachable by any path.
func (c *Core) IsUp(id NodeID) bool { return c.up[id] }

// Meta returns a known node's metadata.
func (c *Core) Meta(id NodeID) (NodeMeta, bool) {
	a, ok := c.lsdb[id]
	if !ok {
		return NodeMeta{}, false
	}
	return a.Meta, true
}

// NextHop is the neighbour that leads to dst.
func (c *Core) NextHop(dst NodeID) (NodeID, bool) { h, ok := c.routes[dst]; return h, ok }

// Path is the route to dst, from the first hop to dst.
func (c *Core) Path(dst NodeID) []NodeID { return slices.Clone(c.paths[dst]) }

// RTT is the direct link's RTT estimate (0 without a direct link).
func (c *Core) RTT(peer NodeID) time.Duration {
	if l, ok := c.links[peer]; ok {
		return l.rtt
	}
	return 0
}

// Database returns a copy of every known LSA, sorted by origin.
func (c *Core) Database() []LSA {
	out := make([]LSA, 0, len(c.lsdb))
	for _, id := range c.sortedIDs() {
		a := *c.lsdb[id]
		a.Links = slices.Clone(a.Links)
		out = append(out, a)
	}
	return out
}

// WantLinks lists the known nodes this node has no direct link to: the
// shell dials them, which makes the mesh as full as the network allows.
func (c *Core) WantLinks() []NodeMeta {
	var out []NodeMeta
	for _, id := range c.sortedIDs() {
		if id == c.self {
			continue
		}
		if _, ok := c.links[id]; !ok {
			out = append(out, c.lsdb[id].Meta)
		}
	}
	return out
}
