package cluster

import (
	"net/netip"
	"sync/atomic"
)

// viewSnap is a read-only copy of what hot paths ask about (SIP lookups,
// relays): who is up, their metadata, who owns each tag. The loop refreshes
// it after events and once a second, so readers never wait for the loop.
type viewSnap struct {
	metas  map[uint32]NodeMeta
	up     map[uint32]bool
	owners map[string]uint32
	// sipHosts maps each node's SIP host address to its id.
	sipHosts map[netip.Addr]uint32
}

type viewHolder struct{ p atomic.Pointer[viewSnap] }

func (n *Node) refreshView() {
	v := &viewSnap{metas: map[uint32]NodeMeta{}, up: map[uint32]bool{}, owners: map[string]uint32{},
		sipHosts: map[netip.Addr]uint32{}}
	for _, a := range n.core.Database() {
		v.metas[a.Origin] = a.Meta
		if ap, err := netip.ParseAddrPort(a.Meta.SIPAddr); err == nil {
			v.sipHosts[ap.Addr().Unmap()] = a.Origin
		}
	}
	for _, id := range n.core.UpNodes() {
		v.up[id] = true
	}
	for _, t := range n.core.Tags() {
		v.owners[t.Name] = t.Owner
	}
	n.view.p.Store(v)
}

func (n *Node) snap() *viewSnap {
	if v := n.view.p.Load(); v != nil {
		return v
	}
	return &viewSnap{}
}

// Meta returns a known node's metadata.
func (n *Node) Meta(id uint32) (NodeMeta, bool) {
	m, ok := n.snap().metas[id]
	return m, ok
}

// IsUp reports whether a node is reachable by any path.
func (n *Node) IsUp(id uint32) bool { return n.snap().up[id] }

// TagOwner is the tag's owner as seen here (0: none).
func (n *Node) TagOwner(tag string) uint32 { return n.snap().owners[tag] }

// NodeBySIPHost is the known node (self included) whose SIP address has
// host a, without waiting for the loop: SIP asks it per relayed request.
func (n *Node) NodeBySIPHost(a netip.Addr) (uint32, bool) {
	id, ok := n.snap().sipHosts[a.Unmap()]
	return id, ok
}
