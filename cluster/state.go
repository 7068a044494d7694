package cluster

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/anyedge/anyedge/cluster/core"
)

// The members file remembers who was in the cluster, nothing else: the
// topology and data always come from live peers.
const membersFile = "members.json"

type member struct {
	ID          uint32 `json:"id"`
	Region      string `json:"region"`
	ClusterAddr string `json:"cluster_addr"`
	Priority    int32  `json:"priority"`
}

func (n *Node) loadKnown() []core.NodeMeta {
	if n.cfg.StateDir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(n.cfg.StateDir, membersFile))
	if err != nil {
		return nil
	}
	var ms []member
	if err := json.Unmarshal(b, &ms); err != nil {
		n.log.Warn("ignoring unreadable members file", "err", err)
		return nil
	}
	out := make([]core.NodeMeta, 0, len(ms))
	for _, m := range ms {
		out = append(out, core.NodeMeta{ID: m.ID, Region: m.Region, ClusterAddr: m.ClusterAddr, Priority: m.Priority})
	}
	return out
}

// saveKnown writes the members file when membership changed.
func (n *Node) saveKnown() {
	if n.cfg.StateDir == "" {
		return
	}
	var ms []member
	for _, a := range n.core.Database() {
		ms = append(ms, member{ID: a.Origin, Region: a.Meta.Region, ClusterAddr: a.Meta.ClusterAddr, Priority: a.Meta.Priority})
	}
	if slices.Equal(ms, n.lastMembers) {
		return
	}
	b, _ := json.MarshalIndent(ms, "", "  ")
	if err := os.MkdirAll(n.cfg.StateDir, 0o750); err != nil {
		n.log.Warn("state dir", "err", err)
		return
	}
	tmp := filepath.Join(n.cfg.StateDir, membersFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o640); err == nil {
		err = os.Rename(tmp, filepath.Join(n.cfg.StateDir, membersFile))
		if err == nil {
			n.lastMembers = ms
		}
	}
}
