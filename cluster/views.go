package cluster

import "time"

// The views below are what the admin API and edgectl show. They are plain
// copies, safe to marshal and keep.

// NodeView is one known node as seen from the local node.
type NodeView struct {
	ID          uint32        `json:"id"`
	Region      string        `json:"region"`
	ClusterAddr string        `json:"cluster_addr"`
	SIPAddr     string        `json:"sip_addr"`
	Priority    int           `json:"priority"`
	Seed        bool          `json:"seed"`
	Drained     bool          `json:"drained"`
	Draining    bool          `json:"draining,omitempty"`
	State       string        `json:"state"`    // "self", "up" or "down"
	Direct      bool          `json:"direct"`   // a live direct link exists
	NextHop     uint32        `json:"next_hop"` // 0 when unreachable or self
	Hops        int           `json:"hops"`     // path length; 0 for self
	RTT         time.Duration `json:"rtt_ns"`   // direct link RTT estimate, 0 if none
	Incarnation uint64        `json:"incarnation"`
	Synced      []string      `json:"synced_caps"`
}

// LinkView is one link of the link-state database. A link is "up" when both
// ends advertise it.
type LinkView struct {
	A     uint32        `json:"a"`
	B     uint32        `json:"b"`
	State string        `json:"state"` // "up" (two-way) or "half" (one end only)
	RTT   time.Duration `json:"rtt_ns"`
}

// RouteView is the local route to one node.
type RouteView struct {
	Dst     uint32   `json:"dst"`
	NextHop uint32   `json:"next_hop"`
	Path    []uint32 `json:"path"` // from self (excluded) to dst (included)
}

// TopologyView is the whole link-state picture from the local node.
type TopologyView struct {
	Self   uint32      `json:"self"`
	Nodes  []NodeView  `json:"nodes"`
	Links  []LinkView  `json:"links"`
	Routes []RouteView `json:"routes"`
}

// CapView is one capability's sync state on the local node.
type CapView struct {
	Name     string `json:"name"`
	State    string `json:"state"` // not-synced, pending, syncing, synced
	Donor    uint32 `json:"donor,omitempty"`
	Records  uint64 `json:"records_received"`
	Attempts int    `json:"attempts"`
}

// TagView is one sharing tag.
type TagView struct {
	Name     string   `json:"name"`
	Owner    uint32   `json:"owner"`  // 0: no owner visible
	Active   bool     `json:"active"` // the local node is the owner
	Eligible []uint32 `json:"eligible"`
	Override uint32   `json:"override,omitempty"` // operator's choice, if any
	Quorum   bool     `json:"quorum"`             // the local node sees a quorum
}

// API is what the admin server needs from a running cluster node.
type API interface {
	Nodes() []NodeView
	Topology() TopologyView
	Caps() []CapView
	Tags() []TagView
	// RemoveNode forgets a down node cluster-wide.
	RemoveNode(id uint32) error
	// SetTagActive makes node the active owner of tag (0 clears the override).
	SetTagActive(tag string, node uint32) error
}
