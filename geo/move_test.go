package geo

import (
	"fmt"
	"testing"
	"time"
)

// moveHome registers u at from, then (with the new contact) at to, and
// checks at every step of the simulation, from every node, that a fresh
// request reaches the UA (through the old home or the new one: never
// nothing), and at the end that only the new binding is left, the old
// home's records are tombstones and its metadata entry is dead.
func moveHome(t *testing.T, u *ua, from, to uint32) {
	t.Helper()
	g := newGeoSim(t, 7, Config{MoveGrace: 500 * time.Millisecond}, fourNodes()...)
	if r := g.registerAcked(from, u, time.Hour); r != AckReplicated {
		t.Fatalf("first register: %v", r)
	}
	if err := g.eventually(time.Second, func() error { return g.findEverywhere(u, u.contact) }); err != nil {
		t.Fatal(err)
	}
	old := u.contact
	u.contact = "sip:moved@192.0.2.99:5062"
	deliveries := 0
	var gap error
	g.afterDelivery = func() {
		deliveries++
		for _, id := range g.ids {
			if err := g.findUA(id, u, ""); err != nil && gap == nil {
				gap = fmt.Errorf("after delivery %d at %v: lookup gap: %w", deliveries, g.sim.Now(), err)
			}
		}
	}
	if r := g.registerAcked(to, u, time.Hour); r != AckReplicated {
		t.Fatalf("second register: %v", r)
	}
	g.run(2 * time.Second) // past the grace
	g.afterDelivery = nil
	if gap != nil {
		t.Fatal(gap)
	}
	if deliveries < 3 {
		t.Fatalf("only %d deliveries checked", deliveries)
	}
	for _, id := range g.ids {
		bs, err := g.reach(id, u.aor)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 1 || bs[0].Contact != u.contact {
			t.Fatalf("node %d reaches %+v, want only %s (old %s)", id, bs, u.contact, old)
		}
	}
	// The old home and its partner hold a tombstone, the metadata entry of
	// the old home is dead everywhere, and every node agrees.
	for _, id := range g.ids {
		if g.region[id] != g.region[from] {
			continue
		}
		sh := g.svc[id].st.shard(u.aor)
		sh.mu.Lock()
		st := sh.aors[u.aor]
		var dead, live int
		for _, r := range st.binds {
			if r.home == from {
				if r.dead {
					dead++
				} else {
					live++
				}
			}
		}
		sh.mu.Unlock()
		if dead != 1 || live != 0 {
			t.Errorf("node %d holds %d live and %d dead records of the old home", id, live, dead)
		}
	}
	ref := g.svc[g.ids[0]].dumpMeta()
	for _, id := range g.ids {
		m := g.svc[id].dumpMeta()
		if fmt.Sprint(m) != fmt.Sprint(ref) {
			t.Fatalf("metadata differs:\nnode %d %v\nnode %d %v", g.ids[0], ref, id, m)
		}
		if e := m[fmt.Sprintf("%s@%d", u.aor, from)]; e == "" || !contains(e, "dead=true") {
			t.Fatalf("node %d: old home's entry %q, want dead", id, e)
		}
	}
	if g.svc[from].Len() != 0 {
		t.Fatalf("old home Len %d", g.svc[from].Len())
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestMoveHomeByInstance(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to uint32
	}{{"other region", 1, 3}, {"same region", 1, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			moveHome(t, &ua{aor: "sip:bob@example.com", instance: "<urn:uuid:b>", callID: "b1", contact: "sip:bob@192.0.2.2:5060"}, tc.from, tc.to)
		})
	}
}

// TestMoveHomeByCallID: a UA without an instance keeps its Call-ID; its
// contact changes (new NAT mapping), so the binding key changes too.
func TestMoveHomeByCallID(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to uint32
	}{{"other region", 3, 2}, {"same region", 3, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			moveHome(t, &ua{aor: "sip:carol@example.com", callID: "carol-call-1", contact: "sip:carol@192.0.2.3:5060"}, tc.from, tc.to)
		})
	}
}

// TestMoveHomeKeepsOtherDevices: moving one UA does not touch another
// device of the same AoR (other instance, other Call-ID).
func TestMoveHomeKeepsOtherDevices(t *testing.T) {
	g := newGeoSim(t, 3, Config{}, fourNodes()...)
	phone := &ua{aor: "sip:dave@example.com", instance: "<urn:uuid:p>", callID: "p1", contact: "sip:phone@192.0.2.4"}
	desk := &ua{aor: "sip:dave@example.com", callID: "d1", contact: "sip:desk@192.0.2.5"}
	g.registerAcked(1, phone, time.Hour)
	g.registerAcked(1, desk, time.Hour)
	phone.contact = "sip:phone@192.0.2.44"
	g.registerAcked(3, phone, time.Hour)
	g.run(3 * time.Second)
	for _, id := range g.ids {
		if err := g.findUA(id, phone, phone.contact); err != nil {
			t.Fatal(err)
		}
		if err := g.findUA(id, desk, desk.contact); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMoveWhileOldHomeDown: the UA moves while its old home is down; the
// owner of the old home's tag retires the replica, and the old home, once
// back, does not resurrect it.
func TestMoveWhileOldHomeDown(t *testing.T) {
	g := newGeoSim(t, 5, Config{}, fourNodes()...)
	u := &ua{aor: "sip:erin@example.com", instance: "<urn:uuid:e>", callID: "e1", contact: "sip:erin@192.0.2.6"}
	g.registerAcked(1, u, time.Hour)
	g.sim.Crash(1, true)
	g.run(time.Second)
	u.contact = "sip:erin@192.0.2.66"
	g.registerAcked(4, u, time.Hour)
	g.run(3 * time.Second)
	for _, id := range []uint32{2, 3, 4} {
		bs, err := g.reach(id, u.aor)
		if err != nil || len(bs) != 1 || bs[0].Contact != u.contact {
			t.Fatalf("node %d reaches %+v (%v), want only the new binding", id, bs, err)
		}
	}
	g.sim.Restart(1)
	g.waitSynced(10 * time.Second)
	g.run(3 * time.Second)
	for _, id := range g.ids {
		bs, err := g.reach(id, u.aor)
		if err != nil || len(bs) != 1 || bs[0].Contact != u.contact {
			t.Fatalf("after restart, node %d reaches %+v (%v), want only the new binding", id, bs, err)
		}
	}
}
