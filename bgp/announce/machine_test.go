package announce

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/bgp"
)

// t0 is the fake clock's origin; tests move time by adding to it.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const ms = time.Millisecond

func testConfig() Config {
	c := Config{
		Regions: []RegionPolicy{
			{Region: "eu", Prefixes: []string{"203.0.113.10/32"}, MED: 20, Prepend: 1,
				Communities: []bgp.Community{bgp.MustParseCommunity("65000:2")}},
		},
		Drain: DrainConfig{Prepend: 2},
	}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// testPrefixes are the bgp section's prefixes.
func testPrefixes() []bgp.Advertisement {
	return []bgp.Advertisement{
		{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Communities: []bgp.Community{bgp.MustParseCommunity("65000:1")}},
		{Prefix: netip.MustParsePrefix("2001:db8::10/128")},
	}
}

// newMachine is a machine without the start hold-down, for the tests of
// everything else (TestStartHoldDown tests it).
func newMachine(region string, drained bool) *Machine {
	c := testConfig()
	m := NewMachine(c, c.Apply(region, testPrefixes()), drained, t0)
	m.hold = 0
	return m
}

// healthy is a region of two nodes, both reachable, in a four-node cluster.
func healthy() Signals {
	return Signals{ListenersUp: true, Region: RegionView{Known: 2, Reachable: 2, AllKnown: 4, AllReachable: 4}}
}

func prefixes(advs []bgp.Advertisement) []string {
	var out []string
	for _, a := range advs {
		out = append(out, a.String())
	}
	return out
}

func wantAdvs(t *testing.T, m *Machine, now time.Time, want ...string) {
	t.Helper()
	got := prefixes(m.Advertisements(now))
	if !slices.Equal(got, want) {
		t.Fatalf("at +%v: advertisements\n got %q\nwant %q", now.Sub(t0), got, want)
	}
}

func wantReasons(t *testing.T, m *Machine, now time.Time, want ...string) {
	t.Helper()
	got := m.Status(now).Reasons
	if !slices.Equal(got, want) {
		t.Fatalf("at +%v: reasons %q, want %q", now.Sub(t0), got, want)
	}
}

const (
	plain4 = "203.0.113.10/32 communities 65000:1"
	plain6 = "2001:db8::10/128"
)

func TestAnnounceOnlyWhenReady(t *testing.T) {
	cases := []struct {
		name   string
		sig    func(*Signals)
		reason string
	}{
		{"listeners down", func(s *Signals) { s.ListenersUp = false }, ReasonListenersDown},
		{"sync not finished", func(s *Signals) { s.Unsynced = []string{"cps"} }, ReasonNotSynced},
		{"isolated from its region", func(s *Signals) { s.Region = RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 1} }, ReasonIsolated},
		{"never joined", func(s *Signals) { s.Region = RegionView{Known: 1, Reachable: 1, AllKnown: 1, AllReachable: 1} }, ReasonIsolated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine("us", false)
			wantAdvs(t, m, t0) // nothing before the first signals
			s := healthy()
			tc.sig(&s)
			m.SetSignals(at(0), s)
			wantAdvs(t, m, at(0))
			wantReasons(t, m, at(0), tc.reason)
			if m.Status(at(0)).Healthy {
				t.Error("healthy")
			}
			// Becoming ready for the first time announces at once.
			m.SetSignals(at(time.Second), healthy())
			wantAdvs(t, m, at(time.Second), plain4, plain6)
			wantReasons(t, m, at(time.Second))
			if st := m.Status(at(time.Second)); !st.Announcing || !st.Healthy {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestSurvivorOfRegionAndSeedAreNotIsolated(t *testing.T) {
	cases := []struct {
		r        RegionView
		isolated bool
	}{
		{RegionView{Known: 2, Reachable: 2, AllKnown: 4, AllReachable: 4}, false},
		{RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 3}, false}, // partner died; the other region backs it
		{RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 2}, true},  // half of the region, half of the cluster
		{RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 1}, true},  // cut off
		{RegionView{Known: 3, Reachable: 2, AllKnown: 3, AllReachable: 2}, false},
		{RegionView{Known: 3, Reachable: 1, AllKnown: 6, AllReachable: 4}, true}, // a minority of its region
		{RegionView{Known: 1, Reachable: 1, AllKnown: 1, AllReachable: 1, Seed: true}, false},
		{RegionView{Known: 1, Reachable: 1, AllKnown: 1, AllReachable: 1}, true},
		{RegionView{Known: 1, Reachable: 1, AllKnown: 3, AllReachable: 1}, false}, // alone in its region by design
	}
	for _, tc := range cases {
		if got := tc.r.Isolated(); got != tc.isolated {
			t.Errorf("%+v: isolated %v, want %v", tc.r, got, tc.isolated)
		}
	}
}

func TestRegionPolicy(t *testing.T) {
	m := newMachine("eu", false)
	m.SetSignals(at(0), healthy())
	wantAdvs(t, m, at(0), "203.0.113.10/32 med 20 communities 65000:1 65000:2 prepend 1", plain6)
}

func TestWithdrawAtOnceAndHoldDown(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), healthy())
	wantAdvs(t, m, at(0), plain4, plain6)

	// Unready: withdrawn on the very input that says so.
	bad := healthy()
	bad.Unsynced = []string{"geo.meta"}
	m.SetSignals(at(10*time.Second), bad)
	wantAdvs(t, m, at(10*time.Second))

	// Ready again: the hold-down (3 s) runs from the moment it recovered.
	m.SetSignals(at(11*time.Second), healthy())
	wantAdvs(t, m, at(11*time.Second))
	wantReasons(t, m, at(11*time.Second), ReasonHoldDown)
	if until := m.Status(at(12 * time.Second)).HoldDownUntil; !until.Equal(at(14 * time.Second)) {
		t.Errorf("hold-down until +%v, want +14s", until.Sub(t0))
	}
	m.SetSignals(at(13*time.Second), healthy())
	wantAdvs(t, m, at(14*time.Second-ms))

	// A flap inside the hold-down starts it over.
	m.SetSignals(at(13500*ms), bad)
	m.SetSignals(at(13600*ms), healthy())
	wantAdvs(t, m, at(16*time.Second))
	wantAdvs(t, m, at(16600*ms), plain4, plain6)
	wantReasons(t, m, at(16600*ms))
}

func TestDrainSequence(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), healthy())
	m.SetLoad(at(0), Load{Started: 100, InFlight: 3})
	if err := m.Drain(at(time.Second)); err != nil {
		t.Fatal(err)
	}
	if !m.DrainRequested() || m.ClusterDrained() || m.Phase() != PhaseShifting {
		t.Fatalf("after Drain: requested %v, cluster drained %v, phase %v", m.DrainRequested(), m.ClusterDrained(), m.Phase())
	}
	// Shifting: the same prefixes with GRACEFUL_SHUTDOWN and the drain
	// prepend (2) added to each prefix's own.
	gshut := []string{"203.0.113.10/32 communities 65000:1 65535:0 prepend 2", "2001:db8::10/128 communities 65535:0 prepend 2"}
	wantAdvs(t, m, at(time.Second), gshut...)
	wantReasons(t, m, at(time.Second), ReasonDrained)

	// Traffic keeps coming: still shifting, whatever the time.
	for s := 2; s <= 10; s++ {
		m.SetLoad(at(time.Duration(s)*time.Second), Load{Started: 100 + uint64(s), InFlight: 3})
	}
	if m.Phase() != PhaseShifting {
		t.Fatalf("phase %v while transactions still start", m.Phase())
	}
	// The rate falls to zero: withdrawn once it has stayed zero for
	// drain.quiet (2 s).
	m.SetLoad(at(11*time.Second), Load{Started: 111, InFlight: 2})
	m.SetLoad(at(12900*ms), Load{Started: 111, InFlight: 2})
	if m.Phase() != PhaseShifting {
		t.Fatalf("phase %v before the quiet period", m.Phase())
	}
	m.SetLoad(at(13*time.Second), Load{Started: 111, InFlight: 2})
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v after the quiet period, want finishing", m.Phase())
	}
	wantAdvs(t, m, at(13*time.Second))
	if m.ClusterDrained() {
		t.Fatal("tags handed over while transactions are in flight")
	}
	// In-flight transactions finish: the tags are handed over.
	m.SetLoad(at(14*time.Second), Load{Started: 111, InFlight: 1})
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v with one in flight", m.Phase())
	}
	m.SetLoad(at(15*time.Second), Load{Started: 111, InFlight: 0})
	if m.Phase() != PhaseDrained || !m.ClusterDrained() {
		t.Fatalf("phase %v, cluster drained %v; want drained", m.Phase(), m.ClusterDrained())
	}
	wantAdvs(t, m, at(15*time.Second))
	// A second Drain changes nothing.
	if err := m.Drain(at(16 * time.Second)); err != nil || m.Phase() != PhaseDrained {
		t.Fatalf("drain again: %v, phase %v", err, m.Phase())
	}

	// Undrain: eligible again and, healthy throughout, announced at once.
	m.Undrain(at(20 * time.Second))
	if m.DrainRequested() || m.ClusterDrained() || m.Phase() != PhaseActive {
		t.Fatalf("after Undrain: requested %v, cluster drained %v, phase %v", m.DrainRequested(), m.ClusterDrained(), m.Phase())
	}
	wantAdvs(t, m, at(20*time.Second), plain4, plain6)
}

func TestDrainTimeouts(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), healthy())
	m.Drain(at(0))
	// Transactions never stop: withdrawn after shift_timeout (30 s).
	for d := time.Second; d < 30*time.Second; d += time.Second {
		m.SetLoad(at(d), Load{Started: uint64(d), InFlight: 5})
	}
	if m.Phase() != PhaseShifting {
		t.Fatalf("phase %v before shift_timeout", m.Phase())
	}
	m.Tick(at(30 * time.Second))
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v after shift_timeout", m.Phase())
	}
	// Something stays in flight: tags handed over after finish_timeout (35 s).
	m.SetLoad(at(40*time.Second), Load{Started: 1, InFlight: 5})
	m.Tick(at(65*time.Second - ms))
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v before finish_timeout", m.Phase())
	}
	m.Tick(at(65 * time.Second))
	if !m.ClusterDrained() {
		t.Fatalf("phase %v after finish_timeout", m.Phase())
	}
}

func TestDrainNeedsFreshReadings(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), healthy())
	m.SetLoad(at(0), Load{})
	m.Drain(at(time.Second))
	// No reading since the drain began: an old idle reading proves
	// nothing, so the drain waits (up to shift_timeout).
	m.Tick(at(5 * time.Second))
	if m.Phase() != PhaseShifting {
		t.Fatalf("phase %v without a reading", m.Phase())
	}
	m.SetLoad(at(5*time.Second), Load{})
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v, want finishing", m.Phase())
	}
	m.Tick(at(6 * time.Second))
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v: handed over without a reading after the withdrawal", m.Phase())
	}
	m.SetLoad(at(5100*ms), Load{})
	if m.Phase() != PhaseDrained {
		t.Fatalf("phase %v, want drained", m.Phase())
	}
}

func TestDrainWhileNotAnnouncing(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), Signals{}) // listeners down: nothing announced
	m.Drain(at(time.Second))
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v, want finishing (no traffic to shift)", m.Phase())
	}
	wantAdvs(t, m, at(time.Second))
	// Becoming healthy while draining announces nothing.
	m.SetSignals(at(2*time.Second), healthy())
	wantAdvs(t, m, at(2*time.Second))
	wantReasons(t, m, at(2*time.Second), ReasonDrained)
}

func TestHealthLostWhileShifting(t *testing.T) {
	m := newMachine("us", false)
	m.SetSignals(at(0), healthy())
	m.Drain(at(0))
	s := healthy()
	s.ListenersUp = false
	m.SetSignals(at(100*ms), s)
	if m.Phase() != PhaseFinishing {
		t.Fatalf("phase %v, want finishing", m.Phase())
	}
	wantAdvs(t, m, at(100*ms))
}

func TestPersistedDrainStaysWithdrawn(t *testing.T) {
	m := newMachine("us", true)
	if !m.ClusterDrained() || !m.DrainRequested() {
		t.Fatal("a node drained before its restart must start drained")
	}
	m.SetSignals(at(0), healthy())
	m.SetLoad(at(0), Load{})
	wantAdvs(t, m, at(time.Minute))
	wantReasons(t, m, at(time.Minute), ReasonDrained)
	m.Undrain(at(time.Minute))
	wantAdvs(t, m, at(time.Minute), plain4, plain6)
}

func TestShutdownWithdrawsEverything(t *testing.T) {
	m := newMachine("us", false)
	vip := bgp.Advertisement{Prefix: netip.MustParsePrefix("203.0.113.20/32")}
	m.SetExtra([]bgp.Advertisement{vip})
	m.SetSignals(at(0), healthy())
	wantAdvs(t, m, at(0), plain4, plain6, "203.0.113.20/32")
	m.Shutdown()
	wantAdvs(t, m, at(0))
	wantReasons(t, m, at(0), ReasonShuttingDown)
	if err := m.Drain(at(0)); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("Drain after Shutdown: %v", err)
	}
}

func TestExtras(t *testing.T) {
	m := newMachine("us", false)
	vip := bgp.Advertisement{Prefix: netip.MustParsePrefix("203.0.113.20/32")}
	dup := bgp.Advertisement{Prefix: netip.MustParsePrefix("203.0.113.10/32"), MED: 99}
	m.SetExtra([]bgp.Advertisement{vip, dup})
	// An owned VIP is announced whenever the listeners are up, even while
	// the node is not synced or is draining: the cluster decides who owns
	// it.
	s := healthy()
	s.Unsynced = []string{"cps"}
	m.SetSignals(at(0), s)
	wantAdvs(t, m, at(0), "203.0.113.20/32")
	m.SetSignals(at(time.Second), healthy())
	wantAdvs(t, m, at(time.Second), plain4, plain6, "203.0.113.20/32") // the anycast path wins
	m.Drain(at(time.Second))
	for _, d := range []time.Duration{2, 4, 5} {
		m.SetLoad(at(d*time.Second), Load{})
	}
	if !m.ClusterDrained() {
		t.Fatalf("phase %v, want drained", m.Phase())
	}
	wantAdvs(t, m, at(5*time.Second), "203.0.113.20/32")
	s = healthy()
	s.ListenersUp = false
	m.SetSignals(at(6*time.Second), s)
	wantAdvs(t, m, at(6*time.Second))
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name, key string
		cfg       Config
	}{
		{"region name", "regions[0].region", Config{Regions: []RegionPolicy{{}}}},
		{"region dup", "regions[1].region", Config{Regions: []RegionPolicy{{Region: "a"}, {Region: "a"}}}},
		{"region prefix", "regions[0].prefixes[0]", Config{Regions: []RegionPolicy{{Region: "a", Prefixes: []string{"203.0.113.10"}}}}},
		{"host bits", "regions[0].prefixes[0]", Config{Regions: []RegionPolicy{{Region: "a", Prefixes: []string{"203.0.113.10/24"}}}}},
		{"region prepend", "regions[0].prepend", Config{Regions: []RegionPolicy{{Region: "a", Prepend: 9}}}},
		{"drain prepend", "drain.prepend", Config{Drain: DrainConfig{Prepend: 9}}},
		{"poll", "poll_interval", Config{PollInterval: time.Second}},
		{"quiet", "drain.quiet", Config{Drain: DrainConfig{Quiet: time.Minute}}},
		{"cap", "required_caps[0]", Config{RequiredCaps: []string{""}}},
		{"negative start hold", "start_hold_down", Config{StartHoldDown: -time.Second}},
		{"max below hold", "max_hold_down", Config{HoldDown: 10 * time.Second, MaxHoldDown: 5 * time.Second}},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("%s: got %v, want an error at %s", tc.name, err, tc.key)
		}
	}
	c := Config{}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.HoldDown != 3*time.Second || c.PollInterval != 100*ms || c.Drain.Quiet != 2*time.Second ||
		c.Drain.ShiftTimeout != 30*time.Second || c.Drain.FinishTimeout != 35*time.Second || c.ShutdownTimeout != 10*time.Second ||
		c.StartHoldDown != time.Second || c.RestartWindow != 5*time.Minute || c.MaxHoldDown != time.Minute {
		t.Errorf("defaults %+v", c)
	}
	if c.HasPrepend() || !testConfig().HasPrepend() {
		t.Error("HasPrepend")
	}
	tc := testConfig()
	if err := tc.CheckPrefixes(testPrefixes()); err != nil {
		t.Error(err)
	}
	var fe *FieldError
	if err := tc.CheckPrefixes(testPrefixes()[1:]); !errors.As(err, &fe) || fe.Key != "regions[0].prefixes[0]" {
		t.Errorf("a policy for a prefix that is not announced: %v", err)
	}
}

func TestPhaseNames(t *testing.T) {
	var names []string
	for p := PhaseActive; p <= PhaseDrained; p++ {
		names = append(names, p.String())
	}
	if got := strings.Join(names, ","); got != "active,shifting,finishing,drained" {
		t.Errorf("phases %s", got)
	}
}

func TestExplain(t *testing.T) {
	m := newMachine("us", false)
	s := healthy()
	s.Unsynced = []string{"cps", "geo.meta"}
	s.Region = RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 2}
	m.SetSignals(at(0), s)
	m.Drain(at(0))
	got := m.Status(at(0)).Explain()
	want := []string{"not_synced: cps, geo.meta", "isolated: reaches 1 of 2 nodes of its region, 2 of 4 in the cluster", "drained: finishing"}
	if !slices.Equal(got, want) {
		t.Errorf("Explain\n got %q\nwant %q", got, want)
	}
}

func TestFirstHoldDown(t *testing.T) {
	c := testConfig() // hold_down 3 s, start_hold_down 1 s, max_hold_down 60 s
	for n, want := range []time.Duration{time.Second, 3 * time.Second, 6 * time.Second, 12 * time.Second,
		24 * time.Second, 48 * time.Second, time.Minute, time.Minute} {
		if got := c.FirstHoldDown(n); got != want {
			t.Errorf("FirstHoldDown(%d) = %v, want %v", n, got, want)
		}
	}
	if got := c.FirstHoldDown(1000); got != time.Minute {
		t.Errorf("FirstHoldDown(1000) = %v: the cap must hold", got)
	}
}

// A fresh start announces only once healthy for start_hold_down, a restart
// after unclean ones for longer, and a flap inside that hold-down never
// shortens it to the ordinary one.
func TestStartHoldDown(t *testing.T) {
	c := testConfig()
	m := NewMachine(c, c.Apply("us", testPrefixes()), false, t0)
	m.SetSignals(at(0), healthy())
	wantAdvs(t, m, at(999*ms))
	wantReasons(t, m, at(999*ms), ReasonHoldDown)
	m.Tick(at(time.Second))
	wantAdvs(t, m, at(time.Second), plain4, plain6)

	// Third unclean start within the window: 3 s x 2^2.
	m = NewMachine(c, c.Apply("us", testPrefixes()), false, t0)
	m.SetRestarts(3)
	m.SetSignals(at(0), healthy())
	st := m.Status(at(time.Second))
	if !st.HoldDownUntil.Equal(at(12*time.Second)) || st.Restarts != 3 {
		t.Errorf("status %+v, want a hold-down until +12s after 3 restarts", st)
	}
	if ex := st.Explain(); len(ex) != 1 || !strings.Contains(ex[0], "3 unclean restarts") {
		t.Errorf("explain %q", ex)
	}
	bad := healthy()
	bad.ListenersUp = false
	m.SetSignals(at(5*time.Second), bad)
	m.SetSignals(at(6*time.Second), healthy())
	wantAdvs(t, m, at(17*time.Second))
	m.Tick(at(18 * time.Second))
	wantAdvs(t, m, at(18*time.Second), plain4, plain6)

	// Past it, a failure takes the ordinary hold-down.
	m.SetSignals(at(20*time.Second), bad)
	m.SetSignals(at(21*time.Second), healthy())
	wantAdvs(t, m, at(24*time.Second-ms))
	wantAdvs(t, m, at(24*time.Second), plain4, plain6)
}

func TestStateRestart(t *testing.T) {
	const window = 5 * time.Minute
	cases := []struct {
		name   string
		starts []time.Duration // before now
		want   int
	}{
		{"first start", nil, 0},
		{"one crash", []time.Duration{10 * time.Second}, 1},
		{"crash loop", []time.Duration{40 * time.Second, 30 * time.Second, 20 * time.Second}, 3},
		{"old ones expire", []time.Duration{10 * time.Minute, 6 * time.Minute, 10 * time.Second}, 1},
		{"a crash long after the start", []time.Duration{48 * time.Hour}, 1},
	}
	now := at(time.Hour)
	for _, tc := range cases {
		var st State
		for _, d := range tc.starts {
			st.Starts = append(st.Starts, now.Add(-d))
		}
		st, n := st.Restart(now, window)
		if n != tc.want {
			t.Errorf("%s: %d restarts, want %d", tc.name, n, tc.want)
		}
		if last := st.Starts[len(st.Starts)-1]; !last.Equal(now) {
			t.Errorf("%s: this start not recorded: %v", tc.name, st.Starts)
		}
	}
	var st State
	for i := range 100 {
		st, _ = st.Restart(at(time.Duration(i)*time.Second), window)
	}
	if len(st.Starts) != maxStarts {
		t.Errorf("%d starts kept, want at most %d", len(st.Starts), maxStarts)
	}
}
