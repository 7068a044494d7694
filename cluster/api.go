package cluster

import (
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/core"
)

func (n *Node) nodeViews() []NodeView {
	self := n.cfg.NodeID
	var out []NodeView
	for _, a := range n.core.Database() {
		m := a.Meta
		v := NodeView{
			ID: m.ID, Region: m.Region, ClusterAddr: m.ClusterAddr, SIPAddr: m.SIPAddr,
			Priority: int(m.Priority), Seed: m.Seed, Drained: m.Drained, Draining: m.Draining, Incarnation: m.Incarnation,
			Synced: slices.Clone(m.Synced), State: "down",
		}
		switch {
		case m.ID == self:
			v.State = "self"
		case n.core.IsUp(m.ID):
			v.State = "up"
			v.NextHop, _ = n.core.NextHop(m.ID)
			v.Hops = len(n.core.Path(m.ID))
			v.Direct = n.core.Linked(m.ID)
			v.RTT = n.core.RTT(m.ID)
		}
		out = append(out, v)
	}
	return out
}

// Nodes lists every known node with its state as seen from here.
func (n *Node) Nodes() []NodeView {
	var out []NodeView
	_ = n.call(func() { out = n.nodeViews() })
	return out
}

// Topology returns nodes, links and routes.
func (n *Node) Topology() TopologyView {
	v := TopologyView{Self: n.cfg.NodeID}
	_ = n.call(func() {
		v.Nodes = n.nodeViews()
		db := n.core.Database()
		adv := map[[2]uint32]time.Duration{}
		for _, a := range db {
			for _, l := range a.Links {
				adv[[2]uint32{a.Origin, l.Peer}] = l.RTT
			}
		}
		for _, a := range db {
			for _, l := range a.Links {
				rev, back := adv[[2]uint32{l.Peer, a.Origin}]
				if back && l.Peer < a.Origin {
					continue // listed once, from the lower id
				}
				lv := LinkView{A: a.Origin, B: l.Peer, State: "half", RTT: l.RTT}
				if back {
					lv.State = "up"
					lv.RTT = max(l.RTT, rev)
				}
				v.Links = append(v.Links, lv)
			}
		}
		for _, id := range n.core.UpNodes() {
			hop, _ := n.core.NextHop(id)
			v.Routes = append(v.Routes, RouteView{Dst: id, NextHop: hop, Path: n.core.Path(id)})
		}
	})
	return v
}

// Caps lists capabilities and their sync state.
func (n *Node) Caps() []CapView {
	var out []CapView
	_ = n.call(func() {
		for _, c := range n.core.Caps() {
			out = append(out, CapView{Name: c.Name, State: c.State.String(), Donor: c.Donor, Records: c.Records, Attempts: c.Attempts})
		}
	})
	return out
}

// Tags lists sharing tags and their owners.
func (n *Node) Tags() []TagView {
	var out []TagView
	_ = n.call(func() {
		for _, t := range n.core.Tags() {
			out = append(out, tagView(t))
		}
	})
	return out
}

func tagView(t core.TagInfo) TagView {
	return TagView{Name: t.Name, Owner: t.Owner, Active: t.Active, Eligible: t.Eligible, Override: t.Override, Quorum: t.Quorum}
}

// RemoveNode forgets a down node cluster-wide.
func (n *Node) RemoveNode(id uint32) error {
	var err error
	if cerr := n.call(func() { err = n.core.RemoveNode(time.Now(), id); n.flush() }); cerr != nil {
		return cerr
	}
	return err
}

// SetTagActive makes node the tag's active owner (0 clears the choice).
func (n *Node) SetTagActive(tag string, node uint32) error {
	var err error
	if cerr := n.call(func() { err = n.core.SetTagActive(time.Now(), tag, node); n.flush() }); cerr != nil {
		return cerr
	}
	return err
}
