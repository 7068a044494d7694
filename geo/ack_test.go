package geo

import (
	"fmt"
	"testing"
	"time"
)

// TestAckResults: Save is acknowledged once a partner merged the change;
// with the partner gone (and known to be) it is acknowledged at once as
// alone; with the partner silently cut off it is acknowledged as degraded
// after ack_timeout.
func TestAckResults(t *testing.T) {
	g := newGeoSim(t, 11, Config{AckTimeout: 60 * time.Millisecond}, fourNodes()...)
	u := &ua{aor: "sip:f@example.com", callID: "f1", contact: "sip:f@192.0.2.8"}
	start := g.sim.Now()
	if r := g.registerAcked(1, u, time.Hour); r != AckReplicated {
		t.Fatalf("with a partner: %v", r)
	}
	if d := g.sim.Now().Sub(start); d > 40*time.Millisecond {
		t.Fatalf("replicated ack took %v", d)
	}

	g.sim.Cut(1, 2, false) // blackhole: node 1 still thinks 2 is up for a while
	for _, other := range []uint32{3, 4} {
		g.sim.Cut(2, other, false)
	}
	start = g.sim.Now()
	if r := g.registerAcked(1, u, time.Hour); r != AckDegraded {
		t.Fatalf("partner silently cut off: %v", r)
	}
	if d := g.sim.Now().Sub(start); d < 60*time.Millisecond || d > 200*time.Millisecond {
		t.Fatalf("degraded ack after %v, want about ack_timeout", d)
	}

	g.run(2 * time.Second) // the cut is detected: 2 is down for node 1
	if r := g.registerAcked(1, u, time.Hour); r != AckAlone {
		t.Fatalf("partner known down: %v", r)
	}

	// Healed: anti-entropy brings the partner what it missed.
	g.sim.HealAll()
	if err := g.eventually(5*time.Second, func() error {
		if a, b := fmt.Sprint(g.svc[1].dumpBinds()), fmt.Sprint(g.svc[2].dumpBinds()); a != b {
			return fmt.Errorf("partner not repaired:\n%s\n%s", a, b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestUnregisterReplicated: an unregister removes the binding at the
// partner too, and the home's metadata entry dies everywhere.
func TestUnregisterReplicated(t *testing.T) {
	g := newGeoSim(t, 12, Config{}, fourNodes()...)
	u := &ua{aor: "sip:g@example.com", instance: "<urn:uuid:g>", callID: "g1", contact: "sip:g@192.0.2.9"}
	g.registerAcked(3, u, time.Hour)
	if r := g.registerAcked(3, u, 0); r != AckReplicated {
		t.Fatalf("unregister ack %v", r)
	}
	g.sim.Crash(3, true) // the partner alone must know
	if err := g.eventually(2*time.Second, func() error {
		for _, id := range []uint32{1, 2, 4} {
			if bs, err := g.reach(id, u.aor); err != nil || len(bs) != 0 {
				return fmt.Errorf("node %d reaches %v (%v)", id, bs, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRestartRepublishesStaleMetadata: a home that restarts without its
// bindings (its partner lost them too) declares its old metadata entries
// dead once synced, so nobody keeps relaying to it.
func TestRestartRepublishesStaleMetadata(t *testing.T) {
	g := newGeoSim(t, 13, Config{}, fourNodes()...)
	u := &ua{aor: "sip:h@example.com", callID: "h1", contact: "sip:h@192.0.2.10"}
	g.registerAcked(1, u, time.Hour)
	g.run(time.Second)
	// Both eu nodes lose their memory (outside the failure model: the
	// binding is lost; the metadata must not lie about it).
	g.sim.Crash(2, true)
	g.sim.Crash(1, true)
	g.run(2 * time.Second)
	g.sim.Restart(1)
	g.sim.Restart(2)
	g.waitSynced(15 * time.Second)
	if err := g.eventually(5*time.Second, func() error {
		for _, id := range g.ids {
			m := g.svc[id].dumpMeta()
			if e := m[u.aor+"@1"]; !contains(e, "dead=true") {
				return fmt.Errorf("node %d: %s@1 = %q, want dead", id, u.aor, e)
			}
			if rs, _ := g.svc[id].LookupRoutes(t.Context(), u.aor, ""); len(rs) != 0 {
				return fmt.Errorf("node %d still routes: %s", id, kinds(rs))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCrossRegionReplication: with replicate_contacts_cross_region every
// node holds every binding, and when the home's whole region is down a
// node of another region delivers from its copy.
func TestCrossRegionReplication(t *testing.T) {
	g := newGeoSim(t, 14, Config{ReplicateContactsCrossRegion: true}, fourNodes()...)
	u := &ua{aor: "sip:i@example.com", instance: "<urn:uuid:i>", callID: "i1", contact: "sip:i@192.0.2.11"}
	if r := g.registerAcked(1, u, time.Hour); r != AckReplicated {
		t.Fatalf("ack %v", r)
	}
	g.run(time.Second)
	for _, id := range g.ids {
		if n := len(g.svc[id].dumpBinds()); n != 1 {
			t.Fatalf("node %d holds %d bindings, want every node to hold it", id, n)
		}
	}
	g.sim.Crash(1, true)
	g.sim.Crash(2, true)
	if err := g.eventually(3*time.Second, func() error {
		for _, id := range []uint32{3, 4} {
			rs, _ := g.svc[id].LookupRoutes(t.Context(), u.aor, "us")
			if len(rs) != 1 || rs[0].Kind != RouteReplica || rs[0].Binding.Home != id {
				return fmt.Errorf("node %d: %s, want its own copy served", id, kinds(rs))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
