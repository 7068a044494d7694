package geo

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/wire"
	"github.com/anyedge/anyedge/edge/location"
)

// fakeCluster is a Cluster whose view the test sets: who is up, synced,
// which region, which tag owner, what RTT. Sends are recorded.
type fakeCluster struct {
	self   uint32
	metas  map[uint32]cluster.NodeMeta
	up     map[uint32]bool
	owners map[string]uint32
	rtt    map[uint32]time.Duration
	hops   map[uint32]int
	sends  int
}

func newFake(self uint32, nodes map[uint32]string) *fakeCluster {
	f := &fakeCluster{self: self, metas: map[uint32]cluster.NodeMeta{}, up: map[uint32]bool{}, owners: map[string]uint32{},
		rtt: map[uint32]time.Duration{}, hops: map[uint32]int{}}
	for id, region := range nodes {
		f.metas[id] = cluster.NodeMeta{ID: id, Region: region, SIPAddr: fmt.Sprintf("10.0.0.%d:5060", id),
			Synced: []string{MetaCap, BindCap(region, false)}}
		if id != self {
			f.up[id] = true
			f.hops[id] = 1
		}
	}
	return f
}

func (f *fakeCluster) Self() cluster.NodeMeta                  { return f.metas[f.self] }
func (f *fakeCluster) Meta(id uint32) (cluster.NodeMeta, bool) { m, ok := f.metas[id]; return m, ok }
func (f *fakeCluster) IsUp(id uint32) bool                     { return f.up[id] }
func (f *fakeCluster) TagOwner(tag string) uint32              { return f.owners[tag] }
func (f *fakeCluster) Send(string, cluster.MsgType, uint32, []byte) error {
	f.sends++
	return nil
}
func (f *fakeCluster) SendMatching(string, cluster.MsgType, cluster.Filter, []byte) int {
	f.sends++
	return 0
}
func (f *fakeCluster) Nodes() []cluster.NodeView {
	var out []cluster.NodeView
	for id := range f.up {
		out = append(out, cluster.NodeView{ID: id, RTT: f.rtt[id], Hops: f.hops[id]})
	}
	return out
}

// world is node 1 (eu) and its view: 2 (eu), 3 and 4 (us), 5 (ap), 6 (eu),
// 7 (us).
func world(t *testing.T) (*Service, *fakeCluster) {
	t.Helper()
	f := newFake(1, map[uint32]string{1: "eu", 2: "eu", 3: "us", 4: "us", 5: "ap", 6: "eu", 7: "us"})
	f.rtt[2], f.rtt[3], f.rtt[4], f.rtt[6], f.rtt[7] = 3*time.Millisecond, 80*time.Millisecond, 70*time.Millisecond, 2*time.Millisecond, 75*time.Millisecond
	f.hops[5] = 2 // no direct link: RTT unknown
	s, err := New(Config{}, f, WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	s.inline = true
	s.refreshPeers(at(0))
	return s, f
}

// homeAt makes aor homed at home: its metadata and, when the home is in
// eu, its binding (this node's region holds the replicas).
func homeAt(t *testing.T, s *Service, aor string, home uint32, region, contact string, edit ...func(*location.Binding)) {
	t.Helper()
	m := mrec{home: home, region: region, ver: version{T: at(0), CSeq: 1, Node: home}, expires: at(time.Hour)}
	var w wire.Writer
	encodeMeta(&w, aor, &m)
	recs := [][]byte{w.B}
	if region == "eu" || home == s.self {
		b := testBinding(home, contact, 0, 1, time.Hour)
		b.AoR = aor
		for _, e := range edit {
			e(b)
		}
		r := liveRec(b)
		var wb wire.Writer
		encodeBind(&wb, aor, &r)
		recs = append(recs, wb.B)
	}
	s.merge("bind", recs)
}

func kinds(rs []Route) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s:%d", r.Kind, r.Node))
	}
	return fmt.Sprint(out)
}

// TestRegionPreference: local bindings first, then relays: the caller's
// region first, then by RTT (a measured one before an unknown one), then
// by hops.
func TestRegionPreference(t *testing.T) {
	s, _ := world(t)
	const aor = "sip:multi@example.com"
	homeAt(t, s, aor, 1, "eu", "sip:here@h")
	homeAt(t, s, aor, 2, "eu", "sip:a@h")
	homeAt(t, s, aor, 3, "us", "")
	homeAt(t, s, aor, 4, "us", "")
	homeAt(t, s, aor, 5, "ap", "")
	for _, tc := range []struct {
		region string
		want   string
	}{
		{"us", "[local:1 relay:4 relay:3 relay:2 relay:5]"},
		{"eu", "[local:1 relay:2 relay:4 relay:3 relay:5]"},
		{"ap", "[local:1 relay:5 relay:2 relay:4 relay:3]"},
	} {
		rs, err := s.LookupRoutes(context.Background(), aor, tc.region)
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(rs); got != tc.want {
			t.Errorf("caller in %s: %s, want %s", tc.region, got, tc.want)
		}
		for _, r := range rs[1:] {
			want := fmt.Sprintf("sip:10.0.0.%d:5060", r.Node)
			if r.Binding.Home != r.Node || r.Binding.Contact != want || r.Binding.AoR != aor || r.Binding.Q != 1000 {
				t.Errorf("relay entry %+v: want Home %d, Contact %s", r.Binding, r.Node, want)
			}
		}
		if rs[1].RTT == 0 && rs[1].Node != 5 {
			t.Errorf("relay to %d has no RTT", rs[1].Node)
		}
	}
	bs, _ := s.LookupFrom(context.Background(), aor, "us")
	if len(bs) != 5 || bs[0].Home != 1 || bs[0].Contact != "sip:here@h" || bs[1].Home != 4 {
		t.Fatalf("LookupFrom: %+v", bs)
	}
	bs, _ = s.LookupLocal(context.Background(), aor)
	if len(bs) != 1 || bs[0].Contact != "sip:here@h" {
		t.Fatalf("LookupLocal returned %+v, want only the local binding (never a relay)", bs)
	}
}

// TestTagOwnerFallback: a home that is down (or up but not yet synced) is
// replaced by the owner of its region's tag; several down homes behind the
// same owner make one relay; when this node owns the tag it serves the
// replicas itself (Home = this node), and LookupLocal does the same for a
// relayed request; without an owner there is nowhere to go.
func TestTagOwnerFallback(t *testing.T) {
	s, f := world(t)
	const aor = "sip:fallback@example.com"
	homeAt(t, s, aor, 2, "eu", "sip:a@h")
	homeAt(t, s, aor, 3, "us", "")
	homeAt(t, s, aor, 4, "us", "")
	f.up[2], f.up[3], f.up[4] = false, false, false
	f.owners["home-eu"], f.owners["home-us"] = 6, 7
	rs, _ := s.LookupRoutes(context.Background(), aor, "eu")
	if got := kinds(rs); got != "[relay:6 relay:7]" {
		t.Fatalf("homes down: %s, want relays to the tag owners 6 and 7", got)
	}
	if !slices.Equal(rs[1].Homes, []uint32{3, 4}) || rs[1].Binding.Home != 7 {
		t.Fatalf("relay to 7 stands for %v (Home %d), want [3 4]", rs[1].Homes, rs[1].Binding.Home)
	}
	if bs, _ := s.LookupLocal(context.Background(), aor); len(bs) != 0 {
		t.Fatalf("LookupLocal at a non-owner: %+v", bs)
	}

	f.owners["home-eu"] = 1 // this node took over home 2's tag
	rs, _ = s.LookupRoutes(context.Background(), aor, "eu")
	if got := kinds(rs); got != "[replica:1 relay:7]" || rs[0].Binding.Home != 1 || rs[0].Binding.Contact != "sip:a@h" || rs[0].Homes[0] != 2 {
		t.Fatalf("owner of home-eu: %s %+v, want home 2's replica served here", got, rs)
	}
	if bs, _ := s.LookupLocal(context.Background(), aor); len(bs) != 1 || bs[0].Home != 1 || bs[0].Contact != "sip:a@h" {
		t.Fatalf("LookupLocal at the owner: %+v, want the replica", bs)
	}
	if bs, _ := s.Bindings(context.Background()); len(bs) != 0 {
		t.Fatalf("Bindings (keepalive source) listed a binding that is not NATed: %+v", bs)
	}
	homeAt(t, s, "sip:nated@example.com", 2, "eu", "sip:n@h", func(b *location.Binding) { b.NATed = true })
	if bs, _ := s.Bindings(context.Background()); len(bs) != 1 || bs[0].Home != 1 || bs[0].Contact != "sip:n@h" || !bs[0].NATed {
		t.Fatalf("Bindings (keepalive source) at the owner: %+v, want home 2's NATed replica (NATed kept through the wire)", bs)
	}

	// The home is back but still syncing: not serving yet.
	f.up[2] = true
	f.metas[2] = cluster.NodeMeta{ID: 2, Region: "eu", SIPAddr: "10.0.0.2:5060", Synced: []string{MetaCap}}
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[replica:1 relay:7]" {
		t.Fatalf("home up but not synced: %s, want the owner to keep serving", kinds(rs))
	}
	f.metas[2] = cluster.NodeMeta{ID: 2, Region: "eu", SIPAddr: "10.0.0.2:5060", Synced: []string{MetaCap, "geo.bind.eu"}}
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[relay:2 relay:7]" {
		t.Fatalf("home synced again: %s, want a relay to it", kinds(rs))
	}
	// Relayed here while the home serves in this node's view: the sender's
	// view is older (the home was just undrained or restarted); the
	// replica is delivered rather than the call failed.
	if bs, _ := s.LookupLocal(context.Background(), aor); len(bs) != 1 || bs[0].Home != 1 || bs[0].Contact != "sip:a@h" {
		t.Fatalf("LookupLocal while the home serves: %+v, want the replica", bs)
	}

	// The home is draining, then drained (maintenance): the owner serves
	// its replicas, so that the node goes quiet; undrained, it serves
	// again.
	m2 := f.metas[2]
	m2.Draining = true
	f.metas[2] = m2
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[replica:1 relay:7]" {
		t.Fatalf("home draining: %s, want the owner to serve", kinds(rs))
	}
	m2.Drained = true
	f.metas[2] = m2
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[replica:1 relay:7]" {
		t.Fatalf("home drained: %s, want the owner to serve", kinds(rs))
	}
	// Drained with nobody to take over (no owner of home-eu): it still
	// serves.
	owner := f.owners["home-eu"]
	f.owners["home-eu"] = 0
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[relay:2 relay:7]" {
		t.Fatalf("home drained, no owner: %s, want a relay to it", kinds(rs))
	}
	f.owners["home-eu"] = owner
	m2.Drained, m2.Draining = false, false
	f.metas[2] = m2
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[relay:2 relay:7]" {
		t.Fatalf("home undrained: %s, want a relay to it", kinds(rs))
	}

	// No owner for us (the whole region is out of sight): nothing.
	f.owners["home-us"] = 0
	if rs, _ = s.LookupRoutes(context.Background(), aor, "eu"); kinds(rs) != "[relay:2]" {
		t.Fatalf("no owner: %s", kinds(rs))
	}
}

// TestExpiredNeverReturned: lookups compare expiries with the clock
// whether or not the sweep has run.
func TestExpiredNeverReturned(t *testing.T) {
	now := t0
	f := newFake(1, map[uint32]string{1: "eu", 2: "eu"})
	s, err := New(Config{}, f, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	s.inline = true
	u := &ua{aor: "sip:x@y", callID: "c", contact: "sip:x@h"}
	if _, err := s.Save(context.Background(), u.request(now, time.Minute)); err != nil {
		t.Fatal(err)
	}
	homeAt(t, s, u.aor, 2, "eu", "sip:other@h") // expires at t0+1h
	now = t0.Add(time.Minute)
	rs, _ := s.LookupRoutes(context.Background(), u.aor, "eu")
	if kinds(rs) != "[relay:2]" {
		t.Fatalf("at the expiry: %s, want the local binding gone", kinds(rs))
	}
	now = t0.Add(time.Hour)
	if rs, _ = s.LookupRoutes(context.Background(), u.aor, "eu"); len(rs) != 0 {
		t.Fatalf("after every expiry: %s", kinds(rs))
	}
	s.Tick(now)
	if s.st.home.Load()+s.st.replica.Load()+s.st.metaLive.Load() != 0 {
		t.Fatalf("sweep left live records: home %d replica %d meta %d", s.st.home.Load(), s.st.replica.Load(), s.st.metaLive.Load())
	}
}
