//go:build e2e && linux

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/e2e/netlab"
	"github.com/anyedge/anyedge/lab"
)

// The anycast end-to-end tests run on the lab of `make lab` (package
// lab): two regions, each with a BIRD router, two edged and a client;
// every edge announces 203.0.113.10/32. They measure what a client sees
// when an edge, a host or a region fails, when an edge is drained under
// load, and check the health gating. The figures are logged as
// "failover:" lines; docs/BENCHMARKS.md (Failover) records their medians.

// probeEvery is the SIP OPTIONS probe interval of the loss measurements.
const probeEvery = 20 * time.Millisecond

// startLab brings a lab up for t and takes it down when t ends. edit may
// change the edges' configs; started is called before Up waits.
func startLab(t *testing.T, edit func(*lab.EdgePlan, lab.Config), started func(*lab.Lab)) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces, BIRD): go test -count=1 -tags e2e ./e2e/...")
	}
	for _, tool := range []string{"bird", "birdc", "sipp", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make deps)", tool)
		}
	}
	if bins.edgedErr != nil {
		t.Fatalf("edged: %v", bins.edgedErr)
	}
	scen, err := filepath.Abs("../edge/sipp")
	if err != nil {
		t.Fatal(err)
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	prefix := "ael" + hex.EncodeToString(b[:])
	dir := t.TempDir()
	t.Logf("lab prefix %s (if this run is killed: go run ./lab/cmd/edgelab down -prefix %s -dir /nonexistent)", prefix, prefix)
	l, err := lab.Up(context.Background(), lab.Options{
		Regions: 2, Prefix: prefix, Dir: dir, Edged: bins.edged, Edgectl: bins.edgectl, Scenarios: scen,
		Logf: t.Logf, Edge: edit, Started: started, Timeout: 120 * time.Second,
	})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range l.Edges {
				if e.Proc != nil {
					t.Logf("---- %s (%s) log tail:\n%s", e.Name, e.Proc.Log, e.Proc.Tail(25))
				}
			}
			for _, rt := range l.Routers {
				out, _ := rt.Birdc("show", "protocols")
				t.Logf("---- birdc %s show protocols:\n%s", rt.Region.RouterName(), out)
			}
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

// figures collects the measured durations (and counts) by name, for the
// medians.
type figures struct {
	mu sync.Mutex
	m  map[string][]time.Duration
	n  map[string][]int
}

func (f *figures) count(t *testing.T, name string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string][]int{}
	}
	f.n[name] = append(f.n[name], n)
	t.Logf("failover: %s = %d", name, n)
}

func (f *figures) add(t *testing.T, name string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]time.Duration{}
	}
	f.m[name] = append(f.m[name], d)
	t.Logf("failover: %s = %v", name, d.Round(time.Millisecond))
}

func (f *figures) report(t *testing.T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.m))
	for n := range f.m {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		ds := slices.Clone(f.m[n])
		slices.Sort(ds)
		var runs []string
		for _, d := range f.m[n] {
			runs = append(runs, d.Round(time.Millisecond).String())
		}
		fmt.Fprintf(&b, "  %-40s median %-8v runs %s\n", n, ds[len(ds)/2].Round(time.Millisecond), strings.Join(runs, ", "))
	}
	for n, v := range f.n {
		fmt.Fprintf(&b, "  %-40s %v\n", n, v)
	}
	t.Logf("failover figures:\n%s", b.String())
}

// waitFor polls f every 5 ms until it succeeds and returns the time since
// start (the event being measured).
func waitFor(t *testing.T, start time.Time, timeout time.Duration, f func() error) time.Duration {
	t.Helper()
	var d time.Duration
	if _, err := netlab.Poll(timeout, 5*time.Millisecond, func() error {
		if err := f(); err != nil {
			return err
		}
		d = time.Since(start)
		return nil
	}); err != nil {
		t.Fatalf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	return d
}

// ecmp waits until region r's router routes the anycast address through
// both of its edges again.
func ecmp(t *testing.T, l *lab.Lab, r *lab.RegionPlan, timeout time.Duration) time.Duration {
	t.Helper()
	var hops []string
	for _, e := range r.Edges {
		hops = append(hops, e.Addr.String())
	}
	start := time.Now()
	return waitFor(t, start, timeout, func() error {
		return l.Routers[r.Name].WantNextHops(lab.Anycast+"/32", hops...)
	})
}

// partner is the other edge of e's region.
func partner(l *lab.Lab, e *lab.Edge) *lab.Edge {
	for _, o := range e.Region.Edges {
		if o != e.EdgePlan {
			return l.Edges[o.Name]
		}
	}
	return nil
}

// probe starts a SIP prober from region r's client to dst and waits
// until it gets answers.
func probe(t *testing.T, l *lab.Lab, r *lab.RegionPlan, dst string) *lab.Prober {
	t.Helper()
	p, err := l.Clients[r.Name].Probe(dst, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !p.OKSince(start) {
			return fmt.Errorf("no answer from %s yet", dst)
		}
		return nil
	})
	return p
}

// outage stops p and measures the loss window after the event at t0.
func outage(t *testing.T, p *lab.Prober, t0 time.Time) (time.Duration, int) {
	t.Helper()
	w, lost, err := lab.Outage(p.Stop(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return w, lost
}

func restart(t *testing.T, e *lab.Edge) {
	t.Helper()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAnycast: the failures and operations of the issue, one lab.
func TestAnycast(t *testing.T) {
	// The seed declares its capabilities synced only after 6 s: meanwhile
	// every edge has its BGP session up and must not announce.
	var gating syncWatch
	l := startLab(t, func(e *lab.EdgePlan, c lab.Config) {
		if e.ID == 11 {
			c.Section("cluster")["seed_sync_delay"] = "6s"
		}
	}, gating.start)
	gating.stop()
	a := l.Plan.Region("a")
	ra := l.Routers["a"]
	var fig figures
	defer fig.report(t)

	t.Run("sync_gates_announcements", func(t *testing.T) {
		gating.check(t, &fig)
	})

	t.Run("process_kill", func(t *testing.T) {
		for run := 1; run <= 3; run++ {
			p := probe(t, l, a, lab.AnycastSIP())
			victim := l.ServedBy(a, p.LocalPort())
			if victim == nil {
				t.Fatalf("the probe flow does not go to an edge of region a")
			}
			other := partner(l, victim)
			t0 := time.Now()
			if err := victim.Proc.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			drop := waitFor(t, t0, 5*time.Second, func() error {
				return ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
			})
			netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !p.OKSince(t0.Add(drop)) {
					return errors.New("no answer through the other edge yet")
				}
				return nil
			})
			w, lost := outage(t, p, t0)
			t.Logf("run %d: %s killed: path dropped by %s after %v; SIP answered by %s after a gap of %v (%d probes lost)",
				run, victim.Name, ra.Region.RouterName(), drop.Round(time.Millisecond), other.Name, w.Round(time.Millisecond), lost)
			fig.add(t, "kill: path dropped", drop)
			fig.add(t, "kill: SIP loss window", w)
			restart(t, victim)
			d := ecmp(t, l, a, 30*time.Second)
			t.Logf("run %d: %s restarted, back in ECMP %v after answering", run, victim.Name, d.Round(time.Millisecond))
		}
	})

	t.Run("host_freeze_bfd", func(t *testing.T) {
		for run := 1; run <= 3; run++ {
			p := probe(t, l, a, lab.AnycastSIP())
			victim := l.ServedBy(a, p.LocalPort())
			other := partner(l, victim)
			t0 := time.Now()
			if err := victim.Proc.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			drop := waitFor(t, t0, 5*time.Second, func() error {
				return ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
			})
			netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !p.OKSince(t0.Add(drop)) {
					return errors.New("no answer through the other edge yet")
				}
				return nil
			})
			w, lost := outage(t, p, t0)
			t.Logf("run %d: %s frozen (SIGSTOP): BFD dropped its path after %v; SIP gap %v (%d probes lost)",
				run, victim.Name, drop.Round(time.Millisecond), w.Round(time.Millisecond), lost)
			if drop >= time.Second {
				t.Errorf("run %d: path dropped after %v, want < 1 s with BFD (3 x %d ms)", run, drop, lab.BFDInterval)
			}
			fig.add(t, "freeze: path dropped (BFD)", drop)
			fig.add(t, "freeze: SIP loss window", w)
			if err := victim.Proc.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			d := ecmp(t, l, a, 45*time.Second)
			t.Logf("run %d: %s thawed, back in ECMP after %v (BGP re-established, hold-down)", run, victim.Name, d.Round(time.Millisecond))
		}
	})

	t.Run("drain_under_load", func(t *testing.T) {
		drainUnderLoad(t, l, &fig)
	})

	t.Run("isolated_from_region", func(t *testing.T) {
		victim := l.Edges["a2"]
		other := l.Edges["a1"]
		t0 := time.Now()
		if err := victim.IsolateCluster(true); err != nil {
			t.Fatal(err)
		}
		healed := false
		defer func() {
			if !healed {
				victim.IsolateCluster(false)
			}
		}()
		// a2 loses a1 after the LAN dead time (400 ms), then probes its
		// WAN links to region b at once (300 ms) instead of waiting out
		// their dead time (5 s): only then is it isolated.
		var unready time.Duration
		var reasons []string
		drop := waitFor(t, t0, 10*time.Second, func() error {
			err := ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
			if unready == 0 { // read after the route: never later than the drop
				var r struct {
					Reasons []string `json:"reasons"`
				}
				_ = victim.GetStatus("/readyz", &r)
				if slices.ContainsFunc(r.Reasons, func(s string) bool { return strings.HasPrefix(s, "isolated") }) {
					unready, reasons = time.Since(t0), r.Reasons
				}
			}
			return err
		})
		t.Logf("a2 cut from every cluster peer (BGP and BFD untouched): isolated after %v (%q), withdrawn after %v",
			unready.Round(time.Millisecond), reasons, drop.Round(time.Millisecond))
		if unready == 0 {
			t.Fatalf("a2 withdrew without /readyz ever saying isolated")
		}
		if d := drop - unready; d >= time.Second {
			t.Errorf("withdrawn %v after becoming isolated, want < 1 s", d)
		}
		fig.add(t, "isolated: unready (LAN dead time + probe)", unready)
		fig.add(t, "isolated: withdrawn after unready", max(drop-unready, 0))
		// a1 lost its partner but the other region backs it: it stays.
		if err := ra.WantNextHops(lab.Anycast+"/32", other.Addr.String()); err != nil {
			t.Error(err)
		}
		t1 := time.Now()
		if err := victim.IsolateCluster(false); err != nil {
			t.Fatal(err)
		}
		healed = true
		d := ecmp(t, l, a, 30*time.Second)
		t.Logf("healed: a2 announces again %v later (links back, then the 3 s hold-down)", time.Since(t1).Round(time.Millisecond))
		if d < 3*time.Second {
			t.Errorf("re-announced %v after the heal, before the 3 s hold-down", d)
		}
	})

	t.Run("region_loss", func(t *testing.T) {
		p := probe(t, l, a, lab.AnycastSIP())
		a1, a2 := l.Edges["a1"], l.Edges["a2"]
		t0 := time.Now()
		for _, e := range []*lab.Edge{a1, a2} {
			if err := e.Proc.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		wan := l.Plan.Region("b").RouterWAN.String()
		d := waitFor(t, t0, 10*time.Second, func() error {
			return ra.WantNextHops(lab.Anycast+"/32", wan)
		})
		netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if !p.OKSince(t0.Add(d)) {
				return errors.New("no answer from region b yet")
			}
			return nil
		})
		w, lost := outage(t, p, t0)
		t.Logf("region a lost (both edges killed): %s routes the anycast address to region b after %v; SIP gap %v (%d lost)",
			ra.Region.RouterName(), d.Round(time.Millisecond), w.Round(time.Millisecond), lost)
		fig.add(t, "region loss: route to the other region", d)
		fig.add(t, "region loss: SIP loss window", w)

		// A client of region a registers, across the WAN, in region b.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := l.Clients["a"].Register(ctx, lab.AnycastSIP(), "alice", 5200); err != nil {
			t.Fatalf("REGISTER from region a's client during the region loss: %v", err)
		}
		var got int
		for _, e := range l.Plan.Region("b").Edges {
			var bindings int
			if err := l.Edges[e.Name].Metric("anyedge_sip_bindings", &bindings); err == nil {
				got += bindings
			}
		}
		if got == 0 {
			t.Errorf("no binding in region b after the REGISTER")
		}
		t.Logf("alice registered from %s through the anycast address, served in region b", a.ClientName())

		restart(t, a1)
		restart(t, a2)
		d = ecmp(t, l, a, 45*time.Second)
		t.Logf("region a back in ECMP %v after its edges answered", d.Round(time.Millisecond))
	})
}

// syncWatch records, during the lab's bring-up, when each router first
// had an established session with each edge and when the edge's anycast
// path first appeared, and what /readyz said meanwhile.
type syncWatch struct {
	mu          sync.Mutex
	established map[string]time.Time
	announced   map[string]time.Time
	reasons     map[string][]string
	quit        chan struct{}
	done        chan struct{}
}

func (w *syncWatch) start(l *lab.Lab) {
	w.established, w.announced, w.reasons = map[string]time.Time{}, map[string]time.Time{}, map[string][]string{}
	w.quit, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, e := range l.Plan.Edges() {
				rt := l.Routers[e.Region.Name]
				now := time.Now()
				est := rt.Established(e.Name) == nil
				hops, _ := rt.NextHops(lab.Anycast + "/32")
				var r struct {
					Reasons []string `json:"reasons"`
				}
				_ = l.Edges[e.Name].GetStatus("/readyz", &r)
				w.mu.Lock()
				if _, ok := w.established[e.Name]; !ok && est {
					w.established[e.Name] = now
				}
				if _, ok := w.announced[e.Name]; !ok && slices.Contains(hops, e.Addr.String()) {
					w.announced[e.Name] = now
				}
				if _, ok := w.announced[e.Name]; !ok && est {
					// Every reason seen: not_synced, then the start
					// hold-down (bgp/announce) once synced.
					for _, rs := range r.Reasons {
						if !slices.Contains(w.reasons[e.Name], rs) {
							w.reasons[e.Name] = append(w.reasons[e.Name], rs)
						}
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.quit:
				return
			case <-tick.C:
			}
		}
	}()
}

func (w *syncWatch) stop() {
	if w.quit != nil {
		close(w.quit)
		<-w.done
	}
}

// check: no edge announced while its BGP session was up but the cluster
// not synced (the seed waits 6 s before declaring the data synced).
func (w *syncWatch) check(t *testing.T, fig *figures) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, est := range w.established {
		ann, ok := w.announced[name]
		if !ok {
			t.Errorf("%s: never seen announced during the bring-up", name)
			continue
		}
		gap := ann.Sub(est)
		t.Logf("%s: BGP established, anycast path only %v later; /readyz meanwhile: %q", name, gap.Round(time.Millisecond), w.reasons[name])
		if !slices.ContainsFunc(w.reasons[name], func(s string) bool { return strings.HasPrefix(s, "not_synced") }) {
			t.Errorf("%s: /readyz while established and not announced was %q, want not_synced", name, w.reasons[name])
		}
		if gap < time.Second {
			t.Errorf("%s announced %v after its session came up: before the cluster was synced", name, gap)
		}
	}
	if len(w.established) == 0 {
		t.Errorf("no BGP session seen during the bring-up")
	}
}

// drainUnderLoad: a steady call rate through the anycast address while
// the edge serving it is drained: no call may fail.
func drainUnderLoad(t *testing.T, l *lab.Lab, fig *figures) {
	a := l.Plan.Region("a")
	ra := l.Routers["a"]
	c := l.Clients["a"]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const uasPort, uacPort = 5070, 5080
	// bob's phone answers every call; its contact is registered on both
	// edges (location is per node).
	for _, e := range a.Edges {
		if err := c.Register(ctx, fmt.Sprintf("%s:%d", e.Addr, lab.SIPPort), "bob", uasPort); err != nil {
			t.Fatal(err)
		}
	}
	uas, err := c.StartSIPp(ctx, "uas_answer.xml", "", "-p", strconv.Itoa(uasPort))
	if err != nil {
		t.Fatal(err)
	}
	defer uas.Stop()
	victim := l.ServedBy(a, uacPort)
	other := partner(l, victim)
	const rate, calls = 10, 150
	uac, err := c.StartSIPp(ctx, "uac_call.xml", lab.AnycastSIP(), "-s", "bob", "-p", strconv.Itoa(uacPort),
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls), "-timeout", "60s", "-timeout_error")
	if err != nil {
		t.Fatal(err)
	}
	// Drain a third of the way in.
	select {
	case <-time.After(calls / rate / 3 * time.Second):
	case <-uac.Done():
		t.Fatalf("the calls ended before the drain: %v", uac.Wait())
	}
	t0 := time.Now()
	if err := victim.Post("/v1/drain", ""); err != nil {
		t.Fatal(err)
	}
	undrained := false
	defer func() {
		if !undrained { // whatever failed, the next tests need the edge back
			victim.Post("/v1/undrain", "")
		}
	}()
	shift := waitFor(t, t0, 10*time.Second, func() error {
		return ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
	})
	withdrawn := waitFor(t, t0, 40*time.Second, func() error {
		out, err := ra.Birdc("show", "route", lab.Anycast+"/32", "protocol", victim.Name)
		if err != nil {
			return err
		}
		if strings.Contains(out, "unicast") {
			return errors.New("path still there")
		}
		return nil
	})
	drained := waitFor(t, t0, 60*time.Second, func() error {
		var r struct {
			Reasons []string `json:"reasons"`
		}
		victim.GetStatus("/readyz", &r)
		if !slices.Equal(r.Reasons, []string{"drained"}) {
			return fmt.Errorf("reasons %q", r.Reasons)
		}
		return nil
	})
	err = uac.Wait()
	t.Logf("drain of %s at %d calls/s: traffic moved (GRACEFUL_SHUTDOWN) after %v, path withdrawn after %v, tags handed over after %v",
		victim.Name, rate, shift.Round(time.Millisecond), withdrawn.Round(time.Millisecond), drained.Round(time.Millisecond))
	setup, inDialog := deadCalls(uac.ErrorLog())
	fig.count(t, "drain: calls failed at setup (of 150)", setup)
	fig.count(t, "drain: calls failed in dialog (of 150)", inDialog)
	switch {
	case err == nil:
		t.Logf("all %d calls succeeded", calls)
	case setup > 0:
		t.Errorf("%d calls failed to set up during the drain (and %d in dialog): %v", setup, inDialog, err)
	default:
		// Calls established through the drained edge before the shift:
		// their ACK and BYE now reach the partner, which routes them to
		// the drained edge along its Record-Route (from its own address,
		// not the anycast one the drained edge would drop as its own).
		t.Errorf("%d established calls failed during the drain: %v", inDialog, err)
	}
	fig.add(t, "drain: traffic moved (GSHUT)", shift)
	fig.add(t, "drain: path withdrawn", withdrawn)
	fig.add(t, "drain: complete (tags handed over)", drained)
	var tags []struct {
		Name  string `json:"name"`
		Owner uint32 `json:"owner"`
	}
	if err := other.GetStatus("/v1/cluster/tags", &tags); err != nil {
		t.Fatal(err)
	}
	for _, tg := range tags {
		if strings.HasSuffix(tg.Name, "-a") && tg.Owner == victim.ID {
			t.Errorf("tag %s still owned by the drained %s", tg.Name, victim.Name)
		}
	}
	if err := victim.Post("/v1/undrain", ""); err != nil {
		t.Fatal(err)
	}
	undrained = true
	d := ecmp(t, l, a, 20*time.Second)
	t.Logf("undrained: back in ECMP after %v", d.Round(time.Millisecond))
}

// deadCalls counts the failed calls in a SIPp error log of uac_call.xml:
// those that failed before the 200 to the INVITE (scenario index 0-3:
// INVITE, 100, 180, 200) and those that failed in the dialog (ACK, BYE).
func deadCalls(log string) (setup, inDialog int) {
	for _, line := range strings.Split(log, "\n") {
		i := strings.Index(line, "(aborted at index ")
		if !strings.Contains(line, "Dead call") || i < 0 {
			continue
		}
		var idx int
		fmt.Sscanf(line[i+len("(aborted at index "):], "%d", &idx)
		if idx <= 3 {
			setup++
		} else {
			inDialog++
		}
	}
	return setup, inDialog
}
