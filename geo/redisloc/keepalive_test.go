package redisloc

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/nat"
)

// probeLog records which node probed which contact.
type probeLog struct {
	mu  sync.Mutex
	by  map[string][]uint32
	die map[string]bool // contacts whose probes fail
}

type nodeProber struct {
	node uint32
	log  *probeLog
}

func (p nodeProber) Probe(_ context.Context, b location.Binding, _ string) error {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	p.log.by[b.Contact] = append(p.log.by[b.Contact], p.node)
	if p.log.die[b.Contact] {
		return fmt.Errorf("no answer")
	}
	return nil
}

// TestKeepaliveSplit runs the edge's real keepalive pinger on two nodes over
// one Redis location: each NATed contact is probed by its home node only,
// none twice, including the contacts of one AoR homed on different nodes;
// a dead contact is removed from Redis by its home.
func TestKeepaliveSplit(t *testing.T) {
	c := sharedRedis(t)
	p := freshPrefix()
	ctx := context.Background()
	stores := []*Store{newStore(t, c, 1, p), newStore(t, c, 2, p)}
	now := time.Now()
	reg := func(s *Store, aor, contact string) {
		t.Helper()
		_, err := s.Save(ctx, &location.SaveRequest{AoR: aor, CallID: contact, CSeq: 1, Now: now,
			Contacts: []location.Binding{{Contact: contact, Q: 1000, Expires: now.Add(time.Hour),
				NATed: true, Received: "198.51.100.7:4000", Transport: "udp"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	var want = map[string]uint32{}
	for i := range 20 {
		n := i % 2
		contact := fmt.Sprintf("sip:u%d@192.168.1.%d", i, i)
		reg(stores[n], fmt.Sprintf("sip:u%d@x", i), contact)
		want[contact] = uint32(n + 1)
	}
	// One AoR, a phone behind each node.
	reg(stores[0], "sip:shared@x", "sip:shared@10.0.0.1")
	reg(stores[1], "sip:shared@x", "sip:shared@10.0.0.2")
	want["sip:shared@10.0.0.1"], want["sip:shared@10.0.0.2"] = 1, 2
	log := &probeLog{by: map[string][]uint32{}, die: map[string]bool{"sip:u3@192.168.1.3": true}}
	cfg := nat.Config{Interval: time.Second, Failures: 1}
	var pingers []*nat.Pinger
	for i, s := range stores {
		s.Tick(ctx) // flush the home index
		pg, err := nat.NewPinger(cfg, nat.RangeSource{R: s}, s, nodeProber{uint32(i + 1), log}, nat.WithNode(uint32(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		pingers = append(pingers, pg)
	}
	// Two intervals of ticks: every contact comes due at least once.
	for step := range 4 {
		at := now.Add(time.Duration(step) * cfg.Interval / 2)
		for _, pg := range pingers {
			if err := pg.Tick(ctx, at); err != nil {
				t.Fatal(err)
			}
			pg.Wait()
		}
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for contact, home := range want {
		by := log.by[contact]
		if len(by) == 0 {
			t.Errorf("%s (home %d) never probed", contact, home)
		}
		for _, n := range by {
			if n != home {
				t.Errorf("%s (home %d) probed by node %d", contact, home, n)
			}
		}
	}
	if bs, err := stores[1].Lookup(ctx, "sip:u3@x"); err != nil || len(bs) != 0 {
		t.Errorf("the dead contact is still there: %+v %v", bs, err)
	}
}

// TestNATIndex: RangeNATed lists only the NATed bindings homed on the node
// (Range lists every AoR homed there); a binding that stops being NATed or
// is removed leaves the NAT index; and a node whose NAT index is missing
// (an upgrade from before it existed) rebuilds it from the home index at
// its first tick.
func TestNATIndex(t *testing.T) {
	c := sharedRedis(t)
	p := freshPrefix()
	ctx := context.Background()
	a := newStore(t, c, 1, p)
	b := newStore(t, c, 2, p)
	now := time.Now()
	reg := func(s *Store, aor, contact string, nated bool, cseq uint32) {
		t.Helper()
		_, err := s.Save(ctx, &location.SaveRequest{AoR: aor, CallID: contact, CSeq: cseq, Now: now,
			Contacts: []location.Binding{{Contact: contact, Q: 1000, Expires: now.Add(time.Hour),
				NATed: nated, Received: "198.51.100.7:4000", Transport: "udp"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	list := func(f func(func(string, []location.Binding) bool)) map[string]int {
		got := map[string]int{}
		f(func(aor string, bs []location.Binding) bool {
			got[aor] = len(bs)
			return true
		})
		return got
	}
	reg(a, "sip:nat@x", "sip:nat@10.0.0.1", true, 1)
	reg(a, "sip:open@x", "sip:open@198.18.0.1", false, 1)
	reg(a, "sip:mixed@x", "sip:mixed@10.0.0.2", true, 1)
	reg(a, "sip:mixed@x", "sip:mixed@198.18.0.2", false, 1)
	reg(b, "sip:other@x", "sip:other@10.0.0.3", true, 1) // homed on node 2
	a.Tick(ctx)
	b.Tick(ctx)
	if got := list(a.Range); !maps.Equal(got, map[string]int{"sip:nat@x": 1, "sip:open@x": 1, "sip:mixed@x": 2}) {
		t.Fatalf("Range on node 1: %v", got)
	}
	if got := list(a.RangeNATed); !maps.Equal(got, map[string]int{"sip:nat@x": 1, "sip:mixed@x": 1}) {
		t.Fatalf("RangeNATed on node 1: %v", got)
	}

	// nat@x re-registers without NAT; mixed@x's NATed contact is removed.
	reg(a, "sip:nat@x", "sip:nat@10.0.0.1", false, 2)
	gone := location.Binding{Contact: "sip:mixed@10.0.0.2"}
	if err := a.Remove(ctx, "sip:mixed@x", gone.Key()); err != nil {
		t.Fatal(err)
	}
	a.Tick(ctx)
	if got := list(a.RangeNATed); len(got) != 0 {
		t.Fatalf("RangeNATed after the NATed contacts left: %v", got)
	}
	reg(a, "sip:open@x", "sip:open@198.18.0.1", true, 2)

	// A node upgraded from before the NAT index: its pending note is lost
	// (another process) and the key does not exist.
	if err := a.rdb.Del(ctx, a.natKey()).Err(); err != nil {
		t.Fatal(err)
	}
	restarted := newStore(t, c, 1, p)
	if got := list(restarted.RangeNATed); len(got) != 0 {
		t.Fatalf("RangeNATed before the first tick: %v", got)
	}
	restarted.Tick(ctx) // flush (nothing), re-read the home index
	restarted.Tick(ctx) // flush what it noted
	if got := list(restarted.RangeNATed); !maps.Equal(got, map[string]int{"sip:open@x": 1}) {
		t.Fatalf("RangeNATed after the rebuild: %v", got)
	}
	if got := list(b.RangeNATed); !maps.Equal(got, map[string]int{"sip:other@x": 1}) {
		t.Fatalf("RangeNATed on node 2: %v", got)
	}
}
