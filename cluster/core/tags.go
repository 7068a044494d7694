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
	// Until a link brings the topology in, only a seed (forming a new
	// cluster) or a node that remembers its peers may trust its view.
	settled := c.hadLink || ((c.cfg.Self.Seed || len(c.cfg.Known) > 0) && c.now.Sub(c.start) >= c.cfg.TopologyGrace)
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
		active := owner == c.self && owner != 0
		t.quorum = q
		if owner != t.owner || active != t.active {
			t.owner, t.active = owner, active
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
