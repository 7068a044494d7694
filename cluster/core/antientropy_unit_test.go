package core

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// aePair is two synced nodes on one cable, running the kv capability
// (which has Digest and Bucket) with the periodic anti-entropy set to
// interval.
func aePair(t *testing.T, interval time.Duration) *simNet {
	t.Helper()
	s := newSimNet(t, 1)
	s.addNode(1, "r1", true)
	s.addNode(2, "r1", false)
	for _, id := range s.ids {
		s.nodes[id].core.cfg.AntiEntropyInterval = interval
	}
	s.phys[mkEdge(1, 2)] = true
	if err := s.eventually(10*time.Second, s.checkConverged); err != nil {
		t.Fatal(err)
	}
	return s
}

// cutPair cuts the cable between nodes 1 and 2 and waits until each sees
// the other down.
func cutPair(t *testing.T, s *simNet) edge {
	t.Helper()
	e := mkEdge(1, 2)
	s.cut[e] = true
	if err := s.eventually(3*time.Second, func() error {
		if s.nodes[1].core.IsUp(2) || s.nodes[2].core.IsUp(1) {
			return fmt.Errorf("still up across the cut")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// writeLocal writes a key on one node only, as a write made while nobody
// else is reachable.
func writeLocal(s *simNet, id NodeID, key string, val uint64) kvRec {
	r := kvRec{Key: key, Val: val, Ver: uint64(s.now.UnixNano()), Node: id}
	s.nodes[id].kv.merge(r)
	return r
}

func kvEqual(s *simNet) error {
	a, b := s.nodes[1].kv.m, s.nodes[2].kv.m
	if !maps.Equal(a, b) {
		return fmt.Errorf("kv differs: node 1 has %d keys, node 2 has %d", len(a), len(b))
	}
	return nil
}

func TestAntiEntropyOnHeal(t *testing.T) {
	// The periodic exchange is pushed out of reach: only the digest sent
	// when a peer comes back can repair the data.
	s := aePair(t, time.Hour)
	e := cutPair(t, s)
	a := writeLocal(s, 1, "only-on-1", 1)
	b := writeLocal(s, 2, "only-on-2", 2)
	writeLocal(s, 1, "both", 10)
	s.run(time.Millisecond)
	later := writeLocal(s, 2, "both", 20) // the newer write wins
	delete(s.cut, e)
	if err := s.eventually(3*time.Second, func() error {
		if !s.nodes[1].core.IsUp(2) || !s.nodes[2].core.IsUp(1) {
			return fmt.Errorf("not up again")
		}
		return kvEqual(s)
	}); err != nil {
		t.Fatalf("3 s after the heal: %v", err)
	}
	for _, want := range []kvRec{a, b, later} {
		if got := s.nodes[1].kv.m[want.Key]; got != want {
			t.Fatalf("key %s is %+v, want %+v", want.Key, got, want)
		}
	}
	for _, id := range s.ids {
		if r := capInfo(s.nodes[id].core, "kv").Repairs; r == 0 {
			t.Fatalf("node %d counted no repairs", id)
		}
	}
}

func TestAntiEntropyPeriodic(t *testing.T) {
	const interval = 5 * time.Second
	s := aePair(t, interval)
	writeLocal(s, 1, "only-on-1", 1)
	writeLocal(s, 2, "only-on-2", 2)
	due := s.nodes[1].core.lastAE.Add(interval)
	if d := s.nodes[2].core.lastAE.Add(interval); d.Before(due) {
		due = d
	}
	for s.now.Before(due.Add(-100 * time.Millisecond)) {
		s.run(20 * time.Millisecond)
		if kvEqual(s) == nil {
			t.Fatalf("converged %v before any exchange was due", due.Sub(s.now))
		}
	}
	if err := s.eventually(time.Second, func() error { return kvEqual(s) }); err != nil {
		t.Fatalf("1 s after the exchange was due: %v", err)
	}
	for _, id := range s.ids {
		if r := capInfo(s.nodes[id].core, "kv").Repairs; r == 0 {
			t.Fatalf("node %d counted no repairs", id)
		}
	}
}

// A divergence larger than AntiEntropyBytes is repaired over several
// bounded rounds rather than in one burst; it still converges, and the
// first round alone does not carry everything.
func TestAntiEntropyBoundedRounds(t *testing.T) {
	s := aePair(t, time.Hour)
	for _, id := range s.ids {
		s.nodes[id].core.cfg.AntiEntropyBytes = 2 << 10
	}
	e := cutPair(t, s)
	const n = 2000 // about 125 per bucket, over 16 buckets
	for i := range n {
		writeLocal(s, 1, fmt.Sprintf("k%d", i), uint64(i))
	}
	delete(s.cut, e)
	if err := s.eventually(3*time.Second, func() error {
		if !s.nodes[1].core.IsUp(2) || !s.nodes[2].core.IsUp(1) {
			return fmt.Errorf("not up again")
		}
		if r := capInfo(s.nodes[2].core, "kv").Repairs; r == 0 {
			return fmt.Errorf("no repair yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r := capInfo(s.nodes[2].core, "kv").Repairs; r >= n {
		t.Fatalf("the first round carried %d of %d records: not bounded", r, n)
	}
	if err := s.eventually(10*time.Second, func() error { return kvEqual(s) }); err != nil {
		t.Fatalf("10 s after the heal: %v", err)
	}
	trunc := s.nodes[1].core.Stats().AntiEntropyTruncated + s.nodes[2].core.Stats().AntiEntropyTruncated
	if trunc < 2 {
		t.Fatalf("%d truncated rounds: the repair was not spread", trunc)
	}
}

// Follow-up rounds drain what the first round left and stop: they do not
// compare digests again, so writes that keep the nodes apart (replication
// in flight under load) do not keep a pair exchanging forever.
func TestAntiEntropyFollowUpsEnd(t *testing.T) {
	s := aePair(t, time.Hour)
	for _, id := range s.ids {
		s.nodes[id].core.cfg.AntiEntropyBytes = 2 << 10
	}
	e := cutPair(t, s)
	for i := range 2000 {
		writeLocal(s, 1, fmt.Sprintf("k%d", i), uint64(i))
	}
	delete(s.cut, e)
	truncated := func() uint64 {
		return s.nodes[1].core.Stats().AntiEntropyTruncated + s.nodes[2].core.Stats().AntiEntropyTruncated
	}
	// Node 1 keeps writing keys only it has, in every bucket, more than
	// one round carries, for 15 s.
	n := 0
	var last uint64
	lastChange := s.now
	for end := s.now.Add(15 * time.Second); s.now.Before(end); {
		for range 100 {
			writeLocal(s, 1, fmt.Sprintf("late%d", n), uint64(n))
			n++
		}
		s.run(50 * time.Millisecond)
		if tr := truncated(); tr != last {
			last, lastChange = tr, s.now
		}
	}
	if last < 2 {
		t.Fatalf("%d truncated rounds: the first repair was not spread", last)
	}
	for i := range 2000 {
		if _, ok := s.nodes[2].kv.m[fmt.Sprintf("k%d", i)]; !ok {
			t.Fatalf("k%d never reached node 2", i)
		}
	}
	if quiet := s.now.Sub(lastChange); quiet < 5*time.Second {
		t.Fatalf("follow-up rounds still running at the end of 15 s of writes (last truncation %v before it): they do not end", quiet)
	}
}

// A bucket is sent only when a second comparison, soon after the first,
// still finds it different: one look marks suspects and schedules a
// digest back; a fresh second look sends what differed both times and
// keeps the rest as suspects without another recheck; a stale one starts
// over.
func TestAntiEntropyConfirm(t *testing.T) {
	c := New(Config{Self: NodeMeta{ID: 1}}, time.Unix(100, 0))
	if got := c.aeConfirm(2, "kv", []uint32{1, 2, 3}); len(got) != 0 {
		t.Fatalf("first look sent %v", got)
	}
	if at, ok := c.aeCheck[aeKey{2, "kv"}]; !ok || at.Sub(c.now) != aeRecheck {
		t.Fatalf("no recheck scheduled aeRecheck later: %v %v", at, ok)
	}
	delete(c.aeCheck, aeKey{2, "kv"})
	c.now = c.now.Add(aeRecheck)
	if got := c.aeConfirm(2, "kv", []uint32{2, 3, 4}); !slices.Equal(got, []uint32{2, 3}) {
		t.Fatalf("second look sent %v, want [2 3] (differed twice)", got)
	}
	if _, ok := c.aeCheck[aeKey{2, "kv"}]; ok {
		t.Fatal("a second look scheduled another recheck: the pair would ping-pong")
	}
	if got := c.aeConfirm(3, "kv", []uint32{4}); len(got) != 0 {
		t.Fatalf("another peer's suspects confirmed %v", got)
	}
	c.now = c.now.Add(aeSuspectTTL + time.Millisecond)
	if got := c.aeConfirm(2, "kv", []uint32{4}); len(got) != 0 {
		t.Fatalf("a stale suspect was confirmed: %v", got)
	}
	if _, ok := c.aeCheck[aeKey{2, "kv"}]; !ok {
		t.Fatal("no recheck after a stale look")
	}
}

// The periodic exchange pushed out of reach, a lasting divergence found by
// one operator-started exchange is still repaired, by the recheck, within
// about a second, and the first comparison alone sends nothing.
func TestAntiEntropyRecheckRepairs(t *testing.T) {
	s := aePair(t, time.Hour)
	writeLocal(s, 1, "only-on-1", 1)
	writeLocal(s, 2, "only-on-2", 2)
	s.nodes[1].core.AntiEntropy(2)
	s.run(aeRecheck / 2)
	for _, id := range s.ids {
		if r := capInfo(s.nodes[id].core, "kv").Repairs; r != 0 {
			t.Fatalf("node %d: %d records sent on the first comparison", id, r)
		}
	}
	if err := s.eventually(2*time.Second, func() error { return kvEqual(s) }); err != nil {
		t.Fatalf("2 s after the exchange: %v", err)
	}
}
