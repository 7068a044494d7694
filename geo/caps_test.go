package geo

import (
	"context"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

// TestSnapshotForUnknownAsker: a donor that has not learnt the asking
// node's region yet (its LSA behind its sync request) still sends the
// region's bindings; an empty snapshot would end the asker's sync with
// nothing. A node known to be of another region gets none.
func TestSnapshotForUnknownAsker(t *testing.T) {
	s, err := New(Config{}, newFake(1, map[uint32]string{1: "eu", 2: "eu", 3: "us"}))
	if err != nil {
		t.Fatal(err)
	}
	s.inline = true
	now := time.Now()
	for i := range 10 {
		if _, err := s.Save(context.Background(), realistic(i, now)); err != nil {
			t.Fatal(err)
		}
	}
	var bind cluster.Capability
	for _, cp := range s.Capabilities() {
		if cp.Name == s.bindCap {
			bind = cp
		}
	}
	count := func(to cluster.NodeMeta) int {
		rd := bind.SnapshotFor(to)
		var recs [][]byte
		for done := false; !done; {
			recs, done = rd.Next(recs, 1<<20)
		}
		return len(recs)
	}
	if n := count(cluster.NodeMeta{}); n != 10 {
		t.Errorf("unknown asker: %d records, want 10", n)
	}
	if n := count(cluster.NodeMeta{ID: 2, Region: "eu"}); n != 10 {
		t.Errorf("asker of the region: %d records, want 10", n)
	}
	if n := count(cluster.NodeMeta{ID: 3, Region: "us"}); n != 0 {
		t.Errorf("asker of another region: %d records, want 0", n)
	}
}
