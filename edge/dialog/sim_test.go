package dialog

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/core"
)

// simNode adapts one core of a core.Sim to Cluster.
type simNode struct {
	sim *core.Sim
	c   *core.Core
}

func (a *simNode) Self() cluster.NodeMeta { return a.c.Self() }
func (a *simNode) SendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte) int {
	return a.c.SendMatching(a.sim.Now(), capName, typ, f, body)
}

// dialogSim runs a Service on every node of a core.Sim: nodes 1 and 2 in
// region r1 (HA partners), node 3 in r2.
type dialogSim struct {
	t   *testing.T
	sim *core.Sim
	svc map[uint32]*Service
	reg map[uint32]*prometheus.Registry
	ids []uint32
}

func newDialogSim(t *testing.T, cfg Config) *dialogSim {
	t.Helper()
	d := &dialogSim{t: t, svc: map[uint32]*Service{}, reg: map[uint32]*prometheus.Registry{}}
	d.sim = core.NewSim(t, 1, core.TagSpec{Name: "home-r1", Region: "r1"}, core.TagSpec{Name: "home-r2", Region: "r2"})
	d.sim.OnBoot(func(id core.NodeID, c *core.Core) {
		reg := prometheus.NewRegistry()
		s, err := New(cfg, &simNode{sim: d.sim, c: c}, WithClock(d.sim.Now), WithRegistry(reg))
		if err != nil {
			t.Fatal(err)
		}
		s.inline = true
		c.Register(s.Capability())
		d.svc[id], d.reg[id] = s, reg
	})
	d.sim.OnEvent(func(id core.NodeID, e core.Event) {
		if s := d.svc[id]; s != nil {
			s.HandleEvent(e)
		}
	})
	for i, n := range []struct {
		id     uint32
		region string
	}{{1, "r1"}, {2, "r1"}, {3, "r2"}} {
		d.ids = append(d.ids, n.id)
		d.sim.AddNode(n.id, n.region, i == 0)
	}
	d.sim.Connect(1, 2)
	d.sim.Connect(1, 3)
	d.sim.Connect(2, 3)
	d.eventually(20*time.Second, d.allSynced)
	return d
}

func (d *dialogSim) step() {
	d.sim.Run(20 * time.Millisecond)
	for _, id := range d.ids {
		if d.sim.Alive(id) {
			d.svc[id].Tick()
			d.sim.Flush(id)
		}
	}
}

func (d *dialogSim) eventually(limit time.Duration, check func() error) {
	d.t.Helper()
	var err error
	for end := d.sim.Now().Add(limit); d.sim.Now().Before(end); {
		d.step()
		if err = check(); err == nil {
			return
		}
	}
	d.t.Fatal(err)
}

func (d *dialogSim) allSynced() error {
	for _, id := range d.ids {
		if d.sim.Alive(id) && !d.svc[id].Synced() {
			return fmt.Errorf("node %d not synced", id)
		}
	}
	return nil
}

// do runs fn on node id's service from outside the simulation loop.
func (d *dialogSim) do(id uint32, fn func(s *Service)) {
	fn(d.svc[id])
	d.sim.Flush(id)
}

func callState(s *Service, k Key) (State, Version, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.Get(k)
	if !ok {
		return 0, Version{}, false
	}
	return c.State(), c.Ver, true
}

func wantState(s *Service, k Key, want State) func() error {
	return func() error {
		got, _, ok := callState(s, k)
		if !ok || got != want {
			return fmt.Errorf("node %d: call %v is %v (held %v), want %v", s.self, k.CallID, got, ok, want)
		}
		return nil
	}
}

// TestReplicationAndTakeover: a call made at node 1 is replicated to its
// region partner (node 2) only; node 1 dies, the BYE arrives at node 2,
// which terminates the replica; node 1 restarts and syncs it back before
// it is synced; a call of node 2 survives node 2's own restart the same
// way.
func TestReplicationAndTakeover(t *testing.T) {
	d := newDialogSim(t, Config{MaxCallsPerUser: 1})
	k := Key{Owner: 1, CallID: "call-1", FromTag: "ft"}
	d.do(1, func(s *Service) {
		if err := s.Begin(Start{CallID: "call-1", FromTag: "ft", User: "alice", Caller: "sip:alice@x", Callee: "sip:bob@x", CSeq: 1}); err != nil {
			t.Fatal(err)
		}
	})
	d.eventually(time.Second, wantState(d.svc[2], k, Early))
	// The limit counts the partner's calls: alice is at 1 on node 2 too.
	if err := d.svc[2].Begin(Start{CallID: "other", FromTag: "x", User: "alice"}); err != ErrLimit {
		t.Fatalf("alice's second call at the partner: %v, want ErrLimit", err)
	}
	d.do(1, func(s *Service) {
		s.Provisional("call-1", "ft", "tt", []string{"<sip:203.0.113.10;lr;ftag=ft>"})
		s.Answer("call-1", "ft", "tt", []string{"<sip:203.0.113.10;lr;ftag=ft>"})
		s.InviteEnded("call-1", "ft")
	})
	d.eventually(time.Second, wantState(d.svc[2], k, Confirmed))
	if _, _, ok := callState(d.svc[3], k); ok {
		t.Fatal("a call crossed regions")
	}
	if sum := d.svc[2].Summary(5); sum.Replica["confirmed"] != 1 || sum.Home["confirmed"] != 0 || len(sum.TopUsers) != 1 || sum.TopUsers[0] != (UserCount{"alice", 1}) {
		t.Fatalf("partner summary %+v", sum)
	}
	if n := histCount(t, d.reg[2], "anyedge_dialog_replication_lag_seconds"); n < 2 {
		t.Fatalf("lag observed %d times", n)
	}

	// Node 1 dies. The callee's BYE (From: its tag) reaches node 2.
	d.sim.Crash(1, true)
	d.eventually(5*time.Second, func() error {
		if d.sim.Core(2).IsUp(1) {
			return fmt.Errorf("node 1 still up at node 2")
		}
		return nil
	})
	id := DialogID{CallID: "call-1", FromTag: "tt", ToTag: "ft"}
	if c, ok := d.svc[2].Lookup(id); !ok || len(c.Legs) != 1 || c.Legs[0].Route[0] != "<sip:203.0.113.10;lr;ftag=ft>" {
		t.Fatalf("replica for the BYE: %+v %v", c, ok)
	}
	d.do(2, func(s *Service) {
		if !s.Request(id, 5) || !s.Bye(id) {
			t.Fatal("the replica did not match the BYE")
		}
	})
	if got, ver, _ := callState(d.svc[2], k); got != Terminated || ver.Node != 2 {
		t.Fatalf("after BYE at the partner: %v %+v", got, ver)
	}
	if n := counterValue(t, d.reg[2], "anyedge_dialog_replica_requests_total"); n != 2 {
		t.Fatalf("replica requests %v", n)
	}
	// A call at node 2 while node 1 is down.
	k2 := Key{Owner: 2, CallID: "call-2", FromTag: "f2"}
	d.do(2, func(s *Service) {
		if err := s.Begin(Start{CallID: "call-2", FromTag: "f2", User: "bob"}); err != nil {
			t.Fatal(err)
		}
		s.Answer("call-2", "f2", "t2", nil)
	})

	// Node 1 restarts empty and syncs from node 2 before it is synced.
	d.sim.Restart(1)
	d.eventually(10*time.Second, func() error {
		if !d.svc[1].Synced() {
			return fmt.Errorf("node 1 not synced")
		}
		return nil
	})
	if err := wantState(d.svc[1], k, Terminated)(); err != nil {
		t.Fatalf("at sync: %v", err)
	}
	if err := wantState(d.svc[1], k2, Confirmed)(); err != nil {
		t.Fatalf("at sync: %v", err)
	}
	if sum := d.svc[1].Summary(0); sum.Home["terminated"] != 1 || sum.Replica["confirmed"] != 1 {
		t.Fatalf("restarted node summary %+v", sum)
	}

	// Node 2 restarts: it gets its own call back from node 1, as home.
	d.sim.Crash(2, true)
	d.step()
	d.sim.Restart(2)
	d.eventually(10*time.Second, func() error {
		if !d.svc[2].Synced() {
			return fmt.Errorf("node 2 not synced")
		}
		return wantState(d.svc[2], k2, Confirmed)()
	})
	if sum := d.svc[2].Summary(0); sum.Home["confirmed"] != 1 {
		t.Fatalf("node 2 after restart %+v", sum)
	}
	// ... and keeps writing it: its BYE reaches node 1.
	d.do(2, func(s *Service) {
		if !s.Bye(DialogID{CallID: "call-2", FromTag: "f2", ToTag: "t2"}) {
			t.Fatal("BYE of the synced call")
		}
	})
	d.eventually(time.Second, wantState(d.svc[1], k2, Terminated))
	// Both forget the calls after linger, without a message.
	d.eventually(40*time.Second, func() error {
		for _, id := range []uint32{1, 2} {
			if n := d.svc[id].Summary(0).Total; n != 0 {
				return fmt.Errorf("node %d holds %d calls", id, n)
			}
		}
		return nil
	})
}

// TestAntiEntropyRepairs: an update lost on the way (the partner cut off
// while it was sent) is repaired by anti-entropy after the heal.
func TestAntiEntropyRepairs(t *testing.T) {
	d := newDialogSim(t, Config{})
	d.sim.Cut(1, 2, false)
	d.sim.Cut(2, 3, false)
	d.do(1, func(s *Service) {
		_ = s.Begin(Start{CallID: "lost", FromTag: "f", User: "u"})
		s.Answer("lost", "f", "t", nil)
	})
	d.sim.Run(50 * time.Millisecond)
	k := Key{Owner: 1, CallID: "lost", FromTag: "f"}
	if _, _, ok := callState(d.svc[2], k); ok {
		t.Fatal("the update got through the cut: the test proves nothing")
	}
	d.sim.HealAll()
	d.eventually(60*time.Second, wantState(d.svc[2], k, Confirmed))
	if n := counterValue(t, d.reg[2], "anyedge_dialog_repairs_total"); n < 1 {
		t.Fatalf("repairs %v: not anti-entropy", n)
	}
}

func metricFamily(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func histCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	return metricFamily(t, reg, name).GetMetric()[0].GetHistogram().GetSampleCount()
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return metricFamily(t, reg, name).GetMetric()[0].GetCounter().GetValue()
}
