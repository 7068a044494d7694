package bfd

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fixedRand returns the same fraction of n every time: 0 gives the
// shortest jitter, 1 the longest.
type fixedRand float64

func (f fixedRand) Int64N(n int64) int64 { return min(int64(float64(n)*float64(f)), n-1) }

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestSession(t *testing.T, discr uint32, mult uint8, r Rand) *Session {
	t.Helper()
	s, err := NewSession(SessionConfig{
		LocalDiscr: discr, DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 300 * time.Millisecond,
		DetectMult: mult, Rand: r,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// net runs two sessions against one fake clock, delivering packets
// instantly unless a direction is cut. It records every packet and change.
type net2 struct {
	t       *testing.T
	now     time.Time
	s       [2]*Session
	cut     [2]bool // cut[i]: packets from s[i] are lost
	sent    [2][]Packet
	changes [2][]Change
}

func newNet(t *testing.T) *net2 {
	return &net2{
		t:   t,
		now: t0,
		s: [2]*Session{
			newTestSession(t, 0x11111111, 3, rand.New(rand.NewPCG(1, 2))),
			newTestSession(t, 0x22222222, 3, rand.New(rand.NewPCG(3, 4))),
		},
	}
}

// handle records out from session i and delivers its packets.
func (n *net2) handle(i int, out Output) {
	n.changes[i] = append(n.changes[i], out.Changes...)
	for _, p := range out.Packets {
		n.sent[i] = append(n.sent[i], p)
		if n.cut[i] {
			continue
		}
		// Through the codec, as on the wire.
		q, err := Decode(p.Marshal())
		if err != nil {
			n.t.Fatalf("session %d sent an invalid packet %v: %v", i, p, err)
		}
		n.handle(1-i, n.s[1-i].Step(q, n.now))
	}
}

// start ticks both sessions once at the current time.
func (n *net2) start() {
	n.handle(0, n.s[0].Tick(n.now))
	n.handle(1, n.s[1].Tick(n.now))
}

// run advances the clock event by event until until.
func (n *net2) run(until time.Time) {
	for {
		next, who := time.Time{}, -1
		for i, s := range n.s {
			if d := s.Next(); !d.IsZero() && (who < 0 || d.Before(next)) {
				next, who = d, i
			}
		}
		if who < 0 || next.After(until) {
			n.now = until
			return
		}
		if next.After(n.now) {
			n.now = next
		}
		n.handle(who, n.s[who].Tick(n.now))
	}
}

func states(cs []Change) []State {
	var out []State
	for _, c := range cs {
		out = append(out, c.To)
	}
	return out
}

// The three-way handshake (RFC 5880 §6.2): Down/Down -> Init -> Up, then a
// Poll Sequence moves both ends from the 1 s idle interval to 300 ms.
func TestHandshake(t *testing.T) {
	n := newNet(t)
	first := n.s[0].Tick(n.now)
	if len(first.Packets) != 1 {
		t.Fatalf("first tick sent %d packets, want 1", len(first.Packets))
	}
	p := first.Packets[0]
	if p.State != Down || p.YourDiscr != 0 || p.MyDiscr != 0x11111111 || p.DesiredMinTx != IntervalOf(time.Second) || p.RequiredMinRx != IntervalOf(300*time.Millisecond) || p.DetectMult != 3 {
		t.Fatalf("first packet %v: want Down, your=0, tx 1s (not Up: at least 1 s, §6.8.3), rx 300ms", p)
	}
	n.handle(0, first)
	n.handle(1, n.s[1].Tick(n.now))

	if got, want := states(n.changes[0]), []State{Up}; !slices.Equal(got, want) {
		t.Errorf("A changes %v, want %v", got, want)
	}
	if got, want := states(n.changes[1]), []State{Init, Up}; !slices.Equal(got, want) {
		t.Errorf("B changes %v, want %v", got, want)
	}
	if n.now != t0 {
		t.Errorf("handshake took %v: state changes must go out at once", n.now.Sub(t0))
	}
	n.run(t0.Add(3 * time.Second))
	for i, s := range n.s {
		info := s.Info()
		if info.State != Up || info.RemoteState != Up || info.Polling {
			t.Errorf("session %d: %+v, want Up/Up and the poll finished", i, info)
		}
		if info.TxInterval != 300*time.Millisecond || info.DetectTime != 900*time.Millisecond {
			t.Errorf("session %d: tx %v detect %v, want 300ms and 900ms", i, info.TxInterval, info.DetectTime)
		}
		if info.RemoteDiscr != n.s[1-i].cfg.LocalDiscr {
			t.Errorf("session %d: remote discr %#x", i, info.RemoteDiscr)
		}
	}
	// The poll: A's first Up packet carried P and 300 ms; B answered F.
	if !slices.ContainsFunc(n.sent[0], func(p Packet) bool { return p.State == Up && p.Poll }) {
		t.Error("A never polled after going Up")
	}
	if !slices.ContainsFunc(n.sent[1], func(p Packet) bool { return p.Final && !p.Poll }) {
		t.Error("B never answered a poll with F")
	}
}

func upPair(t *testing.T) *net2 {
	n := newNet(t)
	n.start()
	n.run(n.now.Add(3 * time.Second))
	for i, s := range n.s {
		if s.State() != Up || s.Info().Polling {
			t.Fatalf("session %d not settled Up: %+v", i, s.Info())
		}
	}
	n.changes = [2][]Change{}
	n.sent = [2][]Packet{}
	return n
}

// A silent peer is declared down exactly one detection time after its last
// packet, and what was learnt about it is forgotten.
func TestDetectionTimeout(t *testing.T) {
	n := upPair(t)
	n.cut[1] = true
	last := n.now // B's last delivered packet was sent at or before this
	n.run(n.now.Add(2 * time.Second))
	if len(n.changes[0]) != 1 {
		t.Fatalf("A changes %v, want one", n.changes[0])
	}
	c := n.changes[0][0]
	if c.To != Down || c.Diag != DiagControlDetectExpired {
		t.Fatalf("A: %v, want down with diag 1", c)
	}
	// B's last delivered packet was sent at or before `last`; the timeout
	// fires 900 ms after it, so within (last, last+900ms].
	if d := c.At.Sub(last); d <= 0 || d > 900*time.Millisecond {
		t.Errorf("timeout %v after the cut, want within 900ms", d)
	}
	info := n.s[0].Info()
	if info.RemoteDiscr != 0 || info.DetectTime != 0 {
		t.Errorf("after timeout: %+v, want the peer forgotten", info)
	}
	// Back to the 1 s idle rate, Down, your discriminator 0.
	var after []Packet
	for _, p := range n.sent[0] {
		if p.State == Down {
			after = append(after, p)
		}
	}
	if len(after) == 0 || after[0].YourDiscr != 0 || after[0].DesiredMinTx != IntervalOf(time.Second) {
		t.Errorf("packets after timeout %v", after)
	}
	// B, which still hears A, sees A go Down and follows (neighbor down).
	if got := states(n.changes[1]); len(got) == 0 || got[0] != Down || n.changes[1][0].Diag != DiagNeighborDown {
		t.Errorf("B changes %v, want down (neighbor signaled)", n.changes[1])
	}
}

// Exact detection time: 3 x 300 ms after the last packet, not a moment
// earlier.
func TestDetectionTimeExact(t *testing.T) {
	s := newTestSession(t, 1, 3, fixedRand(0))
	s.Tick(t0)
	in := Packet{State: Down, DetectMult: 3, MyDiscr: 9, DesiredMinTx: IntervalOf(time.Second), RequiredMinRx: IntervalOf(300 * time.Millisecond)}
	s.Step(in, t0)
	in.State, in.YourDiscr = Up, 1
	s.Step(in, t0)
	if s.State() != Up {
		t.Fatal(s.State())
	}
	// Peer advertises 1 s while we poll; detection = 3 x max(300ms, 1s).
	if d := s.Info().DetectTime; d != 3*time.Second {
		t.Fatalf("detect time %v, want 3s", d)
	}
	in.DesiredMinTx = IntervalOf(300 * time.Millisecond)
	in.Final = true
	last := t0.Add(100 * time.Millisecond)
	s.Step(in, last)
	if d := s.Info().DetectTime; d != 900*time.Millisecond {
		t.Fatalf("detect time %v, want 900ms", d)
	}
	if out := s.Tick(last.Add(900*time.Millisecond - time.Microsecond)); len(out.Changes) != 0 {
		t.Fatalf("down too early: %v", out.Changes)
	}
	out := s.Tick(last.Add(900 * time.Millisecond))
	if len(out.Changes) != 1 || out.Changes[0].To != Down {
		t.Fatalf("at 900ms: %v", out.Changes)
	}
}

func TestAdminDown(t *testing.T) {
	n := upPair(t)
	n.handle(0, n.s[0].SetAdminDown(true, n.now))
	if got := n.changes[0]; len(got) != 1 || got[0].To != AdminDown || got[0].Diag != DiagAdminDown {
		t.Fatalf("A changes %v", got)
	}
	if got := n.changes[1]; len(got) != 1 || got[0].To != Down || got[0].Diag != DiagNeighborDown {
		t.Fatalf("B changes %v, want down (neighbor signaled)", got)
	}
	if p := n.sent[0][0]; p.State != AdminDown || p.Diag != DiagAdminDown {
		t.Fatalf("A sent %v", p)
	}
	// While A is AdminDown, B stays Down and A ignores B (no F, no change).
	n.run(n.now.Add(5 * time.Second))
	if n.s[0].State() != AdminDown || n.s[1].State() != Down {
		t.Fatalf("states %v %v", n.s[0].State(), n.s[1].State())
	}
	out := n.s[0].Step(Packet{State: Down, Poll: true, DetectMult: 3, MyDiscr: 0x22222222, RequiredMinRx: 1000}, n.now)
	if len(out.Packets)+len(out.Changes) != 0 {
		t.Fatalf("AdminDown session answered %v", out)
	}
	// Back up: Down, then the handshake.
	n.handle(0, n.s[0].SetAdminDown(false, n.now))
	n.run(n.now.Add(3 * time.Second))
	if n.s[0].State() != Up || n.s[1].State() != Up {
		t.Fatalf("after re-enable: %v %v", n.s[0].State(), n.s[1].State())
	}
}

// Changing timers while Up runs a Poll Sequence (§6.8.3): a longer
// transmit interval and a shorter detection time wait for the Final.
func TestPollSequence(t *testing.T) {
	n := upPair(t)
	a := n.s[0]
	n.cut[1] = true // hold B's answer back
	out, err := a.SetIntervals(time.Second, 100*time.Millisecond, n.now)
	if err != nil {
		t.Fatal(err)
	}
	n.handle(0, out)
	if len(out.Packets) != 1 || !out.Packets[0].Poll || out.Packets[0].DesiredMinTx != IntervalOf(time.Second) || out.Packets[0].RequiredMinRx != IntervalOf(100*time.Millisecond) {
		t.Fatalf("poll packet %v", out.Packets)
	}
	info := a.Info()
	if !info.Polling || info.TxInterval != 300*time.Millisecond || info.DetectTime != 900*time.Millisecond {
		t.Fatalf("during poll %+v: want old tx 300ms and old detection 900ms in force", info)
	}
	// B answered at once, with F (lost on the way). Let B's packets
	// through: the next poll is answered and ends the sequence.
	if !slices.ContainsFunc(n.sent[1], func(p Packet) bool { return p.Final }) {
		t.Fatal("B did not answer the poll at once")
	}
	n.cut[1] = false
	n.run(n.now.Add(2 * time.Second))
	info = a.Info()
	if info.Polling || info.TxInterval != time.Second {
		t.Fatalf("after final %+v, want tx 1s", info)
	}
	// Detection: B's multiplier 3 x max(our 100ms, B's tx 300ms).
	if info.DetectTime != 900*time.Millisecond {
		t.Fatalf("detect %v", info.DetectTime)
	}
	if n.s[1].Info().TxInterval != 300*time.Millisecond {
		t.Fatalf("B tx %v", n.s[1].Info().TxInterval)
	}
	if b := n.s[1].Info(); b.DetectTime != 3*time.Second {
		t.Fatalf("B detect %v, want 3 x A's 1s", b.DetectTime)
	}
	for i, cs := range n.changes {
		if len(cs) != 0 {
			t.Errorf("session %d changed state during the poll: %v", i, cs)
		}
	}
}

// Periodic packets go out 75% to 100% of the interval apart, or 75% to
// 90% with a multiplier of 1 (§6.8.7).
func TestJitterBounds(t *testing.T) {
	for _, tc := range []struct {
		mult   uint8
		r      Rand
		lo, hi time.Duration
	}{
		{3, fixedRand(0), 750 * time.Millisecond, 750 * time.Millisecond},
		{3, fixedRand(1), time.Second, time.Second},
		{1, fixedRand(1), 900 * time.Millisecond, 900 * time.Millisecond},
		{3, rand.New(rand.NewPCG(7, 7)), 750 * time.Millisecond, time.Second},
		{1, rand.New(rand.NewPCG(8, 8)), 750 * time.Millisecond, 900 * time.Millisecond},
	} {
		s := newTestSession(t, 1, tc.mult, tc.r)
		now := t0
		s.Tick(now)
		var seen []time.Duration
		for range 2000 {
			next := s.Next()
			d := next.Sub(now)
			if d < tc.lo || d > tc.hi {
				t.Fatalf("mult %d: gap %v outside [%v, %v]", tc.mult, d, tc.lo, tc.hi)
			}
			seen = append(seen, d)
			now = next
			if out := s.Tick(now); len(out.Packets) != 1 {
				t.Fatalf("tick sent %d packets", len(out.Packets))
			}
		}
		if tc.lo != tc.hi {
			slices.Sort(seen)
			if spread := seen[len(seen)-1] - seen[0]; spread < (tc.hi-tc.lo)*9/10 {
				t.Errorf("mult %d: jitter spread only %v", tc.mult, spread)
			}
		}
	}
}

func TestStepDiscards(t *testing.T) {
	base := Packet{State: Down, DetectMult: 3, MyDiscr: 9, DesiredMinTx: 1000, RequiredMinRx: 1000}
	for name, mod := range map[string]func(*Packet){
		"other session's discriminator": func(p *Packet) { p.YourDiscr = 42 },
		"authentication":                func(p *Packet) { p.Auth = &Auth{Type: 1, Data: []byte{1, 'x'}} },
		"your discr 0 while init":       func(p *Packet) { p.State = Init },
		"detect mult 0":                 func(p *Packet) { p.DetectMult = 0 },
	} {
		s := newTestSession(t, 1, 3, fixedRand(0))
		s.Tick(t0)
		p := base
		mod(&p)
		out := s.Step(p, t0)
		if len(out.Packets)+len(out.Changes) != 0 || s.State() != Down || s.Info().RemoteDiscr != 0 {
			t.Errorf("%s: session acted on the packet: %v %+v", name, out, s.Info())
		}
	}
}

// A peer in Demand mode gets no periodic packets once both ends are Up,
// but polls are still answered.
func TestPeerDemandMode(t *testing.T) {
	s := newTestSession(t, 1, 3, fixedRand(0))
	s.Tick(t0)
	in := Packet{State: Init, YourDiscr: 1, DetectMult: 3, MyDiscr: 9, DesiredMinTx: 1000, RequiredMinRx: 1000}
	s.Step(in, t0)
	in.State, in.Demand, in.Final = Up, true, true
	s.Step(in, t0)
	if s.State() != Up {
		t.Fatal(s.State())
	}
	now := t0
	for range 10 {
		now = now.Add(100 * time.Millisecond)
		if out := s.Tick(now); len(out.Packets) != 0 {
			t.Fatalf("periodic packet to a peer in demand mode: %v", out.Packets)
		}
		s.Step(in, now) // the peer keeps sending (we are not in demand mode)
	}
	in.Final, in.Poll = false, true
	if out := s.Step(in, now); len(out.Packets) != 1 || !out.Packets[0].Final {
		t.Fatalf("poll not answered: %v", out.Packets)
	}
}

func TestNewSessionRejects(t *testing.T) {
	ok := SessionConfig{LocalDiscr: 1, DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMult: 3, Rand: fixedRand(0)}
	for name, mod := range map[string]func(*SessionConfig){
		"discr 0": func(c *SessionConfig) { c.LocalDiscr = 0 },
		"tx 0":    func(c *SessionConfig) { c.DesiredMinTx = 0 },
		"rx 0":    func(c *SessionConfig) { c.RequiredMinRx = 0 },
		"mult 0":  func(c *SessionConfig) { c.DetectMult = 0 },
		"no rand": func(c *SessionConfig) { c.Rand = nil },
	} {
		c := ok
		mod(&c)
		if _, err := NewSession(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewSession(ok); err != nil {
		t.Fatal(err)
	}
}
