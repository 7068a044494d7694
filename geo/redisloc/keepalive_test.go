package redisloc

import (
	"context"
	"fmt"
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
