package cps

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fakeClock is a settable clock. It starts on a second boundary.
type fakeClock struct{ t time.Time }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func (c *fakeClock) at(d time.Duration) bool {
	c.t = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).Add(d)
	return true
}

func newLimiter(t testing.TB, cfg Config, id uint32, region string, clk *fakeClock, opts ...Option) *Limiter {
	t.Helper()
	l, err := New(cfg, id, region, append([]Option{WithClock(clk.now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func checkN(l *Limiter, req Request, n int) (ok int, last Decision) {
	for range n {
		d := l.Check(req)
		if d.Allowed {
			ok++
		} else {
			last = d
		}
	}
	return ok, last
}

func TestCheckGlobal(t *testing.T) {
	clk := newClock()
	l := newLimiter(t, Config{Limits: []LimitConfig{{Name: "global", Rate: 10}}}, 1, "r1", clk)
	clk.at(50 * time.Millisecond)
	ok, d := checkN(l, Request{}, 15)
	if ok != 10 {
		t.Fatalf("%d of 15 passed a limit of 10/s", ok)
	}
	if d != (Decision{Limit: "global", Code: 503, RetryAfter: time.Second}) {
		t.Errorf("refusal: %+v", d)
	}
	// The window slides: the calls of 12:00:00.050 leave it at
	// 12:00:01.050, to the sub-slot (10 ms), not before.
	clk.at(1045 * time.Millisecond)
	if ok, _ := checkN(l, Request{}, 1); ok != 0 {
		t.Error("passed while the window still held 10 calls")
	}
	clk.at(1061 * time.Millisecond)
	if ok, _ := checkN(l, Request{}, 12); ok != 10 {
		t.Errorf("%d passed once the first calls left the window, want 10", ok)
	}
	st := l.Status()[0]
	if st.Rejected != 8 || st.Rate != 10 {
		t.Errorf("status %+v", st)
	}
}

func TestSelectors(t *testing.T) {
	clk := newClock()
	l := newLimiter(t, Config{Limits: []LimitConfig{
		{Name: "ip", Rate: 2, Selector: SourceIP},
		{Name: "domain", Rate: 3, Selector: FromDomain},
		{Name: "user", Rate: 1, Selector: AuthUser, Response: ResponseConfig{Code: 486}},
	}}, 1, "r1", clk)
	// Per source IP: 2 each, independently.
	for _, ip := range []string{"192.0.2.1", "192.0.2.2"} {
		if ok, d := checkN(l, Request{SourceIP: ip}, 3); ok != 2 || d.Limit != "ip" {
			t.Errorf("%s: %d passed, refusal %+v", ip, ok, d)
		}
	}
	// Per From domain, across source IPs.
	ok := 0
	for i := range 5 {
		if l.Check(Request{SourceIP: fmt.Sprintf("198.51.100.%d", i), FromDomain: "example.com"}).Allowed {
			ok++
		}
	}
	if ok != 3 {
		t.Errorf("from_domain: %d passed, want 3", ok)
	}
	// Per authenticated user; no user, no limit.
	if ok, d := checkN(l, Request{AuthUser: "alice", SourceIP: "203.0.113.9"}, 2); ok != 1 || d.Code != 486 || d.RetryAfter != 0 {
		t.Errorf("auth_user: %d passed, refusal %+v", ok, d)
	}
	if ok, _ := checkN(l, Request{SourceIP: "203.0.113.10"}, 2); ok != 2 {
		t.Errorf("a request without a user was limited by auth_user")
	}
	st := l.Status()
	if st[0].Keys != 5+2+2 || st[2].Keys != 1 {
		t.Errorf("keys: ip %d user %d", st[0].Keys, st[2].Keys)
	}
	top, err := l.Top("ip", 2)
	if err != nil || len(top) != 2 || top[0].Rate != 2 {
		t.Errorf("top: %v %v", top, err)
	}
	if _, err := l.Top("nope", 1); err == nil {
		t.Error("Top of an unknown limit")
	}
}

func TestRegionLimit(t *testing.T) {
	cfg := Config{Limits: []LimitConfig{{Name: "eu", Rate: 1, Region: "eu-west"}}}
	clk := newClock()
	eu := newLimiter(t, cfg, 1, "eu-west", clk)
	us := newLimiter(t, cfg, 2, "us-east", clk)
	if ok, _ := checkN(eu, Request{}, 3); ok != 1 {
		t.Errorf("eu node: %d passed, want 1", ok)
	}
	if ok, _ := checkN(us, Request{}, 3); ok != 3 {
		t.Errorf("us node is not in the limit's region, yet %d of 3 passed", ok)
	}
	if ok, _ := checkN(us, Request{Region: "eu-west"}, 3); ok != 1 {
		t.Errorf("a call attributed to eu-west on the us node: %d passed, want 1", ok)
	}
	// Only the region's nodes count: the us node's frames carry the
	// limit only because a call was attributed to the region.
	eu.NodeUp(2, "us-east")
	eu.NodeUp(3, "eu-west")
	eu.NodeDown(3)
	if st := eu.Status()[0]; st.Share != 0.5 {
		t.Errorf("split share of eu-west with one of two eu nodes down: %v", st.Share)
	}
}

func TestMultipleLimits(t *testing.T) {
	clk := newClock()
	l := newLimiter(t, Config{Limits: []LimitConfig{
		{Name: "global", Rate: 100},
		{Name: "ip", Rate: 2, Selector: SourceIP, Response: ResponseConfig{Code: 480, RetryAfter: 5 * time.Second}},
	}}, 1, "r1", clk)
	ok, d := checkN(l, Request{SourceIP: "192.0.2.1"}, 5)
	if ok != 2 || d != (Decision{Limit: "ip", Code: 480, RetryAfter: 5 * time.Second}) {
		t.Fatalf("%d passed, refusal %+v", ok, d)
	}
	st := l.Status()
	if st[0].Rate != 2 || st[0].Rejected != 0 || st[1].Rejected != 3 {
		t.Errorf("a call refused by one limit must not count in another: %+v", st)
	}
}

func TestTaildrop(t *testing.T) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "td", Rate: 10, Algorithm: Taildrop}, {Name: "sw", Rate: 10, Region: "x"}}}
	l := newLimiter(t, cfg, 1, "r1", clk)
	sw := newLimiter(t, Config{Limits: []LimitConfig{{Name: "sw", Rate: 10}}}, 1, "r1", clk)
	clk.at(900 * time.Millisecond)
	checkN(l, Request{}, 10)
	checkN(sw, Request{}, 10)
	clk.at(1000 * time.Millisecond)
	// A new fixed window: the count starts again (two windows' worth can
	// pass around the boundary, which is what taildrop means).
	if ok, _ := checkN(l, Request{}, 11); ok != 10 {
		t.Errorf("taildrop: %d passed in the new window, want 10", ok)
	}
	if ok, _ := checkN(sw, Request{}, 1); ok != 0 {
		t.Error("sliding: passed 100 ms after the window filled")
	}
}

func TestRED(t *testing.T) {
	clk := newClock()
	var draws []float64
	rnd := func() float64 {
		if len(draws) == 0 {
			t.Fatal("RED drew a random number below 80% of the limit or past it")
		}
		v := draws[0]
		draws = draws[1:]
		return v
	}
	l := newLimiter(t, Config{Limits: []LimitConfig{{Name: "red", Rate: 100, Algorithm: RED}}}, 1, "r1", clk, WithRand(rnd))
	// Up to 80% of the limit nothing is dropped, and nothing drawn.
	if ok, _ := checkN(l, Request{}, 81); ok != 81 {
		t.Fatalf("%d of 81 passed up to 80%%", ok)
	}
	// At 81% the drop probability is (0.81-0.8)/0.2 = 0.05.
	draws = []float64{0.04, 0.06}
	if l.Check(Request{}).Allowed {
		t.Error("draw 0.04 < p 0.05: must drop")
	}
	if !l.Check(Request{}).Allowed {
		t.Error("draw 0.06 > p 0.05: must pass")
	}
	// At 91%: p = 0.55.
	draws = slices.Repeat([]float64{0.999}, 9)
	checkN(l, Request{}, 9)
	draws = []float64{0.5, 0.6}
	if d := l.Check(Request{}); d.Allowed || d.Limit != "red" {
		t.Errorf("draw 0.5 < p 0.55: must drop, got %+v", d)
	}
	if !l.Check(Request{}).Allowed {
		t.Error("draw 0.6 > p 0.55: must pass")
	}
	// Up to the limit, then hard refusals with no draw.
	draws = slices.Repeat([]float64{0.9999}, 8)
	if ok, _ := checkN(l, Request{}, 8); ok != 8 {
		t.Errorf("%d of the last 8 passed", ok)
	}
	if ok, _ := checkN(l, Request{}, 5); ok != 0 || l.Status()[0].Rate != 100 {
		t.Errorf("RED passed %d over the limit", ok)
	}
}

func TestKeysBounded(t *testing.T) {
	clk := newClock()
	l := newLimiter(t, Config{MaxKeys: 100, KeyIdle: 10 * time.Second,
		Limits: []LimitConfig{{Name: "ip", Rate: 5, Selector: SourceIP}}}, 1, "r1", clk)
	hot := Request{SourceIP: "192.0.2.1"}
	for i := range 1000 {
		l.Check(Request{SourceIP: fmt.Sprintf("10.0.%d.%d", i/256, i%256)})
		if i%50 == 0 {
			l.Check(hot) // recently used: survives the evictions
		}
	}
	st, s := l.Status()[0], l.Stats()
	if st.Keys != 100 || s.KeysEvicted != 901 {
		t.Errorf("keys %d (max 100), evicted %d", st.Keys, s.KeysEvicted)
	}
	if n := len(l.limits[0].keys.m); n != 100 {
		t.Errorf("map holds %d keys", n)
	}
	if ok, _ := checkN(l, hot, 5); ok != 0 {
		t.Errorf("the hot key lost its count (evicted?): %d more passed", ok)
	}
	// Idle keys expire on the next flush after key_idle.
	clk.add(11 * time.Second)
	l.Flush()
	if st, s := l.Status()[0], l.Stats(); st.Keys != 0 || s.KeysExpired != 100 {
		t.Errorf("after key_idle: %d keys, %d expired", st.Keys, s.KeysExpired)
	}
}

// mesh wires limiters together synchronously.
type mesh struct {
	ls  []*Limiter
	cut map[[2]int]bool
}

func newMesh(t testing.TB, cfg Config, n int, clk *fakeClock) *mesh {
	m := &mesh{cut: map[[2]int]bool{}}
	for i := range n {
		m.ls = append(m.ls, newLimiter(t, cfg, uint32(i+1), "r1", clk))
	}
	for i, a := range m.ls {
		for j := range m.ls {
			if i != j {
				a.NodeUp(uint32(j+1), "r1")
			}
		}
	}
	return m
}

// exchange has every node flush and every other node apply.
func (m *mesh) exchange(t testing.TB) {
	t.Helper()
	for i, a := range m.ls {
		body := a.FlushNow()
		if body == nil {
			continue
		}
		for j, b := range m.ls {
			if i != j && !m.cut[[2]int{i, j}] {
				if err := b.Apply(uint32(i+1), body); err != nil {
					t.Fatalf("apply %d→%d: %v", i+1, j+1, err)
				}
			}
		}
	}
}

func TestSetRateConverges(t *testing.T) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "other", Rate: 10}}}
	m := newMesh(t, cfg, 3, clk)
	a, b, c := m.ls[0], m.ls[1], m.ls[2]
	// Node 3 is cut off while two operators change the rate at once.
	for _, l := range [][2]int{{0, 2}, {1, 2}, {2, 0}, {2, 1}} {
		m.cut[l] = true
	}
	if err := a.SetRate("global", 50); err != nil {
		t.Fatal(err)
	}
	if err := b.SetRate("global", 70); err != nil { // same instant: the higher node id wins
		t.Fatal(err)
	}
	clk.add(time.Millisecond)
	if err := c.SetRate("other", 20); err != nil {
		t.Fatal(err)
	}
	m.exchange(t)
	rate := func(l *Limiter, i int) float64 { return l.Status()[i].Limit }
	if rate(a, 0) != 70 || rate(b, 0) != 70 {
		t.Errorf("concurrent changes did not converge: a %v b %v", rate(a, 0), rate(b, 0))
	}
	if rate(c, 0) != 100 || rate(a, 1) != 10 {
		t.Errorf("the cut-off node saw the change, or its own leaked")
	}
	// Heal: the membership says up again, and every node resends its
	// run-time rates.
	m.cut = map[[2]int]bool{}
	for i, l := range m.ls {
		for j := range m.ls {
			if i != j {
				l.NodeDown(uint32(j + 1))
				l.NodeUp(uint32(j+1), "r1")
			}
		}
	}
	m.exchange(t)
	for i, l := range m.ls {
		if rate(l, 0) != 70 || rate(l, 1) != 20 {
			t.Errorf("node %d after heal: global %v other %v", i+1, rate(l, 0), rate(l, 1))
		}
	}
	// A later change wins everywhere.
	clk.add(time.Second)
	if err := c.SetRate("global", 30); err != nil {
		t.Fatal(err)
	}
	m.exchange(t)
	for i, l := range m.ls {
		if rate(l, 0) != 30 {
			t.Errorf("node %d: %v", i+1, rate(l, 0))
		}
	}
	if err := a.SetRate("nope", 1); err == nil {
		t.Error("SetRate of an unknown limit")
	}
	if err := a.SetRate("global", 0.5); err == nil {
		t.Error("SetRate below one call per window")
	}
}

func TestSharedWindow(t *testing.T) {
	// Two nodes share one limit: what one admits, the other sees.
	clk := newClock()
	m := newMesh(t, Config{PartitionPolicy: Full, Limits: []LimitConfig{{Name: "global", Rate: 100}}}, 2, clk)
	a, b := m.ls[0], m.ls[1]
	clk.at(10 * time.Millisecond)
	if ok, _ := checkN(a, Request{}, 70); ok != 70 {
		t.Fatal(ok)
	}
	m.exchange(t)
	clk.add(5 * time.Millisecond)
	if ok, _ := checkN(b, Request{}, 50); ok != 30 {
		t.Errorf("b passed %d with 70 of 100 taken on a", ok)
	}
	m.exchange(t)
	if st := a.Status()[0]; st.Rate != 100 {
		t.Errorf("platform rate on a: %v", st.Rate)
	}
	// a dies: its calls stay in the window until they age out.
	b.NodeDown(1)
	if ok, _ := checkN(b, Request{}, 5); ok != 0 {
		t.Errorf("b passed %d after a's death: a's accepted calls must still count", ok)
	}
	clk.at(1100 * time.Millisecond)
	if ok, _ := checkN(b, Request{}, 150); ok != 100 {
		t.Errorf("b passed %d once a's calls aged out, want 100 (full policy)", ok)
	}
}

// TestStallGuard: a node whose clock jumped between two calls into it
// (the scheduler froze it) refuses new calls until every peer it has heard
// from has sent a frame from no more than 100 ms before it resumed: its
// view is as old as the stall. A peer it never heard from (no cps section)
// does not hold it up, nor one that stays silent for over a second.
func TestStallGuard(t *testing.T) {
	clk := newClock()
	m := newMesh(t, Config{PartitionPolicy: Full, Limits: []LimitConfig{{Name: "global", Rate: 100}}}, 3, clk)
	a, b, c := m.ls[0], m.ls[1], m.ls[2]
	a.NodeUp(4, "r1") // never sends
	clk.at(10 * time.Millisecond)
	m.exchange(t)
	if ok, _ := checkN(a, Request{}, 1); ok != 1 {
		t.Fatal("refused before any stall")
	}
	// a is frozen from 10 to 310 ms; b and c send frames meanwhile, which
	// queue up for it.
	clk.at(260 * time.Millisecond)
	fromB, fromC := b.Flush(), c.Flush()
	if fromB == nil || fromC == nil {
		t.Fatal("no frame due after 250 ms without one")
	}
	clk.at(310 * time.Millisecond)
	if ok, d := checkN(a, Request{}, 1); ok != 0 || d.Limit != "global" {
		t.Fatalf("admitted on a view 300 ms old (%+v)", d)
	}
	if n := a.Stats().Stalls; n != 1 {
		t.Errorf("%d stalls counted, want 1", n)
	}
	if err := a.Apply(2, fromB); err != nil {
		t.Fatal(err)
	}
	if ok, _ := checkN(a, Request{}, 1); ok != 0 {
		t.Fatal("admitted before hearing from c")
	}
	if err := a.Apply(3, fromC); err != nil {
		t.Fatal(err)
	}
	if ok, _ := checkN(a, Request{}, 1); ok != 1 {
		t.Fatal("still refusing with fresh frames from every peer")
	}
	if st := a.Status()[0]; st.Rejected != 2 {
		t.Errorf("%d refusals counted, want 2", st.Rejected)
	}

	// Another stall; c goes silent (dead, not declared yet): a refuses for
	// at most a second.
	clk.add(200 * time.Millisecond)
	for i := range 22 {
		if err := a.Apply(2, b.FlushNow()); err != nil {
			t.Fatal(err)
		}
		if ok, _ := checkN(a, Request{}, 1); ok != 0 && i < 20 {
			t.Fatalf("admitted without hearing from c, %d ms after the stall", 50*i)
		} else if ok != 1 && i == 21 {
			t.Error("still refusing 1.05 s after the stall")
		}
		clk.add(50 * time.Millisecond)
	}
}

func TestSplitPolicy(t *testing.T) {
	clk := newClock()
	m := newMesh(t, Config{Limits: []LimitConfig{{Name: "global", Rate: 90}}}, 3, clk)
	a := m.ls[0]
	a.NodeDown(3)
	if st := a.Status()[0]; st.Share != 2.0/3 {
		t.Errorf("share with one of three down: %v", st.Share)
	}
	if ok, _ := checkN(a, Request{}, 100); ok != 60 {
		t.Errorf("split: %d passed, want 2/3 of 90", ok)
	}
	// The operator removes the dead node: its share comes back.
	a.Forget(3)
	clk.add(time.Millisecond)
	if ok, _ := checkN(a, Request{}, 100); ok != 30 {
		t.Errorf("after Forget: %d more passed, want 30", ok)
	}
	if ids := a.Peers(); !slices.Equal(ids, []uint32{2}) {
		t.Errorf("peers %v", ids)
	}
}

func TestSnapshotOnJoin(t *testing.T) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "ip", Rate: 5, Selector: SourceIP}}}
	m := newMesh(t, cfg, 2, clk)
	a, b := m.ls[0], m.ls[1]
	clk.at(20 * time.Millisecond)
	checkN(a, Request{SourceIP: "192.0.2.1"}, 3)
	checkN(a, Request{}, 57)
	clk.add(130 * time.Millisecond)
	checkN(b, Request{SourceIP: "192.0.2.1"}, 2)
	checkN(b, Request{}, 30)
	m.exchange(t)
	if err := a.SetRate("ip", 4); err != nil {
		t.Fatal(err)
	}
	m.exchange(t)
	// Node 3 joins with a's snapshot.
	c := newLimiter(t, cfg, 3, "r1", clk)
	c.NodeUp(1, "r1")
	c.NodeUp(2, "r1")
	for _, rec := range a.Snapshot() {
		if err := c.ApplySnapshot(1, rec); err != nil {
			t.Fatal(err)
		}
	}
	want, got := a.Status(), c.Status()
	if got[0].Rate != want[0].Rate || got[0].Rate != 92 || got[1].Limit != 4 || got[1].Rate != want[1].Rate {
		t.Errorf("joiner sees %+v, donor %+v", got, want)
	}
	clk.add(10 * time.Millisecond)
	if ok, _ := checkN(c, Request{}, 20); ok != 8 {
		t.Errorf("joiner passed %d, the window had room for 8", ok)
	}
	if ok, _ := checkN(c, Request{SourceIP: "192.0.2.1"}, 2); ok != 0 {
		t.Errorf("joiner passed %d for a key at its (run-time) limit", ok)
	}
	// A record about the joiner itself (a previous life) is harmless.
	for _, rec := range c.Snapshot() {
		if err := c.ApplySnapshot(2, rec); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApplyGarbage(t *testing.T) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "ip", Rate: 5, Selector: SourceIP}}}
	m := newMesh(t, cfg, 2, clk)
	a, b := m.ls[0], m.ls[1]
	checkN(a, Request{SourceIP: "192.0.2.1"}, 3)
	a.SetRate("global", 90)
	valid := a.FlushNow()
	snap := a.Snapshot()
	before := b.Status()
	r := rand.New(rand.NewPCG(3, 4))
	bad := 0
	try := func(body []byte) {
		if b.Apply(1, body) != nil {
			bad++
		}
		if b.ApplySnapshot(1, body) != nil {
			bad++
		}
	}
	try(nil)
	for i := range len(valid) {
		try(valid[:i]) // every truncation
	}
	for range 2000 {
		g := make([]byte, r.IntN(200))
		for i := range g {
			g[i] = byte(r.Uint32())
		}
		try(g)
		f := slices.Clone(valid)
		f[r.IntN(len(f))] ^= byte(1 + r.IntN(255)) // one corrupted byte
		_ = b.Apply(1, f)
	}
	_ = b.Handle(1, 99, valid)
	s := b.Stats()
	if s.BadFrames+s.SkewedFrames < uint64(bad) || bad < 2*len(valid) {
		t.Errorf("refused %d, counted %d malformed + %d skewed", bad, s.BadFrames, s.SkewedFrames)
	}
	_ = before
	// The limiter still works afterwards (a corrupted send time may have
	// skewed the clock estimate for up to 2 s).
	clk.add(3 * time.Second)
	checkN(a, Request{SourceIP: "192.0.2.1"}, 1)
	if err := b.Apply(1, a.FlushNow()); err != nil {
		t.Fatal(err)
	}
	for _, rec := range a.Snapshot() {
		if err := b.ApplySnapshot(1, rec); err != nil {
			t.Fatal(err)
		}
	}
	_ = snap
	// Another slot length is refused.
	other := newLimiter(t, Config{Slot: 50 * time.Millisecond, Limits: cfg.Limits}, 3, "r1", clk)
	other.Check(Request{})
	if err := b.Apply(3, other.FlushNow()); err == nil {
		t.Error("a frame with another slot length was applied")
	}
}

func FuzzApply(f *testing.F) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "ip", Rate: 5, Selector: SourceIP}}}
	a := newLimiter(f, cfg, 1, "r1", clk)
	checkN(a, Request{SourceIP: "192.0.2.1"}, 3)
	a.SetRate("ip", 7)
	f.Add(a.FlushNow())
	for _, rec := range a.Snapshot() {
		f.Add(rec)
	}
	f.Add([]byte{1, 0, 0, 0, 100})
	f.Fuzz(func(t *testing.T, body []byte) {
		b := newLimiter(t, cfg, 2, "r1", clk)
		_ = b.Apply(1, body)
		_ = b.ApplySnapshot(1, body)
		b.Check(Request{SourceIP: "192.0.2.1"})
		b.Status()
		b.Flush()
	})
}

func TestCheckAllocs(t *testing.T) {
	clk := newClock()
	m := newMesh(t, Config{Limits: []LimitConfig{{Name: "global", Rate: 1e6}}}, 9, clk)
	l := m.ls[0]
	for range 3 {
		for _, o := range m.ls {
			checkN(o, Request{}, 100)
		}
		m.exchange(t)
		clk.add(30 * time.Millisecond)
	}
	if n := testing.AllocsPerRun(1000, func() { l.Check(Request{}) }); n != 0 {
		t.Errorf("Check allocates %v times for a global limit", n)
	}
}

// BenchmarkCheck measures Check on a global limit with 8 peers reporting,
// the clock moving on (slot changes and fresh peer frames included).
func BenchmarkCheck(b *testing.B) {
	clk := newClock()
	m := newMesh(b, Config{Limits: []LimitConfig{{Name: "global", Rate: 1e7}}}, 9, clk)
	l := m.ls[0]
	for range 5 {
		for _, o := range m.ls {
			checkN(o, Request{}, 100)
		}
		m.exchange(b)
		clk.add(50 * time.Millisecond)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Check(Request{})
		if i++; i%1000 == 0 {
			clk.add(time.Millisecond) // 1 µs a call: a slot every 100k calls
		}
	}
}

// BenchmarkCheckKeyed is a global and a per-source-IP limit over 10000
// source addresses.
func BenchmarkCheckKeyed(b *testing.B) {
	clk := newClock()
	l := newLimiter(b, Config{Limits: []LimitConfig{{Name: "global", Rate: 1e7}, {Name: "ip", Rate: 1e4, Selector: SourceIP}}}, 1, "r1", clk)
	ips := make([]string, 10000)
	for i := range ips {
		ips[i] = fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Check(Request{SourceIP: ips[i%len(ips)]})
		if i++; i%1000 == 0 {
			clk.add(time.Millisecond)
		}
	}
}
