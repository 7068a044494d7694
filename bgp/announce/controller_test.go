package announce

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inputs are the controller's fake inputs, changed by the test while the
// controller polls them.
type inputs struct {
	mu       sync.Mutex
	sig      Signals
	load     Load
	drained  []bool // every SetDrained
	draining []bool // every SetDraining
	failSet  error
}

func (in *inputs) health() Signals {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.sig
}

func (in *inputs) getLoad() Load {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.load
}

func (in *inputs) set(f func(*inputs)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f(in)
}

func (in *inputs) SetDrained(d bool) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.drained = append(in.drained, d)
	return nil
}

func (in *inputs) SetDraining(d bool) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.draining = append(in.draining, d)
	return nil
}

func (in *inputs) drainings() []bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.draining)
}

func (in *inputs) drains() []bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.drained)
}

// rig is a controller on a bgp.Fake, running in a synctest bubble.
type rig struct {
	t    *testing.T
	c    *Controller
	sp   *bgp.Fake
	in   *inputs
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan struct{}
}

func newRig(t *testing.T, dir string) *rig {
	r := &rig{t: t, sp: bgp.NewFake(), in: &inputs{sig: healthy()}, reg: prometheus.NewRegistry()}
	c, err := New(testConfig(), Deps{
		Speaker: r.sp, Health: r.in.health, Load: r.in.getLoad, Cluster: r.in,
		Prefixes: testPrefixes(), Region: "us", StateDir: dir,
	}, WithRegisterer(r.reg))
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan struct{})
	go func() { c.Run(ctx); close(r.done) }()
	synctest.Wait()
	return r
}

func (r *rig) close() {
	r.stop()
	<-r.done
}

// announced is the fake speaker's current set, as strings.
func (r *rig) announced() []string { return prefixes(r.sp.Announced()) }

// waitFor advances the bubble's clock poll by poll until the announced set
// is want, and returns how long that took. It fails after limit.
func (r *rig) waitFor(limit time.Duration, want ...string) time.Duration {
	r.t.Helper()
	start := time.Now()
	for {
		synctest.Wait()
		if got := r.announced(); slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			r.t.Fatalf("after %v: announced %q, want %q", time.Since(start), r.announced(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestControllerGatesAndHoldDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, "")
		defer r.close()
		// Healthy from the first poll: announced once the start
		// hold-down (1 s) has run.
		if d := r.waitFor(2*time.Second, plain4, plain6); d < time.Second || d > 1200*time.Millisecond {
			t.Errorf("first announcement %v after the start, want the 1 s start hold-down", d)
		}

		r.in.set(func(in *inputs) { in.sig.Region.Reachable, in.sig.Region.AllReachable = 1, 1 })
		if d := r.waitFor(time.Second, nil...); d >= time.Second {
			t.Errorf("withdrawn %v after becoming isolated, want < 1s", d)
		}
		if got := testutil.ToFloat64(r.c.m.readiness.WithLabelValues(ReasonIsolated)); got != 1 {
			t.Errorf("anyedge_readiness{reason=isolated} %v", got)
		}
		if got := testutil.ToFloat64(r.c.m.ready); got != 0 {
			t.Errorf("anyedge_bgp_announce_ready %v", got)
		}

		r.in.set(func(in *inputs) { in.sig = healthy() })
		d := r.waitFor(5*time.Second, plain4, plain6)
		if d < 3*time.Second || d > 3200*time.Millisecond {
			t.Errorf("re-announced %v after recovering, want the 3 s hold-down", d)
		}
		if got := testutil.ToFloat64(r.c.m.ready); got != 1 {
			t.Errorf("anyedge_bgp_announce_ready %v", got)
		}
		if problems, err := testutil.GatherAndLint(r.reg); err != nil || len(problems) > 0 {
			t.Errorf("promlint: %v %v", err, problems)
		}
	})
}

func TestControllerRetriesFailedSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := bgp.NewFake()
		sp.FailNext(errors.New("server busy"))
		in := &inputs{sig: healthy()}
		c, err := New(testConfig(), Deps{Speaker: sp, Health: in.health, Prefixes: testPrefixes()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		synctest.Wait()
		if rep := c.Report(); rep.LastError != "server busy" || len(sp.Announced()) != 0 {
			t.Errorf("after a failed set: %+v", rep)
		}
		time.Sleep(1100 * time.Millisecond) // past the start hold-down
		synctest.Wait()
		if got := prefixes(sp.Announced()); !slices.Equal(got, []string{plain6, plain4}) && !slices.Equal(got, []string{plain4, plain6}) {
			t.Errorf("not retried: %q", got)
		}
		if rep := c.Report(); rep.LastError != "" || len(rep.Announced) != 2 || !rep.Announcing {
			t.Errorf("report %+v", rep)
		}
		cancel()
		<-done
	})
}

func TestControllerDrainAndRestart(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, dir)
		r.waitFor(2*time.Second, plain4, plain6)
		r.in.set(func(in *inputs) { in.load = Load{Started: 7, InFlight: 1} })

		if err := r.c.Drain(); err != nil {
			t.Fatal(err)
		}
		// Persisted before anything else happens.
		if st, err := LoadState(filepath.Join(dir, StateFile)); err != nil || !st.Drained {
			t.Fatalf("state after Drain: %+v, %v", st, err)
		}
		gshut := []string{"203.0.113.10/32 communities 65000:1 65535:0 prepend 2", "2001:db8::10/128 communities 65535:0 prepend 2"}
		r.waitFor(0, gshut...)
		if got := testutil.ToFloat64(r.c.m.drain); got != float64(PhaseShifting) {
			t.Errorf("anyedge_drain_state %v", got)
		}
		// Other nodes learn of the drain at once (geo stops relaying
		// here), long before the tags move.
		if got := r.in.drainings(); !slices.Equal(got, []bool{true}) {
			t.Fatalf("SetDraining calls %v at the start of the drain, want [true]", got)
		}
		// Traffic keeps arriving for 5 s, then stops; the paths go 2 s
		// (drain.quiet) later, the sessions stay up.
		for i := range 50 {
			r.in.set(func(in *inputs) { in.load.Started = 8 + uint64(i) })
			time.Sleep(100 * time.Millisecond)
		}
		d := r.waitFor(3*time.Second, nil...)
		if d < 1900*time.Millisecond {
			t.Errorf("withdrawn %v after the last new transaction, want drain.quiet (2 s)", d)
		}
		if r.sp.Closed() {
			t.Error("the speaker was closed: the sessions must stay up")
		}
		// Tags are handed over only when nothing is in flight.
		time.Sleep(time.Second)
		synctest.Wait()
		if got := r.in.drains(); len(got) != 0 {
			t.Fatalf("SetDrained %v with a transaction in flight", got)
		}
		r.in.set(func(in *inputs) { in.load.InFlight = 0 })
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := r.in.drains(); !slices.Equal(got, []bool{true}) {
			t.Fatalf("SetDrained calls %v, want [true]", got)
		}
		rep := r.c.Report()
		if rep.Phase != PhaseDrained || !slices.Contains(rep.Reasons, ReasonDrained) || len(rep.Announced) != 0 {
			t.Errorf("report %+v", rep)
		}
		r.close()

		// Restart: the node comes back drained and stays withdrawn.
		r = newRig(t, dir)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := r.announced(); len(got) != 0 {
			t.Fatalf("a drained node announced after a restart: %q", got)
		}
		if got := r.in.drains(); !slices.Equal(got, []bool{true}) {
			t.Fatalf("SetDrained after restart %v, want [true]", got)
		}
		if err := r.c.Undrain(); err != nil {
			t.Fatal(err)
		}
		r.waitFor(0, plain4, plain6)
		if got := r.in.drains(); !slices.Equal(got, []bool{true, false}) {
			t.Fatalf("SetDrained after undrain %v, want [true false]", got)
		}
		if st, err := LoadState(filepath.Join(dir, StateFile)); err != nil || st.Drained {
			t.Fatalf("state after Undrain: %+v, %v", st, err)
		}
		r.close()
	})
}

func TestControllerShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, "")
		defer r.close()
		r.c.SetExtra([]bgp.Advertisement{{Prefix: netip.MustParsePrefix("203.0.113.20/32")}})
		r.waitFor(2*time.Second, plain4, "203.0.113.20/32", plain6)
		r.in.set(func(in *inputs) { in.load.InFlight = 2 })

		done := make(chan error)
		start := time.Now()
		go func() { done <- r.c.Shutdown(context.Background()) }()
		synctest.Wait()
		if got := r.announced(); len(got) != 0 {
			t.Fatalf("Shutdown did not withdraw first: %q", got)
		}
		time.Sleep(time.Second)
		r.in.set(func(in *inputs) { in.load.InFlight = 0 })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < time.Second || d > 1200*time.Millisecond {
			t.Errorf("Shutdown returned after %v, want when in-flight reached 0 (1 s)", d)
		}
		if err := r.c.Drain(); !errors.Is(err, ErrShuttingDown) {
			t.Errorf("Drain after Shutdown: %v", err)
		}

		// Something never finishes: Shutdown gives up at shutdown_timeout.
		r.in.set(func(in *inputs) { in.load.InFlight = 1 })
		start = time.Now()
		if err := r.c.Shutdown(context.Background()); err == nil || time.Since(start) != 10*time.Second {
			t.Errorf("Shutdown with a stuck transaction: %v after %v", err, time.Since(start))
		}
	})
}

// A node that keeps crashing holds its first announcement longer at each
// restart (3 s, then 6 s: hold_down doubled per unclean restart in the
// window), so the routers do not see its paths come and go at every
// crash; a clean stop (Shutdown) resets it to the start hold-down.
func TestControllerCrashLoopDamping(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		first := func(r *rig, want time.Duration) {
			t.Helper()
			d := r.waitFor(want+time.Second, plain4, plain6)
			if d < want || d > want+200*time.Millisecond {
				t.Errorf("first announcement %v after the start, want %v", d, want)
			}
		}
		r := newRig(t, dir)
		first(r, time.Second)
		r.close() // a crash: no Shutdown

		r = newRig(t, dir)
		if rep := r.c.Report(); rep.Restarts != 1 || !slices.Contains(rep.Reasons, ReasonHoldDown) {
			t.Errorf("after one crash: %+v", rep.Status)
		}
		first(r, 3*time.Second)
		r.close()

		r = newRig(t, dir)
		first(r, 6*time.Second)
		if err := r.c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.close()

		r = newRig(t, dir)
		if rep := r.c.Report(); rep.Restarts != 0 {
			t.Errorf("after a clean stop: %d restarts counted", rep.Restarts)
		}
		first(r, time.Second)
		r.close()

		// Long after the last start, an unclean stop still counts once.
		time.Sleep(time.Hour)
		r = newRig(t, dir)
		first(r, 3*time.Second)
		r.close()
	})
}

func TestCorruptStateRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(testConfig(), Deps{Speaker: bgp.NewFake(), Health: healthy, Prefixes: testPrefixes(), StateDir: dir})
	if err == nil {
		t.Fatal("a corrupt drain state must not be read as undrained")
	}
	if err := SaveState(filepath.Join(dir, StateFile), State{Drained: true}); err != nil {
		t.Fatal(err)
	}
	c, err := New(testConfig(), Deps{Speaker: bgp.NewFake(), Health: healthy, Prefixes: testPrefixes(), StateDir: dir})
	if err != nil || c.Report().Phase != PhaseDrained {
		t.Fatalf("%v %+v", err, c)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".drain-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestClusterSignals(t *testing.T) {
	self := cluster.NodeMeta{ID: 1, Region: "eu"}
	nodes := []cluster.NodeView{
		{ID: 1, Region: "eu", State: "self"},
		{ID: 2, Region: "eu", State: "down"},
		{ID: 3, Region: "us", State: "up"},
		{ID: 4, Region: "us", State: "up"},
	}
	caps := []cluster.CapView{{Name: "cps", State: "synced"}, {Name: "geo.meta", State: "pending"}}
	unsynced, rv := ClusterSignals(self, nodes, caps, nil)
	if !slices.Equal(unsynced, []string{"geo.meta"}) {
		t.Errorf("unsynced %v", unsynced)
	}
	if rv != (RegionView{Known: 2, Reachable: 1, AllKnown: 4, AllReachable: 3}) || rv.Isolated() {
		t.Errorf("region %+v isolated %v", rv, rv.Isolated())
	}
	unsynced, _ = ClusterSignals(self, nodes, caps, []string{"cps", "missing"})
	if !slices.Equal(unsynced, []string{"missing"}) {
		t.Errorf("unsynced with a required list %v", unsynced)
	}
}
