package core

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// addNodePrio adds a node with a chosen priority (simNet's addNode picks
// one at random).
func addNodePrio(s *simNet, id NodeID, region string, seed bool, prio int32) {
	n := &simNode{id: id, meta: NodeMeta{ID: id, Region: region, ClusterAddr: fmt.Sprintf("n%d", id), Priority: prio, Seed: seed}}
	s.nodes[id] = n
	s.ids = append(s.ids, id)
	s.boot(n)
}

type tagNode struct {
	id     NodeID
	region string
	prio   int32
}

// tagNet is a full mesh of nodes (node 1 the seed) that has formed.
func tagNet(t *testing.T, tags []TagSpec, nodes ...tagNode) *simNet {
	t.Helper()
	s := newSimNet(t, 1)
	s.tags = tags
	for _, n := range nodes {
		addNodePrio(s, n.id, n.region, n.id == 1, n.prio)
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			s.phys[mkEdge(a.id, b.id)] = true
		}
	}
	if err := s.eventually(10*time.Second, s.checkConverged); err != nil {
		t.Fatal(err)
	}
	return s
}

func tagOf(c *Core, name string) TagInfo {
	for _, ti := range c.Tags() {
		if ti.Name == name {
			return ti
		}
	}
	return TagInfo{}
}

// ownerSeen checks that every alive node in among sees owner, and that
// exactly the owner (if among them) is active.
func ownerSeen(s *simNet, tag string, owner NodeID, among ...NodeID) error {
	if len(among) == 0 {
		among = s.ids
	}
	for _, id := range among {
		n := s.nodes[id]
		if !n.alive {
			continue
		}
		ti := tagOf(n.core, tag)
		if ti.Owner != owner || ti.Active != (id == owner) {
			return fmt.Errorf("node %d sees owner %d (active %v), want %d", id, ti.Owner, ti.Active, owner)
		}
	}
	return nil
}

func activeOwners(s *simNet, tag string) []NodeID {
	var out []NodeID
	for _, id := range s.ids {
		if n := s.nodes[id]; n.alive && tagOf(n.core, tag).Active {
			out = append(out, id)
		}
	}
	return out
}

func TestTagOwnerElection(t *testing.T) {
	cases := []struct {
		name    string
		tag     TagSpec
		nodes   []tagNode
		drained []NodeID
		want    NodeID
	}{
		{"highest priority wins", TagSpec{Name: "vip", Region: "r1"},
			[]tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 150}}, nil, 2},
		{"lowest id among equals", TagSpec{Name: "vip", Region: "r1"},
			[]tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 200}}, nil, 2},
		{"tag priority raises a node", TagSpec{Name: "vip", Region: "r1", Priorities: map[NodeID]int32{3: 300}},
			[]tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 100}}, nil, 3},
		{"tag priority lowers a node", TagSpec{Name: "vip", Region: "r1", Priorities: map[NodeID]int32{2: 0}},
			[]tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 150}}, nil, 3},
		{"drained node is no candidate", TagSpec{Name: "vip", Region: "r1"},
			[]tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 150}}, []NodeID{2}, 3},
		{"only eligible nodes", TagSpec{Name: "vip", Region: "r2", Nodes: []NodeID{1}},
			[]tagNode{{1, "r1", 100}, {2, "r1", 500}, {3, "r2", 100}}, nil, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tagNet(t, []TagSpec{tc.tag}, tc.nodes...)
			for _, id := range tc.drained {
				s.nodes[id].core.SetDrained(s.now, true)
				s.drain(s.nodes[id])
			}
			if err := s.eventually(2*time.Second, func() error { return ownerSeen(s, "vip", tc.want) }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTagOperatorOverride(t *testing.T) {
	s := tagNet(t, []TagSpec{{Name: "vip", Region: "r1"}}, tagNode{1, "r1", 100}, tagNode{2, "r1", 100}, tagNode{3, "r1", 100})
	settle := func(want NodeID) {
		t.Helper()
		if err := s.eventually(3*time.Second, func() error { return ownerSeen(s, "vip", want) }); err != nil {
			t.Fatal(err)
		}
	}
	settle(1)
	n2 := s.nodes[2]
	if err := n2.core.SetTagActive(s.now, "vip", 9); err == nil {
		t.Fatal("override to a node that is not eligible accepted")
	}
	if err := n2.core.SetTagActive(s.now, "nope", 3); !errors.Is(err, ErrUnknownTag) {
		t.Fatal("override of an unknown tag accepted")
	}
	if err := n2.core.SetTagActive(s.now, "vip", 3); err != nil {
		t.Fatal(err)
	}
	s.drain(n2)
	settle(3)

	s.crash(3, true)
	settle(1) // the override's node is gone: back to priorities

	s.boot(s.nodes[3])
	settle(3) // back, and the override still stands (the restarted node learns it)

	if err := s.nodes[1].core.SetTagActive(s.now, "vip", 0); err != nil {
		t.Fatal(err)
	}
	s.drain(s.nodes[1])
	settle(1)
}

func TestTagFencingIsolatedNodeGivesUp(t *testing.T) {
	s := tagNet(t, []TagSpec{{Name: "vip", Region: "r1"}}, tagNode{1, "r1", 100}, tagNode{2, "r1", 100}, tagNode{3, "r1", 100})
	if err := ownerSeen(s, "vip", 1); err != nil {
		t.Fatal(err)
	}
	s.cut[mkEdge(1, 2)] = true
	s.cut[mkEdge(1, 3)] = true
	if err := s.eventually(3*time.Second, func() error {
		if ti := tagOf(s.nodes[1].core, "vip"); ti.Active || ti.Quorum || ti.Owner != 0 {
			return fmt.Errorf("isolated node 1: %+v", ti)
		}
		return ownerSeen(s, "vip", 2, 2, 3)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTagHAPair(t *testing.T) {
	pair := []TagSpec{{Name: "pair", Nodes: []NodeID{1, 2}}}
	nodes := []tagNode{{1, "r1", 100}, {2, "r1", 200}, {3, "r1", 100}, {4, "r1", 100}}

	t.Run("survivor takes over when its partner dies", func(t *testing.T) {
		for _, hard := range []bool{true, false} {
			s := tagNet(t, pair, nodes...)
			if err := ownerSeen(s, "pair", 2); err != nil {
				t.Fatal(err)
			}
			s.crash(2, hard)
			if err := s.eventually(3*time.Second, func() error { return ownerSeen(s, "pair", 1) }); err != nil {
				t.Fatalf("hard=%v: %v", hard, err)
			}
		}
	})

	cases := []struct {
		side []NodeID // one side of the partition; the rest is the other
		want NodeID   // the only active owner
	}{
		{[]NodeID{1, 3}, 1}, // pair and cluster split evenly: the side with node 1
		{[]NodeID{1, 4}, 1},
		{[]NodeID{2, 3}, 1},
		{[]NodeID{1, 2}, 2},    // the pair together is a majority of the pair
		{[]NodeID{2, 3, 4}, 2}, // half the pair and most of the cluster
		{[]NodeID{1, 3, 4}, 1},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("partition %v", tc.side), func(t *testing.T) {
			s := tagNet(t, pair, nodes...)
			for _, e := range sortedEdges(s.phys) {
				if slices.Contains(tc.side, e.a) != slices.Contains(tc.side, e.b) {
					s.cut[e] = true
				}
			}
			if err := s.eventually(3*time.Second, func() error {
				if got := activeOwners(s, "pair"); !slices.Equal(got, []NodeID{tc.want}) {
					return fmt.Errorf("active owners %v, want [%d]", got, tc.want)
				}
				for _, id := range s.ids {
					n := s.nodes[id].core
					if len(n.UpNodes()) == 3 {
						return fmt.Errorf("node %d does not see the partition yet", id)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// And it stays that way.
			s.run(5 * time.Second)
			if got := activeOwners(s, "pair"); !slices.Equal(got, []NodeID{tc.want}) {
				t.Fatalf("later: active owners %v, want [%d]", got, tc.want)
			}
		})
	}
}

func TestTagNoClaimWithoutAView(t *testing.T) {
	known := []NodeMeta{peerMeta(2, "r1"), peerMeta(3, "r1")}
	cases := []struct {
		name    string
		seed    bool
		known   []NodeMeta
		claimAt time.Duration // -1: never
	}{
		{"fresh non-seed", false, nil, -1},
		{"non-seed that knows members", false, known, -1},
		{"seed that knows members", true, known, -1},
		{"fresh seed forms a cluster after TopologyGrace", true, nil, 3 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := labConfig(1, "r1")
			cfg.Self.Seed, cfg.Known = tc.seed, tc.known
			cfg.SeedSyncDelay = 3 * time.Second
			cfg.Tags = []TagSpec{{Name: "vip", Region: "r1"}}
			c := New(cfg, labEpoch)
			claimed := time.Duration(-1)
			for d := time.Duration(0); d <= time.Hour && claimed < 0; d += 100 * time.Millisecond {
				c.Tick(labEpoch.Add(d))
				for _, e := range c.Ready().Events {
					if e.Kind == EventTagOwner && e.Active {
						claimed = d
					}
				}
			}
			if claimed != tc.claimAt {
				t.Fatalf("claimed the tag at %v, want %v (-1: never)", claimed, tc.claimAt)
			}
		})
	}
}
