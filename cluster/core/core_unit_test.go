package core

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Focused tests of one behaviour each, on hand-driven cores. Time is fake
// and only moves when a test moves it; frames only move when a test
// delivers them. The randomised whole-cluster runs are in sim_test.go.

var labEpoch = time.Unix(1_700_000_000, 0)

// labFrame is a frame in flight on a lab link.
type labFrame struct {
	from, to NodeID
	f        *wire.Frame
}

// lab is a hand-driven network of cores. Frames queue in send order; settle
// delivers them instantly (at the current fake time) except those the hold
// predicate keeps back for the test to release one by one. Held frames can
// be overtaken by others on the same link; the tests that hold frames only
// hold one kind (chunks or acks), whose handling does not depend on order
// with the rest.
type lab struct {
	t      testing.TB
	now    time.Time
	cores  map[NodeID]*Core
	ids    []NodeID
	linked map[edge]bool
	muted  map[edge]bool // silently dropping: a cut cable, a hung peer
	q      []labFrame
	hold   func(labFrame) bool
	events map[NodeID][]Event
	closes map[NodeID][]NodeID
}

func newLab(t testing.TB) *lab {
	return &lab{
		t: t, now: labEpoch,
		cores:  map[NodeID]*Core{},
		linked: map[edge]bool{},
		muted:  map[edge]bool{},
		events: map[NodeID][]Event{},
		closes: map[NodeID][]NodeID{},
	}
}

// labConfig is a config with explicit LAN and WAN timers, so tests do not
// depend on the defaults.
func labConfig(id NodeID, region string) Config {
	return Config{
		Self: NodeMeta{ID: id, Incarnation: uint64(id) * 1000, Region: region, ClusterAddr: fmt.Sprintf("n%d", id), Priority: 100},
		LAN:  Timers{PingInterval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond},
		WAN:  Timers{PingInterval: time.Second, DeadAfter: 5 * time.Second},
	}
}

func (l *lab) add(cfg Config, caps ...Capability) *Core {
	c := New(cfg, l.now)
	for _, cp := range caps {
		c.Register(cp)
	}
	l.cores[cfg.Self.ID] = c
	l.ids = append(l.ids, cfg.Self.ID)
	slices.Sort(l.ids)
	l.collect()
	return c
}

// link connects a and b as the shell does after a handshake.
func (l *lab) link(a, b NodeID) {
	l.t.Helper()
	ca, cb := l.cores[a], l.cores[b]
	if err := ca.Admit(cb.Self()); err != nil {
		l.t.Fatalf("node %d refuses %d: %v", a, b, err)
	}
	if err := cb.Admit(ca.Self()); err != nil {
		l.t.Fatalf("node %d refuses %d: %v", b, a, err)
	}
	l.linked[mkEdge(a, b)] = true
	ca.LinkUp(l.now, cb.Self())
	cb.LinkUp(l.now, ca.Self())
	l.collect()
}

// kill stops node id. hard: its TCP links reset, peers see LinkDown at
// once. Otherwise it goes silent and peers find out by heartbeat.
func (l *lab) kill(id NodeID, hard bool) {
	delete(l.cores, id)
	l.ids = slices.DeleteFunc(l.ids, func(x NodeID) bool { return x == id })
	l.q = slices.DeleteFunc(l.q, func(f labFrame) bool { return f.from == id || f.to == id })
	for e := range l.linked {
		if e.a != id && e.b != id {
			continue
		}
		if hard {
			delete(l.linked, e)
			if p := l.cores[e.a+e.b-id]; p != nil {
				p.LinkDown(l.now, id)
			}
		} else {
			l.muted[e] = true
		}
	}
	l.collect()
}

// collect drains every core's output into the queue.
func (l *lab) collect() {
	for again := true; again; {
		again = false
		for _, id := range l.ids {
			c := l.cores[id]
			r := c.Ready()
			for _, s := range r.Sends {
				e := mkEdge(id, s.To)
				if l.linked[e] && !l.muted[e] {
					l.q = append(l.q, labFrame{from: id, to: s.To, f: s.Frame})
				}
			}
			l.events[id] = append(l.events[id], r.Events...)
			for _, peer := range r.Close {
				l.closes[id] = append(l.closes[id], peer)
				e := mkEdge(id, peer)
				if l.linked[e] {
					delete(l.linked, e)
					if p := l.cores[peer]; p != nil && !l.muted[e] {
						p.LinkDown(l.now, id)
						again = true
					}
				}
			}
		}
	}
}

// deliver hands one queued frame to its destination and collects.
func (l *lab) deliver(i int) {
	lf := l.q[i]
	l.q = slices.Delete(l.q, i, i+1)
	e := mkEdge(lf.from, lf.to)
	if c := l.cores[lf.to]; c != nil && l.linked[e] && !l.muted[e] {
		c.Recv(l.now, lf.from, lf.f)
	}
	l.collect()
}

// settle delivers every frame that is not held, until none is left.
func (l *lab) settle() {
	l.t.Helper()
	for n := 0; ; n++ {
		if n > 1_000_000 {
			l.t.Fatal("lab: no quiescence after a million frames")
		}
		i := slices.IndexFunc(l.q, func(f labFrame) bool { return l.hold == nil || !l.hold(f) })
		if i < 0 {
			return
		}
		l.deliver(i)
	}
}

// release delivers the first queued frame that match selects, held or not,
// then settles. It reports false when there is none.
func (l *lab) release(match func(labFrame) bool) bool {
	i := slices.IndexFunc(l.q, match)
	if i < 0 {
		return false
	}
	l.deliver(i)
	l.settle()
	return true
}

// tick moves time by d, ticks every core and settles.
func (l *lab) tick(d time.Duration) {
	l.now = l.now.Add(d)
	for _, id := range l.ids {
		l.cores[id].Tick(l.now)
	}
	l.collect()
	l.settle()
}

// run ticks every step for d.
func (l *lab) run(d, step time.Duration) {
	for end := l.now.Add(d); l.now.Before(end); {
		l.tick(step)
	}
}

// lsaFrame builds an LSA frame as origin would flood it.
func lsaFrame(meta NodeMeta, seq uint64, links ...NodeID) *wire.Frame {
	a := &LSA{Origin: meta.ID, Seq: seq, Meta: meta}
	slices.Sort(links)
	for _, p := range links {
		a.Links = append(a.Links, Adj{Peer: p})
	}
	return &wire.Frame{Version: wire.Version, Type: wire.MsgLSA, Src: meta.ID, TTL: wire.DefaultTTL, Body: a.encode()}
}

func peerMeta(id NodeID, region string, synced ...string) NodeMeta {
	slices.Sort(synced)
	return NodeMeta{ID: id, Incarnation: uint64(id) * 1000, Region: region, ClusterAddr: fmt.Sprintf("n%d", id), Priority: 100, Synced: synced}
}

// neighbour links c to peer and feeds it peer's LSA (listing links), as if
// the peer had answered the link-up with its database.
func neighbour(c *Core, now time.Time, peer NodeMeta, seq uint64, links ...NodeID) {
	c.LinkUp(now, peer)
	c.Recv(now, peer.ID, lsaFrame(peer, seq, links...))
}

func sendsOf(r Ready, typ wire.MsgType) []Send {
	var out []Send
	for _, s := range r.Sends {
		if s.Frame.Cap == wire.SystemCap && s.Frame.Type == typ {
			out = append(out, s)
		}
	}
	return out
}

func hasKind(evs []Event, kind EventKind, node NodeID) bool {
	return slices.ContainsFunc(evs, func(e Event) bool { return e.Kind == kind && e.Node == node })
}

func selfLSA(c *Core) LSA {
	for _, a := range c.Database() {
		if a.Origin == c.self {
			return a
		}
	}
	return LSA{}
}

func advertises(a LSA, peer NodeID) bool {
	return slices.ContainsFunc(a.Links, func(x Adj) bool { return x.Peer == peer })
}

// --- Heartbeat ---------------------------------------------------------

func TestHeartbeatSilentNeighbourIsDeclaredDead(t *testing.T) {
	l := newLab(t)
	a := l.add(labConfig(1, "r1"))
	l.add(labConfig(2, "r1"))
	l.link(1, 2)
	l.settle()
	if !a.IsUp(2) {
		t.Fatal("node 2 not up after link and LSA exchange")
	}
	lastHeard := l.now
	l.muted[mkEdge(1, 2)] = true // the cable goes silent, TCP stays open

	dead := a.cfg.LAN.DeadAfter
	for l.now.Sub(lastHeard) < dead {
		l.tick(20 * time.Millisecond)
		if len(l.closes[1]) > 0 {
			t.Fatalf("link closed after %v of silence, DeadAfter is %v", l.now.Sub(lastHeard), dead)
		}
	}
	if !a.Linked(2) || !a.IsUp(2) {
		t.Fatal("link gone at exactly DeadAfter; it must outlive it")
	}
	l.tick(20 * time.Millisecond)

	if !slices.Equal(l.closes[1], []NodeID{2}) {
		t.Fatalf("Close output %v, want [2]", l.closes[1])
	}
	if a.Linked(2) || a.IsUp(2) {
		t.Fatal("dead link still linked or up")
	}
	if got := a.Stats().LinksDead; got != 1 {
		t.Fatalf("LinksDead = %d, want 1", got)
	}
	if advertises(selfLSA(a), 2) {
		t.Fatal("own LSA still advertises the dead link")
	}
	if !hasKind(l.events[1], EventNodeDown, 2) {
		t.Fatal("no NodeDown event for 2")
	}
}

func TestHeartbeatDataAloneKeepsLinkAlive(t *testing.T) {
	cases := []struct {
		name  string
		proof func(a *Core, now time.Time)
	}{
		{"Recv of capability data", func(a *Core, now time.Time) {
			a.Recv(now, 2, &wire.Frame{Version: wire.Version, Type: 1, Src: 2, Dst: 1, TTL: wire.DefaultTTL, Cap: "app", Body: []byte("x")})
		}},
		{"Heard stamped by the reader", func(a *Core, now time.Time) { a.Heard(2, now) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			a := l.add(labConfig(1, "r1"))
			l.add(labConfig(2, "r1"))
			l.link(1, 2)
			l.settle()
			// Nothing of the protocol gets through (no pongs, no LSAs),
			// but data keeps arriving every 100 ms for 5 s.
			l.muted[mkEdge(1, 2)] = true
			for i := 0; i < 250; i++ {
				l.tick(20 * time.Millisecond)
				if i%5 == 0 {
					tc.proof(a, l.now)
				}
			}
			if len(l.closes[1]) > 0 || !a.Linked(2) || a.Stats().LinksDead != 0 {
				t.Fatalf("a talking neighbour was declared dead (closes %v)", l.closes[1])
			}
		})
	}
}

func TestHeartbeatRTTFromPongs(t *testing.T) {
	t0 := labEpoch
	cfg := labConfig(1, "r1")
	cfg.LSARefresh = 300 * time.Millisecond
	a := New(cfg, t0)
	b := New(labConfig(2, "r1"), t0)
	a.LinkUp(t0, b.Self())
	b.LinkUp(t0, a.Self())
	b.Ready()

	roundTrip := func(atB, back time.Time) {
		t.Helper()
		pings := sendsOf(a.Ready(), wire.MsgPing)
		if len(pings) != 1 || pings[0].To != 2 {
			t.Fatalf("pings %v, want one to node 2", pings)
		}
		b.Recv(atB, 1, pings[0].Frame)
		pongs := sendsOf(b.Ready(), wire.MsgPong)
		if len(pongs) != 1 {
			t.Fatalf("node 2 sent %d pongs", len(pongs))
		}
		a.Recv(back, 2, pongs[0].Frame)
	}
	if a.RTT(2) != 0 {
		t.Fatal("RTT set before any pong")
	}
	roundTrip(t0.Add(3*time.Millisecond), t0.Add(8*time.Millisecond))
	if got := a.RTT(2); got != 8*time.Millisecond {
		t.Fatalf("first RTT %v, want 8ms (the first sample)", got)
	}
	t1 := t0.Add(100 * time.Millisecond)
	a.Tick(t1) // next ping
	roundTrip(t1.Add(5*time.Millisecond), t1.Add(16*time.Millisecond))
	if got, want := a.RTT(2), (7*8*time.Millisecond+16*time.Millisecond)/8; got != want {
		t.Fatalf("second RTT %v, want EWMA %v", got, want)
	}
	// The estimate goes out in the next LSA refresh.
	a.Tick(t0.Add(300 * time.Millisecond))
	if adv := selfLSA(a).Links; len(adv) != 1 || adv[0] != (Adj{Peer: 2, RTT: 9 * time.Millisecond}) {
		t.Fatalf("LSA advertises %v, want [{2 9ms}]", adv)
	}
}

func TestHeartbeatTimerProfiles(t *testing.T) {
	lan := Timers{PingInterval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond}
	wan := Timers{PingInterval: time.Second, DeadAfter: 5 * time.Second}
	// A WAN link pings four times per fence lease (1.1s margin + 400ms -
	// 200ms = 1.3s), so that a live one never goes stale.
	wanPing := 325 * time.Millisecond
	cases := []struct {
		name       string
		peerRegion string
		wanOnly    bool
		want       Timers
		ping       time.Duration
	}{
		{"same region uses LAN", "r1", false, lan, lan.PingInterval},
		{"other region uses WAN", "r2", false, wan, wanPing},
		{"WANOnly uses WAN in the region too", "r1", true, wan, wanPing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t0 := labEpoch
			cfg := labConfig(1, "r1")
			cfg.LAN, cfg.WAN, cfg.WANOnly = lan, wan, tc.wanOnly
			a := New(cfg, t0)
			a.LinkUp(t0, peerMeta(2, tc.peerRegion))
			a.Ready() // the first ping goes at link-up

			at := func(d time.Duration) Ready { a.Tick(t0.Add(d)); return a.Ready() }
			if p := sendsOf(at(tc.ping-10*time.Millisecond), wire.MsgPing); len(p) != 0 {
				t.Fatalf("ping before %v", tc.ping)
			}
			if p := sendsOf(at(tc.ping), wire.MsgPing); len(p) != 1 {
				t.Fatalf("no ping at %v", tc.ping)
			}
			if lease := a.FenceLease(); lease < tc.want.DeadAfter {
				if at(lease); len(selfLSA(a).Links) != 1 {
					t.Fatalf("link withdrawn at the fence lease %v", lease)
				}
				if at(lease + 10*time.Millisecond); len(selfLSA(a).Links) != 0 {
					t.Fatalf("silent link still advertised after the fence lease %v", lease)
				}
			}
			if r := at(tc.want.DeadAfter); len(r.Close) != 0 {
				t.Fatalf("closed at DeadAfter %v", tc.want.DeadAfter)
			}
			if r := at(tc.want.DeadAfter + 10*time.Millisecond); !slices.Equal(r.Close, []NodeID{2}) {
				t.Fatalf("not closed just after DeadAfter %v: %v", tc.want.DeadAfter, r.Close)
			}
		})
	}
}

// --- Link state ----------------------------------------------------------

func TestLinkStateChainRoutesThroughMiddle(t *testing.T) {
	s := newSimNet(t, 1)
	s.addNode(1, "r1", true)
	s.addNode(2, "r1", false)
	s.addNode(3, "r1", false)
	s.phys[mkEdge(1, 2)] = true
	s.phys[mkEdge(2, 3)] = true
	if err := s.eventually(10*time.Second, func() error {
		for _, id := range s.ids {
			if st := s.nodes[id].core.caps["kv"].state; st != Synced {
				return fmt.Errorf("node %d kv %v", id, st)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n1 := s.nodes[1].core
	if n1.Linked(3) {
		t.Fatal("1 and 3 linked without a cable")
	}
	if !n1.IsUp(3) {
		t.Fatal("3 not up from 1")
	}
	if hop, _ := n1.NextHop(3); hop != 2 {
		t.Fatalf("next hop to 3 is %d, want 2", hop)
	}
	if p := n1.Path(3); !slices.Equal(p, []NodeID{2, 3}) {
		t.Fatalf("path to 3 is %v, want [2 3]", p)
	}
	// A message really travels that way.
	rec := kvRec{Key: "routed", Val: 7, Ver: 1, Node: 1}
	if !n1.Send(s.now, "kv", 1, 3, rec.encode()) {
		t.Fatal("Send to 3 refused")
	}
	s.drain(s.nodes[1])
	s.run(100 * time.Millisecond)
	if got := s.nodes[3].kv.m["routed"]; got != rec {
		t.Fatalf("node 3 has %+v, want %+v", got, rec)
	}
	if s.nodes[2].core.Stats().Forwarded == 0 {
		t.Fatal("node 2 forwarded nothing")
	}
}

func TestLinkStateAdjacencyMustBeTwoWay(t *testing.T) {
	now := labEpoch
	a := New(labConfig(1, "r1"), now)
	m2, m3 := peerMeta(2, "r1"), peerMeta(3, "r1")

	a.LinkUp(now, m2)
	if a.IsUp(2) {
		t.Fatal("2 up before its LSA arrived")
	}
	a.Recv(now, 2, lsaFrame(m2, 10)) // 2 has not seen the link yet
	if a.IsUp(2) {
		t.Fatal("2 up while its LSA does not list the link back")
	}
	a.Recv(now, 2, lsaFrame(m2, 11, 1, 3))
	if !a.IsUp(2) {
		t.Fatal("2 not up with a two-way link")
	}
	if a.IsUp(3) {
		t.Fatal("3 up without an LSA of its own")
	}
	a.Recv(now, 2, lsaFrame(m3, 20)) // 3 does not list 2
	if a.IsUp(3) {
		t.Fatal("3 up over a one-way adjacency 2->3")
	}
	// 3 claims a link to 1, which 1 does not have: only the path via 2 counts.
	a.Recv(now, 2, lsaFrame(m3, 21, 1, 2))
	if !a.IsUp(3) {
		t.Fatal("3 not up once 2<->3 is two-way")
	}
	if p := a.Path(3); !slices.Equal(p, []NodeID{2, 3}) {
		t.Fatalf("path to 3 is %v, want [2 3] (3's claimed link to 1 is one-way)", p)
	}
}

func TestLinkStateSequenceNumbers(t *testing.T) {
	now := labEpoch
	a := New(labConfig(1, "r1"), now)
	m2, m3, m4 := peerMeta(2, "r1"), peerMeta(3, "r1"), peerMeta(4, "r1")
	neighbour(a, now, m2, 10, 1, 3)
	neighbour(a, now, m4, 10, 1)
	a.Recv(now, 2, lsaFrame(m3, 50, 2))
	a.Ready()
	if !a.IsUp(3) {
		t.Fatal("setup: 3 not up")
	}

	t.Run("older LSA is ignored", func(t *testing.T) {
		a.Recv(now, 2, lsaFrame(m3, 49)) // older, and says 3 lost its links
		if !a.IsUp(3) {
			t.Fatal("an older LSA took 3 down")
		}
		for _, s := range sendsOf(a.Ready(), wire.MsgLSA) {
			r := wire.Reader{B: s.Frame.Body}
			if decodeLSA(&r).Origin == 3 {
				t.Fatal("an older LSA was flooded on")
			}
		}
		for _, db := range a.Database() {
			if db.Origin == 3 && db.Seq != 50 {
				t.Fatalf("LSDB holds seq %d for 3, want 50", db.Seq)
			}
		}
	})
	t.Run("newer LSA is taken and flooded", func(t *testing.T) {
		a.Recv(now, 2, lsaFrame(m3, 51, 2))
		flooded := false
		for _, s := range sendsOf(a.Ready(), wire.MsgLSA) {
			r := wire.Reader{B: s.Frame.Body}
			if x := decodeLSA(&r); x.Origin == 3 && x.Seq == 51 {
				flooded = flooded || s.To == 4
				if s.To == 2 {
					t.Fatal("LSA flooded back to the neighbour it came from")
				}
			}
		}
		if !flooded {
			t.Fatal("newer LSA not flooded to node 4")
		}
	})
	t.Run("own stale LSA with a higher seq makes the node jump", func(t *testing.T) {
		stale := selfLSA(a).Seq + uint64(time.Hour) // a previous life with a fast clock
		old := a.Self()
		a.Recv(now, 2, lsaFrame(old, stale))
		r := a.Ready()
		if got := selfLSA(a).Seq; got <= stale {
			t.Fatalf("own seq %d, want above the stale %d", got, stale)
		}
		sent := 0
		for _, s := range sendsOf(r, wire.MsgLSA) {
			rd := wire.Reader{B: s.Frame.Body}
			if x := decodeLSA(&rd); x.Origin == 1 && x.Seq > stale {
				sent++
			}
		}
		if sent != 2 {
			t.Fatalf("re-advertised to %d neighbours, want 2", sent)
		}
	})
}

func TestForwarding(t *testing.T) {
	now := labEpoch
	a := New(labConfig(1, "r1"), now)
	neighbour(a, now, peerMeta(2, "r1"), 10, 1)
	neighbour(a, now, peerMeta(3, "r1"), 10, 1)
	a.Ready()
	frame := func(dst NodeID, ttl uint8) *wire.Frame {
		return &wire.Frame{Version: wire.Version, Type: 9, Src: 2, Dst: dst, TTL: ttl, Cap: "app", Body: []byte("hi")}
	}
	cases := []struct {
		name    string
		f       *wire.Frame
		wantTo  NodeID // 0: nothing sent
		wantTTL uint8
		want    Stats
	}{
		{"relayed with TTL-1", frame(3, 5), 3, 4, Stats{Forwarded: 1}},
		{"TTL 2 still relayed", frame(3, 2), 3, 1, Stats{Forwarded: 1}},
		{"TTL 1 dropped", frame(3, 1), 0, 0, Stats{TTLExpired: 1}},
		{"TTL 0 dropped", frame(3, 0), 0, 0, Stats{TTLExpired: 1}},
		{"no route", frame(9, 5), 0, 0, Stats{NoRoute: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Stats()
			ttl := tc.f.TTL
			a.Recv(now, 2, tc.f)
			r := a.Ready()
			after := a.Stats()
			got := Stats{Forwarded: after.Forwarded - before.Forwarded, NoRoute: after.NoRoute - before.NoRoute, TTLExpired: after.TTLExpired - before.TTLExpired}
			if got != tc.want {
				t.Fatalf("stats delta %+v, want %+v", got, tc.want)
			}
			if tc.f.TTL != ttl {
				t.Fatal("forwarding changed the received frame (it may be shared)")
			}
			if tc.wantTo == 0 {
				if len(r.Sends) != 0 {
					t.Fatalf("sent %d frames, want none", len(r.Sends))
				}
				return
			}
			if len(r.Sends) != 1 || r.Sends[0].To != tc.wantTo || r.Sends[0].Frame.TTL != tc.wantTTL || string(r.Sends[0].Frame.Body) != "hi" || r.Sends[0].Frame.Src != 2 {
				t.Fatalf("sends %+v, want one to %d with TTL %d", r.Sends, tc.wantTo, tc.wantTTL)
			}
		})
	}
	t.Run("Send without a route", func(t *testing.T) {
		before := a.Stats().NoRoute
		if a.Send(now, "app", 1, 9, nil) {
			t.Fatal("Send to an unknown node reported success")
		}
		if a.Stats().NoRoute != before+1 {
			t.Fatal("NoRoute not counted")
		}
	})
}

// --- Admission and removal -------------------------------------------------

func TestAdmitAndRemove(t *testing.T) {
	now := labEpoch
	cfg := labConfig(1, "r1")
	cfg.Known = []NodeMeta{peerMeta(4, "r1")} // remembered, down
	a := New(cfg, now)
	m2, m3 := peerMeta(2, "r1"), peerMeta(3, "r1")
	neighbour(a, now, m2, 10, 1, 3)     // direct
	a.Recv(now, 2, lsaFrame(m3, 10, 2)) // routed via 2
	a.Ready()
	if !a.IsUp(2) || !a.IsUp(3) || a.IsUp(4) {
		t.Fatalf("setup: up %v", a.UpNodes())
	}
	inc := func(m NodeMeta, d int) NodeMeta { m.Incarnation = uint64(int(m.Incarnation) + d); return m }

	admit := []struct {
		name    string
		peer    NodeMeta
		wantErr string // "" for admitted
	}{
		{"node id 0", peerMeta(0, "r1"), "not valid"},
		{"own id", peerMeta(1, "r1"), "duplicate node id"},
		{"linked node reconnecting", m2, ""},
		{"another life of a linked node", inc(m2, 1), "duplicate node id"},
		{"routed node dialing directly", m3, ""},
		{"another life of a routed up node", inc(m3, 1), "duplicate node id"},
		{"known down node restarted", inc(peerMeta(4, "r1"), 1), ""},
		{"new node", peerMeta(5, "r1"), ""},
	}
	for _, tc := range admit {
		t.Run("admit/"+tc.name, func(t *testing.T) {
			err := a.Admit(tc.peer)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}

	remove := []struct {
		name    string
		id      NodeID
		wantErr string
		wantIs  error
	}{
		{"self", 1, "this node", nil},
		{"up and linked", 2, "is up", nil},
		{"up and routed", 3, "is up", nil},
		{"unknown", 9, "", ErrUnknownNode},
	}
	for _, tc := range remove {
		t.Run("remove/"+tc.name, func(t *testing.T) {
			err := a.RemoveNode(now, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
				t.Fatalf("got %v, want an error containing %q (is %v)", err, tc.wantErr, tc.wantIs)
			}
		})
	}

	t.Run("remove a down node", func(t *testing.T) {
		if err := a.RemoveNode(now, 4); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Meta(4); ok {
			t.Fatal("removed node still in the database")
		}
		if rm := sendsOf(a.Ready(), wire.MsgRemoveNode); len(rm) != 1 || rm[0].To != 2 {
			t.Fatalf("removal sent as %v, want one frame to the neighbour", rm)
		}
		m4 := peerMeta(4, "r1")
		if err := a.Admit(m4); err == nil || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("removed incarnation admitted: %v", err)
		}
		if err := a.Admit(inc(m4, -1)); err == nil {
			t.Fatal("an older incarnation of a removed node admitted")
		}
		// Its old LSA, still circulating, does not bring it back.
		a.Recv(now, 2, lsaFrame(m4, 99, 2))
		if _, ok := a.Meta(4); ok {
			t.Fatal("an LSA of the removed incarnation brought it back")
		}
		if err := a.Admit(inc(m4, 1)); err != nil {
			t.Fatalf("restarted (newer) incarnation refused: %v", err)
		}
		a.Recv(now, 2, lsaFrame(inc(m4, 1), 100, 2))
		if _, ok := a.Meta(4); !ok {
			t.Fatal("the newer incarnation's LSA was not taken")
		}
	})
}
