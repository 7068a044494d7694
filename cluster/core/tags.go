package core

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Errors callers can tell apart (the admin API maps them to statuses).
var (
	ErrUnknownNode = errors.New("unknown node")
	ErrUnknownTag  = errors.New("unknown tag")
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

// override is an operator's choice of a tag's owner. Newest wins, by
// (Version, Issuer); Node 0 clears it.
type override struct {
	Tag     string
	Node    NodeID
	Version uint64
	Issuer  NodeID
}

func (o override) encode() []byte {
	var w wire.Writer
	w.String(o.Tag)
	w.U32(o.Node)
	w.U64(o.Version)
	w.U32(o.Issuer)
	return w.B
}

func decodeOverride(r *wire.Reader) override {
	return override{Tag: r.String(), Node: r.U32(), Version: r.U64(), Issuer: r.U32()}
}

func (o override) newer(p override) bool {
	if o.Version != p.Version {
		return o.Version > p.Version
	}
	return o.Issuer > p.Issuer
}

type tagState struct {
	spec   TagSpec
	owner  NodeID // as this node sees it; 0 without quorum
	active bool
	quorum bool
	// wantSince is when this node was elected but not yet active: it is
	// waiting for the previous holder's release or fence margin.
	wantSince time.Time
	// overridden is when an operator override for the tag last reached
	// this node (local time).
	overridden time.Time
}

// msgTagClaim carries a node's claim on a tag (active or released). It is
// a system message type appended after wire.MsgDeltaRequest; older nodes
// ignore it.
const msgTagClaim = wire.MsgTagClaim

// claim is what a node last said about holding a tag. Newest wins, by
// (Inc, Seq); a claim from an older incarnation than the node's current
// one is void (that process is gone).
type claim struct {
	Tag    string
	Node   NodeID
	Inc    uint64
	Seq    uint64
	Active bool
}

func (k claim) encode() []byte {
	var w wire.Writer
	w.String(k.Tag)
	w.U32(k.Node)
	w.U64(k.Inc)
	w.U64(k.Seq)
	var a uint8
	if k.Active {
		a = 1
	}
	w.U8(a)
	return w.B
}

func decodeClaim(r *wire.Reader) claim {
	return claim{Tag: r.String(), Node: r.U32(), Inc: r.U64(), Seq: r.U64(), Active: r.U8() == 1}
}

func (k claim) newer(p claim) bool {
	if k.Inc != p.Inc {
		return k.Inc > p.Inc
	}
	return k.Seq > p.Seq
}

// onClaim stores and floods a claim, then re-evaluates the tags: a release
// may be what an incoming owner waits for.
func (c *Core) onClaim(from NodeID, k claim) {
	if k.Node == c.self || k.Node == 0 {
		return
	}
	m := c.claims[k.Tag]
	if m == nil {
		m = map[NodeID]claim{}
		c.claims[k.Tag] = m
	}
	if old, ok := m[k.Node]; ok && !k.newer(old) {
		return
	}
	m[k.Node] = k
	body := k.encode()
	for _, l := range c.sortedLinks() {
		if l != from {
			c.sendTo(l, c.sysFrame(msgTagClaim, 0, body))
		}
	}
	c.recomputeTags()
}

// ownClaim is this node's current claim on t.
func (c *Core) ownClaim(t *tagState) claim {
	return claim{Tag: t.spec.Name, Node: c.self, Inc: c.cfg.Self.Incarnation, Seq: c.claimSeq, Active: t.active}
}

// announceClaim floods this node's own claim on t, with a new sequence.
func (c *Core) announceClaim(t *tagState) {
	c.claimSeq = max(uint64(c.now.UnixNano()), c.claimSeq+1)
	body := c.ownClaim(t).encode()
	for _, l := range c.sortedLinks() {
		c.sendTo(l, c.sysFrame(msgTagClaim, 0, body))
	}
}

// sendClaims gives a new neighbour every claim this node knows, its own
// first. They go before the LSAs, so that the neighbour knows who holds a
// tag before it sees the holder come up.
func (c *Core) sendClaims(peer NodeID) {
	for _, t := range c.tags {
		c.sendTo(peer, c.sysFrame(msgTagClaim, 0, c.ownClaim(t).encode()))
		m := c.claims[t.spec.Name]
		for _, id := range sortedKeys(m) {
			c.sendTo(peer, c.sysFrame(msgTagClaim, 0, m[id].encode()))
		}
	}
}

// refreshTags re-floods this node's claims and the overrides it knows
// every LSARefresh: a flood sent while a link was silently cut is lost if
// the link heals before its heartbeat times out (no new link, no database
// exchange).
func (c *Core) refreshTags() {
	if c.now.Sub(c.lastTagFlood) < c.cfg.LSARefresh {
		return
	}
	c.lastTagFlood = c.now
	for _, l := range c.sortedLinks() {
		for _, t := range c.tags {
			c.sendTo(l, c.sysFrame(msgTagClaim, 0, c.ownClaim(t).encode()))
		}
		for _, name := range c.sortedOverrides() {
			c.sendTo(l, c.sysFrame(wire.MsgTagOverride, 0, c.overrides[name].encode()))
		}
	}
}

// FenceMargin is how long an elected node waits, after losing sight of a
// tag's holder by heartbeat timeout, before it becomes active: one ping
// interval of the slowest profile in use (WAN as soon as another region is
// known, since the holder's quorum may rest on its WAN links), plus one
// LAN ping interval.
//
// Why that is enough: on a live link each end pings every interval and
// answers pings at once, so each hears the other at least once per
// interval. At a cut, both ends' last-heard times lie within one interval
// (plus the RTT) of each other, so the holder's side drops the link at
// most one interval after this side does, and loses its quorum then. The
// LAN interval covers the RTT, the shell's 20 ms tick, the flooding on the
// holder's side and the VIP removal. A holder whose quorum rests on WAN
// links stops counting them after the fence lease, within the same bound.
// Not covered: a holder whose process stalls (GC, SIGSTOP) keeps its
// addresses whatever the margin.
func (c *Core) FenceMargin() time.Duration {
	if c.cfg.FenceMargin > 0 {
		return c.cfg.FenceMargin
	}
	t := c.cfg.LAN
	if c.cfg.WANOnly {
		t = c.cfg.WAN
	}
	for _, a := range c.lsdb {
		if a.Meta.Region != c.cfg.Self.Region {
			t = c.cfg.WAN
			break
		}
	}
	for _, l := range c.links {
		if l.meta.Region != c.cfg.Self.Region {
			t = c.cfg.WAN // its LSA may not have arrived yet
			break
		}
	}
	return t.PingInterval + c.cfg.LAN.PingInterval
}

// mayActivate decides whether this elected node may become active for t
// now: no other live process claims it, or its claim is void. A holder
// that is up must release first (or ReleaseTimeout pass); one lost by
// heartbeat timeout is waited out for the fence margin; one whose
// connection its kernel closed (process gone) is not waited for.
//
// Nor does it become active within one LAN ping interval of a node coming
// up in its view (a heal): both sides' databases are still flooding, and
// a holder on the other side may be about to appear.
func (c *Core) mayActivate(t *tagState) bool {
	if !c.lastCame.IsZero() && c.now.Sub(c.lastCame) < c.cfg.LAN.PingInterval {
		return false
	}
	// Nor within one LAN ping interval of an override reaching it: a node
	// elected by the old rule (a failover at that same instant) may have
	// become active before hearing of the override, and its claim is
	// still on the way.
	if !t.overridden.IsZero() && c.now.Sub(t.overridden) < c.cfg.LAN.PingInterval {
		return false
	}
	// An eligible node lost by heartbeat timeout may have become active
	// just before it was cut off, its claim never reaching this side (a
	// node out of TopologyGrace, say): wait the margin whatever claim is
	// known.
	margin := c.FenceMargin()
	for _, id := range c.eligible(t) {
		if lost, ok := c.lost[id]; ok && !lost.closed && c.now.Sub(lost.at) < margin {
			return false
		}
	}
	m := c.claims[t.spec.Name]
	for _, id := range sortedKeys(m) {
		k := m[id]
		if !k.Active {
			continue
		}
		a := c.lsdb[id]
		if a == nil || a.Meta.Incarnation > k.Inc {
			continue // removed, or restarted since: that process holds nothing
		}
		if c.up[id] {
			if c.now.Sub(t.wantSince) < c.cfg.ReleaseTimeout {
				return false
			}
			continue // the release is lost or the holder disagrees: take over
		}
		lost, ok := c.lost[id]
		if !ok {
			continue // in another part of the network: the quorum rule keeps it apart
		}
		if lost.closed {
			continue // its process is gone
		}
		if c.now.Sub(lost.at) < margin {
			return false
		}
	}
	return true
}

func sortedKeys(m map[NodeID]claim) []NodeID {
	ids := make([]NodeID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// TagInfo is a tag's state as seen locally.
type TagInfo struct {
	Name     string
	Owner    NodeID
	Active   bool
	Quorum   bool
	Eligible []NodeID
	Override NodeID
}

func (c *Core) sortedOverrides() []string {
	names := make([]string, 0, len(c.overrides))
	for n := range c.overrides {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SetTagActive makes node the tag's owner while it is reachable and
// eligible (0 hands the choice back to priorities).
func (c *Core) SetTagActive(now time.Time, tag string, node NodeID) error {
	c.now = now
	t := c.tag(tag)
	if t == nil {
		return fmt.Errorf("%w %q", ErrUnknownTag, tag)
	}
	if node != 0 && !slices.Contains(c.eligible(t), node) {
		return errorf("node %d is not eligible for tag %q", node, tag)
	}
	v := uint64(now.UnixNano())
	if old, ok := c.overrides[tag]; ok && old.Version >= v {
		v = old.Version + 1
	}
	c.onOverride(0, override{Tag: tag, Node: node, Version: v, Issuer: c.self})
	return nil
}

func (c *Core) onOverride(from NodeID, o override) {
	if old, ok := c.overrides[o.Tag]; ok && !o.newer(old) {
		return
	}
	c.overrides[o.Tag] = o
	if t := c.tag(o.Tag); t != nil {
		t.overridden = c.now
	}
	body := o.encode()
	for _, l := range c.sortedLinks() {
		if l != from {
			c.sendTo(l, c.sysFrame(wire.MsgTagOverride, 0, body))
		}
	}
	c.recomputeTags()
}

func (c *Core) tag(name string) *tagState {
	for _, t := range c.tags {
		if t.spec.Name == name {
			return t
		}
	}
	return nil
}

// eligible lists the known nodes (up or down) that may own the tag.
func (c *Core) eligible(t *tagState) []NodeID {
	var out []NodeID
	for _, id := range c.sortedIDs() {
		m := c.lsdb[id].Meta
		if (t.spec.Region != "" && m.Region == t.spec.Region) || slices.Contains(t.spec.Nodes, id) {
			out = append(out, id)
		}
	}
	return out
}

func (c *Core) reachable(id NodeID) bool { return id == c.self || c.up[id] }

// FenceLease is how long a direct link may stay silent and still be
// advertised (and used for reachability, and so for quorum). Others count
// a lost node as fenced FenceMargin after they lost it, which is at least
// a LAN dead time less a ping interval after the cut; by then every link
// on the lost side must have been withdrawn, WAN links included, whose
// dead time (5 s) is far longer. A silent link is only withdrawn, not
// closed: if heard again it comes back without a new connection or sync.
// LAN only, it equals the LAN dead time (no change).
func (c *Core) FenceLease() time.Duration {
	return c.FenceMargin() + c.cfg.LAN.DeadAfter - 2*c.cfg.LAN.PingInterval
}

// pingEvery is l's ping interval: a link whose dead time exceeds the fence
// lease pings four times per lease, so that a live one is never stale.
func pingEvery(l *link, lease time.Duration) time.Duration {
	if l.timers.DeadAfter > lease {
		return min(l.timers.PingInterval, lease/4)
	}
	return l.timers.PingInterval
}

// quorum decides whether this side of a possible partition may own tags.
// Two disjoint sides can never both pass:
//   - a strict majority of the tag's eligible nodes, or
//   - exactly half of them plus a strict majority of all known nodes, or
//   - exactly half of both, and the lowest known node id on this side.
//
// This lets the survivor of an HA pair take over when its partner dies, as
// long as the rest of the cluster backs it.
func (c *Core) quorum(elig []NodeID) bool {
	r := 0
	for _, id := range elig {
		if c.reachable(id) {
			r++
		}
	}
	if 2*r > len(elig) {
		return true
	}
	if 2*r < len(elig) || r == 0 {
		return false
	}
	all := c.sortedIDs()
	ra := 0
	for _, id := range all {
		if c.reachable(id) {
			ra++
		}
	}
	if 2*ra != len(all) {
		return 2*ra > len(all)
	}
	return c.reachable(all[0])
}

func (c *Core) priority(t *tagState, id NodeID) int32 {
	if p, ok := t.spec.Priorities[id]; ok {
		return p
	}
	return c.lsdb[id].Meta.Priority
}

// recomputeTags re-elects every tag's owner from the local view: the
// operator's override if that node is a candidate, else the highest
// priority, lowest id among reachable, eligible, undrained nodes.
func (c *Core) recomputeTags() {
	// A starting node claims nothing for TopologyGrace: nodes starting
	// together see each other's databases piecemeal, and two partial views
	// could elect two owners. Then only a node whose view came from a
	// neighbour's database, a seed (forming a new cluster) or a node that
	// remembers its peers may trust its view.
	settled := c.now.Sub(c.start) >= c.cfg.TopologyGrace && (c.hadLink || c.cfg.Self.Seed || len(c.cfg.Known) > 0)
	for _, t := range c.tags {
		elig := c.eligible(t)
		q := settled && c.quorum(elig)
		var owner NodeID
		if q {
			var cands []NodeID
			for _, id := range elig {
				if c.reachable(id) && !c.lsdb[id].Meta.Drained {
					cands = append(cands, id)
				}
			}
			if o, ok := c.overrides[t.spec.Name]; ok && o.Node != 0 && slices.Contains(cands, o.Node) {
				owner = o.Node
			} else {
				for _, id := range cands {
					if owner == 0 || c.priority(t, id) > c.priority(t, owner) {
						owner = id
					}
				}
			}
		}
		elected := owner == c.self && owner != 0
		switch {
		case !elected || t.active:
			t.wantSince = time.Time{}
		case t.wantSince.IsZero():
			t.wantSince = c.now
		}
		// Releasing is immediate; becoming active waits for the previous
		// holder (see mayActivate).
		active := elected && (t.active || c.mayActivate(t))
		t.quorum = q
		if owner != t.owner || active != t.active {
			changed := active != t.active
			t.owner, t.active = owner, active
			if changed {
				c.announceClaim(t)
			}
			c.event(Event{Kind: EventTagOwner, Tag: t.spec.Name, Owner: owner, Active: active})
		}
	}
}

// Tags returns every tag's state, in config order.
func (c *Core) Tags() []TagInfo {
	out := make([]TagInfo, 0, len(c.tags))
	for _, t := range c.tags {
		ti := TagInfo{Name: t.spec.Name, Owner: t.owner, Active: t.active, Quorum: t.quorum, Eligible: c.eligible(t)}
		if o, ok := c.overrides[t.spec.Name]; ok {
			ti.Override = o.Node
		}
		out = append(out, ti)
	}
	return out
}

// Eligible reports whether node id may own tag (for capability filters).
func (c *Core) Eligible(tag string, id NodeID) bool {
	t := c.tag(tag)
	return t != nil && slices.Contains(c.eligible(t), id)
}
