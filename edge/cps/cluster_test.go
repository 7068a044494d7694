package cps

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNet is an in-memory cluster: Broadcast calls the other nodes'
// capability handlers directly.
type fakeNet struct {
	mu    sync.Mutex
	nodes map[uint32]*fakeNode
}

type fakeNode struct {
	net  *fakeNet
	meta cluster.NodeMeta
	cap  cluster.Capability
	subs []func(cluster.Event)
	down bool
}

func (n *fakeNet) add(id uint32, region string) *fakeNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes == nil {
		n.nodes = map[uint32]*fakeNode{}
	}
	f := &fakeNode{net: n, meta: cluster.NodeMeta{ID: id, Region: region}}
	n.nodes[id] = f
	return f
}

func (f *fakeNode) Self() cluster.NodeMeta { return f.meta }

func (f *fakeNode) Register(c cluster.Capability) error {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	f.cap = c
	return nil
}

func (f *fakeNode) Subscribe(fn func(cluster.Event)) { f.subs = append(f.subs, fn) }

func (f *fakeNode) Broadcast(capName string, typ cluster.MsgType, body []byte) int {
	f.net.mu.Lock()
	var to []*fakeNode
	for _, o := range f.net.nodes {
		if o != f && !o.down && !f.down && o.cap.Name == capName {
			to = append(to, o)
		}
	}
	f.net.mu.Unlock()
	for _, o := range to {
		o.cap.Handle(f.meta.ID, typ, body)
	}
	return len(to)
}

func (f *fakeNode) Nodes() []cluster.NodeView {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	var out []cluster.NodeView
	for _, o := range f.net.nodes {
		v := cluster.NodeView{ID: o.meta.ID, Region: o.meta.Region, State: "up", RTT: 2 * time.Millisecond}
		switch {
		case o == f:
			v.State = "self"
		case o.down || f.down:
			v.State = "down"
		}
		out = append(out, v)
	}
	return out
}

// event delivers a membership event to every subscriber of node f.
func (f *fakeNode) event(e cluster.Event) {
	for _, fn := range f.subs {
		fn(e)
	}
}

func TestService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "ip", Rate: 10, Selector: SourceIP}}}
		var net fakeNet
		reg := prometheus.NewRegistry()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := func(id uint32, reg prometheus.Registerer) (*Service, *fakeNode) {
			fn := net.add(id, "eu-west")
			opts := []ServiceOption{}
			if reg != nil {
				opts = append(opts, WithRegistry(reg))
			}
			s, err := NewService(cfg, fn, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Attach(fn); err != nil {
				t.Fatal(err)
			}
			s.Start(ctx)
			net.mu.Lock()
			others := make([]*fakeNode, 0, len(net.nodes))
			for _, o := range net.nodes {
				if o != fn {
					others = append(others, o)
				}
			}
			net.mu.Unlock()
			for _, o := range others {
				o.event(cluster.Event{Kind: cluster.EventNodeUp, Node: id})
			}
			return s, fn
		}
		a, _ := start(1, reg)
		b, fb := start(2, nil)
		defer a.Close()
		defer b.Close()
		time.Sleep(10 * time.Millisecond) // the first reconcile: both up

		ok, _ := checkN(a.Limiter(), Request{SourceIP: "192.0.2.1"}, 8)
		checkN(a.Limiter(), Request{}, 52)
		time.Sleep(100 * time.Millisecond) // a flush or two
		if st := b.Limiter().Status(); ok != 8 || st[0].Rate != 60 || st[1].Rate != 8 {
			t.Fatalf("b sees %+v", st)
		}
		if ok, _ := checkN(b.Limiter(), Request{SourceIP: "192.0.2.1"}, 5); ok > 2 {
			t.Errorf("b passed %d for a key at 8 of 10 platform-wide", ok)
		}

		// A run-time rate change reaches the other node at once.
		if err := a.SetRate("global", 200); err != nil {
			t.Fatal(err)
		}
		if st := b.Limiter().Status()[0]; st.Limit != 200 {
			t.Errorf("b's rate after SetRate on a: %v", st.Limit)
		}

		// A node joining gets the windows in the snapshot.
		c, _ := start(3, nil)
		defer c.Close()
		var recs [][]byte
		rd := a.Capability().Snapshot()
		for done := false; !done; {
			recs, done = rd.Next(recs, 100)
		}
		c.Capability().Apply(1, recs)
		time.Sleep(10 * time.Millisecond)
		if st, want := c.Limiter().Status(), a.Limiter().Status(); st[0].Rate != want[0].Rate || st[1].Rate != want[1].Rate || st[0].Limit != 200 {
			t.Errorf("joiner sees %+v, a %+v", st, want)
		}

		// b dies: a learns it from the event at once (split policy: 2 of
		// 3 nodes visible).
		net.mu.Lock()
		fb.down = true
		net.mu.Unlock()
		net.mu.Lock()
		na, nc := net.nodes[1], net.nodes[3]
		net.mu.Unlock()
		for _, n := range []*fakeNode{na, nc} {
			n.event(cluster.Event{Kind: cluster.EventNodeDown, Node: 2})
		}
		if st := a.Limiter().Status()[0]; st.Share != 2.0/3 {
			t.Errorf("share after b's death: %v", st.Share)
		}
		// Unknown message types are refused and counted.
		a.Capability().Handle(3, 42, []byte("x"))

		// Metrics: the names lint clean and carry the values.
		time.Sleep(100 * time.Millisecond)
		problems, err := testutil.GatherAndLint(reg)
		if err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", problems, err)
		}
		const want = `
# HELP anyedge_cps_rejected_total New calls this node refused, by the limit that refused them.
# TYPE anyedge_cps_rejected_total counter
anyedge_cps_rejected_total{limit="global"} 0
anyedge_cps_rejected_total{limit="ip"} 0
# HELP anyedge_cps_bad_updates_total Replication frames and snapshot records refused, by reason.
# TYPE anyedge_cps_bad_updates_total counter
anyedge_cps_bad_updates_total{reason="clock"} 0
anyedge_cps_bad_updates_total{reason="malformed"} 1
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "anyedge_cps_rejected_total", "anyedge_cps_bad_updates_total"); err != nil {
			t.Error(err)
		}
		if n := testutil.ToFloat64(collectorGauge(t, reg, "anyedge_cps_replication_bytes_total")); n == 0 {
			t.Error("no replication bytes counted")
		}
		if n, want := testutil.ToFloat64(collectorGauge(t, reg, "anyedge_cps_rate")), a.Limiter().Status()[0].Rate; n != want || n < 60 {
			t.Errorf("anyedge_cps_rate{limit=global} = %v, status %v", n, want)
		}
	})
}

// collectorGauge finds the first series of name in reg as a collector.
func collectorGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("no %s", name)
	return nil
}
