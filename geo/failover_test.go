package geo

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fourNodes is two regions of an HA pair each: 1, 2 in eu; 3, 4 in us.
func fourNodes() []simNode {
	return []simNode{{1, "eu"}, {2, "eu"}, {3, "us"}, {4, "us"}}
}

func (g *geoSim) findEverywhere(u *ua, contact string) error {
	for _, id := range g.ids {
		if !g.sim.Alive(id) {
			continue
		}
		if err := g.findUA(id, u, contact); err != nil {
			return err
		}
	}
	return nil
}

// TestFailoverAndRestart: a binding registered at node 1 is replicated to
// its partner 2 before Save returns; every node finds it (node 1 locally,
// the others by relaying to 1); when 1 dies, lookups go to the owner of
// home-eu, which serves the replica; when 1 restarts it gets its bindings
// back from 2 and is the home again.
func TestFailoverAndRestart(t *testing.T) {
	g := newGeoSim(t, 1, Config{}, fourNodes()...)
	u := &ua{aor: "sip:alice@example.com", instance: "<urn:uuid:a>", callID: "c1", contact: "sip:alice@192.0.2.1:5060"}
	if r := g.registerAcked(1, u, time.Hour); r != AckReplicated {
		t.Fatalf("ack %v, want replicated", r)
	}
	if err := g.eventually(time.Second, func() error { return g.findEverywhere(u, u.contact) }); err != nil {
		t.Fatal(err)
	}
	rs, _ := g.svc[3].LookupRoutes(t.Context(), u.aor, "us")
	if len(rs) != 1 || rs[0].Kind != RouteRelay || rs[0].Node != 1 || rs[0].Binding.Home != 1 {
		t.Fatalf("node 3 routes %+v, want one relay to 1", rs)
	}

	g.sim.Crash(1, false) // silent: the others find out by heartbeat
	if err := g.eventually(3*time.Second, func() error { return g.findEverywhere(u, u.contact) }); err != nil {
		t.Fatalf("after home crash: %v", err)
	}
	rs, _ = g.svc[3].LookupRoutes(t.Context(), u.aor, "us")
	if len(rs) != 1 || rs[0].Node != 2 {
		t.Fatalf("node 3 routes %+v, want a relay to the tag owner 2", rs)
	}
	rs, _ = g.svc[2].LookupRoutes(t.Context(), u.aor, "eu")
	if len(rs) != 1 || rs[0].Kind != RouteReplica || rs[0].Binding.Home != 2 {
		t.Fatalf("node 2 routes %+v, want its replica", rs)
	}

	g.sim.Restart(1)
	g.waitSynced(10 * time.Second)
	if err := g.eventually(3*time.Second, func() error { return g.findEverywhere(u, u.contact) }); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	rs, _ = g.svc[1].LookupRoutes(t.Context(), u.aor, "eu")
	if len(rs) != 1 || rs[0].Kind != RouteLocal {
		t.Fatalf("restarted home routes %+v, want its own binding back", rs)
	}
	if g.svc[1].Len() != 1 {
		t.Fatalf("restarted home Len %d", g.svc[1].Len())
	}
}
