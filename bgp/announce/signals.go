package announce

import (
	"slices"

	"github.com/anyedge/anyedge/cluster"
)

// Signals are the readiness inputs, read at every poll.
type Signals struct {
	// ListenersUp is true when every SIP listener is bound and serving.
	ListenersUp bool
	// Unsynced lists the required cluster capabilities not synced yet.
	Unsynced []string
	// Region is how much of its region the node reaches.
	Region RegionView
}

// RegionView counts nodes as the cluster sees them from here, the node
// itself included.
type RegionView struct {
	// Known and Reachable count the known nodes of the node's region, and
	// those of them that are up (reachable by some path).
	Known, Reachable int
	// AllKnown and AllReachable count every known node of the cluster.
	AllKnown, AllReachable int
	// Seed is true on a seed node, which may form a cluster on its own.
	Seed bool
}

// Isolated reports whether the node is cut off from its region: it
// reaches no strict majority of the region's known nodes, and not exactly
// half of them while reaching a strict majority of the whole cluster
// (rule 2 of the tag quorum: the survivor of a two-node region is not
// isolated while the other regions back it). A non-seed node that knows
// no other node yet has not joined anything: it counts as isolated.
func (r RegionView) Isolated() bool {
	if r.AllKnown <= 1 && !r.Seed {
		return true
	}
	if 2*r.Reachable > r.Known {
		return false
	}
	if 2*r.Reachable == r.Known && 2*r.AllReachable > r.AllKnown {
		return false
	}
	return true
}

// ClusterSignals computes the cluster's part of the signals from the
// node's views: the region counts from nodes, and the required
// capabilities (every capability when required is empty) that caps does
// not show as synced. A required capability the node does not have at all
// counts as unsynced: the config names something that never syncs.
func ClusterSignals(self cluster.NodeMeta, nodes []cluster.NodeView, caps []cluster.CapView, required []string) (unsynced []string, region RegionView) {
	region.Seed = self.Seed
	for _, n := range nodes {
		up := n.State == "self" || n.State == "up"
		region.AllKnown++
		if up {
			region.AllReachable++
		}
		if n.Region == self.Region {
			region.Known++
			if up {
				region.Reachable++
			}
		}
	}
	state := map[string]string{}
	for _, c := range caps {
		state[c.Name] = c.State
	}
	if len(required) == 0 {
		for _, c := range caps {
			required = append(required, c.Name)
		}
	}
	for _, name := range required {
		if state[name] != "synced" {
			unsynced = append(unsynced, name)
		}
	}
	slices.Sort(unsynced)
	return unsynced, region
}
