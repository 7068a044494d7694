package core

import (
	"testing"
	"time"
)

// regionKV is a kv whose donors are restricted to the node's region and
// whose snapshot only carries records meant for the asking node's region.
func regionCap(s *kv, self NodeMeta) Capability {
	cp := s.capability()
	cp.Name = "regional"
	cp.Digest, cp.Bucket = nil, nil
	cp.Donors = func(m NodeMeta) bool { return m.Region == self.Region }
	cp.SnapshotFor = func(to NodeMeta) SnapshotReader {
		var recs [][]byte
		for _, b := range s.records(-1) {
			if r, ok := decodeKV(b); ok && r.Key[:2] == to.Region {
				recs = append(recs, b)
			}
		}
		return &sliceReader{recs: recs}
	}
	return cp
}

func TestDonorsRestrictedToRegion(t *testing.T) {
	s := newSimNet(t, 1)
	s.addNode(1, "r1", true)
	s.addNode(2, "r2", false)
	s.addNode(3, "r2", false)
	stores := map[NodeID]*kv{}
	for _, id := range s.ids {
		n := s.nodes[id]
		stores[id] = newKV()
		n.core.Register(regionCap(stores[id], n.meta))
	}
	// Node 1 (another region, a seed) holds data for both regions.
	stores[1].merge(kvRec{Key: "r1-a", Ver: 1, Node: 1})
	stores[1].merge(kvRec{Key: "r2-b", Ver: 1, Node: 1})
	for _, e := range []edge{{1, 2}, {1, 3}, {2, 3}} {
		s.phys[e] = true
	}
	state := func(id NodeID) SyncState { return s.nodes[id].core.caps["regional"].state }
	// Node 2 is the lowest id of r2: nobody in its region can donate, so
	// after the seed delay it declares itself synced; node 3 must then take
	// its snapshot from node 2, never from node 1 (wrong region).
	s.run(time.Second)
	if st := state(2); st == Synced {
		t.Fatalf("node 2 synced before the seed delay")
	}
	err := s.eventually(10*time.Second, func() error {
		if state(2) != Synced || state(3) != Synced {
			return errorf("states %v %v", state(2), state(3))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(stores[3].m) != 0 {
		t.Fatalf("node 3 got records from outside its region's donors: %v", stores[3].m)
	}
	// New data at node 2 now reaches a restarted node 3 through a snapshot
	// from node 2 only.
	stores[2].merge(kvRec{Key: "r2-c", Ver: 2, Node: 2})
	stores[2].merge(kvRec{Key: "r1-x", Ver: 2, Node: 2})
	s.crash(3, true)
	n3 := s.nodes[3]
	s.boot(n3)
	stores[3] = newKV()
	n3.core.Register(regionCap(stores[3], n3.meta))
	if err := s.eventually(10*time.Second, func() error {
		if state(3) != Synced {
			return errorf("node 3 %v", state(3))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := stores[3].m["r2-c"]; !ok || len(stores[3].m) != 1 {
		t.Fatalf("node 3 after restart holds %v, want only r2-c", stores[3].m)
	}
}
