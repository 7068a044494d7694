package cluster

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/cluster/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "0123456789abcdef0123456789abcdef"

// store is a tiny last-writer-wins capability for the shell tests.
type store struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *store) put(k, v string) { s.mu.Lock(); s.m[k] = v; s.mu.Unlock() }
func (s *store) len() int        { s.mu.Lock(); defer s.mu.Unlock(); return len(s.m) }

type recReader struct{ recs [][]byte }

func (r *recReader) Next(dst [][]byte, max int) ([][]byte, bool) {
	n := 0
	for len(r.recs) > 0 && n < max {
		dst = append(dst, r.recs[0])
		n += len(r.recs[0])
		r.recs = r.recs[1:]
	}
	return dst, len(r.recs) == 0
}

func (s *store) capability() Capability {
	decode := func(b []byte) (string, string) {
		r := wire.Reader{B: b}
		k, v := r.String(), r.String()
		return k, v
	}
	return Capability{
		Name:      "store",
		NeedsSync: true,
		Handle:    func(from uint32, typ wire.MsgType, body []byte) { s.put(decode(body)) },
		Snapshot: func() SnapshotReader {
			s.mu.Lock()
			defer s.mu.Unlock()
			var recs [][]byte
			for k, v := range s.m {
				recs = append(recs, encodeKV(k, v))
			}
			return &recReader{recs}
		},
		Apply: func(from uint32, recs [][]byte) {
			for _, r := range recs {
				s.put(decode(r))
			}
		},
	}
}

func encodeKV(k, v string) []byte {
	var w wire.Writer
	w.String(k)
	w.String(v)
	return w.B
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type testNode struct {
	*Node
	st *store
}

func startNode(t *testing.T, id uint32, addr string, join []string, seed bool, key string) *testNode {
	t.Helper()
	cfg := Config{NodeID: id, Region: "r1", Listen: addr, Key: key, Join: join, Seed: seed, SeedSyncDelay: 200 * time.Millisecond,
		Tags: []TagConfig{{Name: "vip", Region: "r1"}}}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := &store{m: map[string]string{}}
	if err := n.Register(st.capability()); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNode{n, st}
}

func eventually(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	var err error
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("not within %v: %v", d, err)
}

func upIDs(n *Node) []uint32 {
	var ids []uint32
	for _, v := range n.Nodes() {
		if v.State == "up" {
			ids = append(ids, v.ID)
		}
	}
	return ids
}

func TestThreeNodesJoinSyncAndTags(t *testing.T) {
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	n1 := startNode(t, 1, addrs[0], nil, true, testKey)
	for i := 0; i < 500; i++ {
		n1.st.put(fmt.Sprintf("k%d", i), "v")
	}
	n2 := startNode(t, 2, addrs[1], addrs[:1], false, testKey)
	n3 := startNode(t, 3, addrs[2], addrs[:1], false, testKey)
	nodes := []*testNode{n1, n2, n3}
	eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			if got := len(upIDs(n.Node)); got != 2 {
				return fmt.Errorf("node %d sees %d up", n.cfg.NodeID, got)
			}
			for _, v := range n.Nodes() {
				if v.State == "up" && !v.Direct {
					return fmt.Errorf("node %d has no direct link to %d", n.cfg.NodeID, v.ID)
				}
			}
			if !n.Synced("store") || n.st.len() < 500 {
				return fmt.Errorf("node %d store synced=%v len=%d", n.cfg.NodeID, n.Synced("store"), n.st.len())
			}
		}
		return nil
	})
	// Exactly one active owner of the tag, agreed by all.
	eventually(t, 2*time.Second, func() error {
		var owners []uint32
		for _, n := range nodes {
			tv := n.Tags()[0]
			if tv.Active {
				owners = append(owners, n.cfg.NodeID)
			}
			if tv.Owner != nodes[0].Tags()[0].Owner {
				return fmt.Errorf("owners disagree")
			}
		}
		if len(owners) != 1 {
			return fmt.Errorf("active owners %v", owners)
		}
		return nil
	})
	// The lock-free view used by hot paths agrees with the loop's.
	eventually(t, 2*time.Second, func() error {
		if !n1.IsUp(2) || !n1.IsUp(3) {
			return fmt.Errorf("view: 2 up=%v 3 up=%v", n1.IsUp(2), n1.IsUp(3))
		}
		if m, ok := n1.Meta(3); !ok || m.Region != "r1" || m.ClusterAddr != addrs[2] {
			return fmt.Errorf("view: meta of 3 = %+v, %v", m, ok)
		}
		if o := n1.TagOwner("vip"); o == 0 || o != n1.Tags()[0].Owner {
			return fmt.Errorf("view: tag owner %d, loop says %d", o, n1.Tags()[0].Owner)
		}
		return nil
	})
	if err := n2.SetTagActive("vip", 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() error {
		if !n3.Tags()[0].Active || n1.Tags()[0].Active {
			return fmt.Errorf("override not applied: %+v", n1.Tags()[0])
		}
		return nil
	})
	// Live messages reach every node.
	if got := n2.Broadcast("store", 1, encodeKV("live", "x")); got != 2 {
		t.Fatalf("broadcast reached %d nodes", got)
	}
	eventually(t, 2*time.Second, func() error {
		for _, n := range nodes {
			n.st.mu.Lock()
			_, ok := n.st.m["live"]
			n.st.mu.Unlock()
			if !ok && n != n2 {
				return fmt.Errorf("node %d lacks the live record", n.cfg.NodeID)
			}
		}
		return nil
	})
	// Kill node 3: detected, then removed cluster-wide.
	start := time.Now()
	n3.Close()
	eventually(t, 2*time.Second, func() error {
		if slices.Contains(upIDs(n1.Node), 3) || slices.Contains(upIDs(n2.Node), 3) {
			return fmt.Errorf("node 3 still up")
		}
		return nil
	})
	t.Logf("node 3 seen down after %v", time.Since(start))
	if err := n1.RemoveNode(3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, func() error {
		for _, v := range n2.Nodes() {
			if v.ID == 3 {
				return fmt.Errorf("node 2 still knows node 3")
			}
		}
		return nil
	})
}

func TestWrongKeyRefused(t *testing.T) {
	a := freePort(t)
	n1 := startNode(t, 1, a, nil, true, testKey)
	n2 := startNode(t, 2, freePort(t), []string{a}, false, "another-key-entirely-000000000000")
	eventually(t, 3*time.Second, func() error {
		if v := testutilCounter(n1.m.authFailures); v < 1 {
			return fmt.Errorf("no auth failure counted")
		}
		return nil
	})
	if len(upIDs(n1.Node)) != 0 || len(upIDs(n2.Node)) != 0 {
		t.Fatal("a node with the wrong key joined")
	}
	for _, v := range n1.Nodes() {
		if v.ID == 2 {
			t.Fatal("node 2 is in node 1's topology")
		}
	}
}

func TestDuplicateIDRefused(t *testing.T) {
	a := freePort(t)
	n1 := startNode(t, 1, a, nil, true, testKey)
	b := freePort(t)
	startNode(t, 2, b, []string{a}, false, testKey)
	eventually(t, 3*time.Second, func() error {
		if len(upIDs(n1.Node)) != 1 {
			return fmt.Errorf("no join")
		}
		return nil
	})
	dup := startNode(t, 2, freePort(t), []string{a}, false, testKey)
	eventually(t, 3*time.Second, func() error {
		if testutilCounter(dup.m.refused) < 1 {
			return fmt.Errorf("duplicate not refused")
		}
		return nil
	})
	for _, v := range n1.Nodes() {
		if v.ID == 2 && v.ClusterAddr != b {
			t.Fatalf("duplicate replaced node 2: %+v", v)
		}
	}
}

// A node that starts drained (the daemon's persisted flag) never owns a
// tag, even alone and past the seed's topology grace.
func TestStartDrainedNeverOwnsTags(t *testing.T) {
	cfg := Config{NodeID: 1, Region: "r1", Listen: freePort(t), Key: testKey, Seed: true, SeedSyncDelay: 50 * time.Millisecond,
		Drained: true, Tags: []TagConfig{{Name: "vip", Region: "r1"}}}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	eventually(t, 2*time.Second, func() error {
		if !n.Self().Drained {
			return fmt.Errorf("not advertised drained")
		}
		if !n.Tags()[0].Quorum {
			return fmt.Errorf("no quorum yet")
		}
		return nil
	})
	if tv := n.Tags()[0]; tv.Active || tv.Owner != 0 {
		t.Fatalf("drained node owns the tag: %+v", tv)
	}
}

// A join address that is down when the node first links elsewhere is
// still dialed later: without that, groups that meet first stay islands.
func TestJoinAddressDialedAfterFirstLink(t *testing.T) {
	a1, a2, a3 := freePort(t), freePort(t), freePort(t)
	n2 := startNode(t, 2, a2, nil, true, testKey)
	n3 := startNode(t, 3, a3, []string{a2, a1}, false, testKey)
	eventually(t, 3*time.Second, func() error {
		if !slices.Contains(upIDs(n3.Node), 2) {
			return fmt.Errorf("3 not linked to 2")
		}
		return nil
	})
	// Node 1 comes up later and joins nobody: only node 3's join list
	// can bring it in.
	n1 := startNode(t, 1, a1, nil, false, testKey)
	eventually(t, 5*time.Second, func() error {
		for _, n := range []*testNode{n1, n2, n3} {
			if got := len(upIDs(n.Node)); got != 2 {
				return fmt.Errorf("node %d sees %d up", n.cfg.NodeID, got)
			}
		}
		return nil
	})
}
