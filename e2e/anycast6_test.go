//go:build e2e && linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/e2e/netlab"
	"github.com/anyedge/anyedge/lab"
)

// TestAnycast6 is the IPv6 side of the anycast lab: every edge announces
// 2001:db8:a::10/128 on its own IPv6 BGP session (with BFD) next to the
// IPv4 one, the routers spread it by ECMP, and SIPp registers and calls
// over IPv6 through it. A kill and a freeze of the edge serving a flow
// move the IPv6 flow like the IPv4 one: both are measured on the same
// event, the IPv4 probe picked to hit the same edge.
func TestAnycast6(t *testing.T) {
	l := startLab(t, nil, nil)
	a := l.Plan.Region("a")
	ra := l.Routers["a"]
	var fig figures
	defer fig.report(t)

	t.Run("ecmp", func(t *testing.T) {
		for _, r := range l.Plan.Regions {
			var hops []string
			for _, e := range r.Edges {
				hops = append(hops, e.Addr6.String())
			}
			if err := l.Routers[r.Name].WantNextHops(lab.Anycast6+"/128", hops...); err != nil {
				t.Error(err)
			}
		}
		out, _ := ra.Birdc("show", "route", "all", lab.Anycast6+"/128")
		t.Logf("birdc show route all %s/128:\n%s", lab.Anycast6, out)
		// The metrics, per peer and per prefix, for both families.
		e := l.Edges["a1"]
		m, err := e.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			fmt.Sprintf(`anyedge_bgp_session_up{peer="%s"} 1`, a.RouterLAN),
			fmt.Sprintf(`anyedge_bgp_session_up{peer="%s"} 1`, a.RouterLAN6),
			fmt.Sprintf(`anyedge_bfd_session_up{peer="%s"} 1`, a.RouterLAN),
			fmt.Sprintf(`anyedge_bfd_session_up{peer="%s"} 1`, a.RouterLAN6),
			`prefix="` + lab.Anycast6 + `/128"`,
			`anyedge_bgp_announce_ready 1`,
			`anyedge_drain_state 0`,
			`vip="` + a.VIPL2v6.String() + `/128"`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("%s /metrics has no %s", e.Name, want)
			}
		}
	})

	t.Run("register_and_call", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := l.Clients["a"]
		// Through the IPv6 anycast address: whichever edge ECMP picks.
		if err := c.Register(ctx, lab.AnycastSIP6(), "alice", 5200); err != nil {
			t.Fatalf("REGISTER over IPv6 through %s: %v", lab.AnycastSIP6(), err)
		}
		t.Logf("alice registered from [%s]:5200 through %s", a.Client6, lab.AnycastSIP6())
		// bob's phone: an IPv6 SIPp UAS, registered on both edges (by
		// their own IPv6 addresses: location is per node in the lab), so
		// the call works whichever edge the anycast route picks.
		const uasPort, uacPort = 5270, 5280
		for _, e := range a.Edges {
			if err := c.Register(ctx, fmt.Sprintf("[%s]:%d", e.Addr6, lab.SIPPort), "bob", uasPort); err != nil {
				t.Fatalf("register bob at %s over IPv6: %v", e.Name, err)
			}
		}
		for run := 1; run <= 3; run++ {
			uas, err := c.StartSIPpFrom(ctx, a.Client6, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(uasPort), "-m", "1", "-timeout", "20s", "-timeout_error")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = c.RunSIPp(ctx, "uac_call.xml", lab.AnycastSIP6(), "-s", "bob", "-p", strconv.Itoa(uacPort+run), "-m", "1", "-timeout", "15s", "-timeout_error")
			if err != nil {
				uas.Stop()
				t.Fatalf("call %d over IPv6 through %s: %v", run, lab.AnycastSIP6(), err)
			}
			if err := uas.Wait(); err != nil {
				t.Fatalf("call %d over IPv6, callee side: %v", run, err)
			}
			t.Logf("call %d: [%s]:%d -> bob via %s -> [%s]:%d answered and hung up in %v",
				run, a.Client6, uacPort+run, lab.AnycastSIP6(), a.Client6, uasPort, time.Since(start).Round(time.Millisecond))
		}
	})

	// pair starts an IPv6 probe and an IPv4 probe whose flows go to the
	// same edge of region a (found by counting packets at the edges), and
	// returns them with that edge.
	pair := func(t *testing.T) (p6, p4 *lab.Prober, victim *lab.Edge) {
		t.Helper()
		p6 = probe(t, l, a, lab.AnycastSIP6())
		victim, err := l.FlowEdge(a, p6, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for try := 0; try < 20; try++ {
			p := probe(t, l, a, lab.AnycastSIP())
			e, err := l.FlowEdge(a, p, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if e == victim {
				return p6, p, victim
			}
			p.Stop()
		}
		t.Fatalf("no IPv4 probe flow went to %s in 20 tries", victim.Name)
		return nil, nil, nil
	}

	// failover kills or freezes the edge serving a flow and measures both
	// families.
	failover := func(t *testing.T, how string, sig syscall.Signal, limit time.Duration) {
		for run := 1; run <= 3; run++ {
			p6, p4, victim := pair(t)
			other := partner(l, victim)
			t0 := time.Now()
			if err := victim.Proc.Signal(sig); err != nil {
				t.Fatal(err)
			}
			var drop4 time.Duration
			drop6 := waitFor(t, t0, limit+5*time.Second, func() error {
				if drop4 == 0 && ra.WantNextHops(lab.Anycast+"/32", other.Addr.String()) == nil {
					drop4 = time.Since(t0)
				}
				return ra.WantNextHops(lab.Anycast6+"/128", other.Addr6.String())
			})
			if drop4 == 0 {
				drop4 = waitFor(t, t0, limit+5*time.Second, func() error {
					return ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
				})
			}
			netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
				if !p6.OKSince(t0.Add(drop6)) || !p4.OKSince(t0.Add(drop4)) {
					return errors.New("no answer through the other edge yet")
				}
				return nil
			})
			w6, lost6 := outage(t, p6, t0)
			w4, lost4 := outage(t, p4, t0)
			t.Logf("run %d: %s %s: IPv6 path dropped after %v, SIP gap %v (%d lost); IPv4 path dropped after %v, SIP gap %v (%d lost)",
				run, victim.Name, how, drop6.Round(time.Millisecond), w6.Round(time.Millisecond), lost6,
				drop4.Round(time.Millisecond), w4.Round(time.Millisecond), lost4)
			if drop6 >= limit {
				t.Errorf("run %d: IPv6 path dropped after %v, want < %v", run, drop6, limit)
			}
			fig.add(t, how+": IPv6 path dropped", drop6)
			fig.add(t, how+": IPv6 SIP loss window", w6)
			fig.add(t, how+": IPv4 path dropped", drop4)
			fig.add(t, how+": IPv4 SIP loss window", w4)
			if sig == syscall.SIGKILL {
				restart(t, victim)
			} else if err := victim.Proc.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			// A killed edge restarts with the crash hold-down: up to 6 s
			// in the lab (max_hold_down).
			d := ecmp6(t, l, a, 45*time.Second)
			t.Logf("run %d: %s back in both ECMP routes %v later", run, victim.Name, d.Round(time.Millisecond))
		}
	}

	t.Run("process_kill", func(t *testing.T) {
		// A kill closes both TCP sessions at once: the router drops the
		// paths as soon as it reads the close.
		failover(t, "kill", syscall.SIGKILL, 5*time.Second)
	})

	t.Run("vip6_kill", func(t *testing.T) {
		vip6Kill(t, l, &fig)
	})

	t.Run("host_freeze_bfd", func(t *testing.T) {
		// A frozen host sends nothing: BFD on each session (3 x 200 ms)
		// must drop the paths within a second.
		failover(t, "freeze", syscall.SIGSTOP, time.Second)
	})

	t.Run("drain", func(t *testing.T) {
		// The drain's GRACEFUL_SHUTDOWN community rides on the IPv6 path
		// too: the router prefers the other edge while a1's IPv6 path
		// still exists, then a1 withdraws it; undrain brings it back.
		e, other := l.Edges["a1"], l.Edges["a2"]
		t0 := time.Now()
		if err := e.Post("/v1/drain", ""); err != nil {
			t.Fatal(err)
		}
		var tagged bool
		moved := waitFor(t, t0, 10*time.Second, func() error {
			if out, err := ra.Birdc("show", "route", "all", lab.Anycast6+"/128", "protocol", e.Name+"v6"); err == nil &&
				strings.Contains(out, "(65535,0)") {
				tagged = true
			}
			return ra.WantNextHops(lab.Anycast6+"/128", other.Addr6.String())
		})
		withdrawn := waitFor(t, t0, 40*time.Second, func() error {
			out, err := ra.Birdc("show", "route", lab.Anycast6+"/128", "protocol", e.Name+"v6")
			if err != nil {
				return err
			}
			if strings.Contains(out, lab.Anycast6) {
				return fmt.Errorf("%s's IPv6 path still at %s", e.Name, ra.Region.RouterName())
			}
			return nil
		})
		t.Logf("%s drained: IPv6 traffic moved to %s after %v, path withdrawn after %v (GRACEFUL_SHUTDOWN seen on the IPv6 path: %v)",
			e.Name, other.Name, moved.Round(time.Millisecond), withdrawn.Round(time.Millisecond), tagged)
		if !tagged {
			t.Errorf("%s never showed %s's IPv6 path with GRACEFUL_SHUTDOWN (65535,0) while shifting", ra.Region.RouterName(), e.Name)
		}
		fig.add(t, "drain: IPv6 traffic moved", moved)
		if err := e.Post("/v1/undrain", ""); err != nil {
			t.Fatal(err)
		}
		ecmp6(t, l, a, 30*time.Second)
	})

	t.Run("region_loss", func(t *testing.T) {
		regionLoss(t, l, &fig)
	})
}

// regionLoss kills both edges of region a: region a's router must send
// both families to region b over the WAN, a client of region a must
// register and place a call there (IPv4: see register_and_call for IPv6
// calls), and when region a's edges come back its clients' flows must
// return to them.
func regionLoss(t *testing.T, l *lab.Lab, fig *figures) {
	a, b := l.Plan.Region("a"), l.Plan.Region("b")
	ra := l.Routers["a"]
	c := l.Clients["a"]
	p4 := probe(t, l, a, lab.AnycastSIP())
	p6 := probe(t, l, a, lab.AnycastSIP6())
	t0 := time.Now()
	for _, e := range a.Edges {
		if err := l.Edges[e.Name].Proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	var d4 time.Duration
	d6 := waitFor(t, t0, 15*time.Second, func() error {
		if d4 == 0 && ra.WantNextHops(lab.Anycast+"/32", b.RouterWAN.String()) == nil {
			d4 = time.Since(t0)
		}
		return ra.WantNextHops(lab.Anycast6+"/128", b.RouterWAN6.String())
	})
	if d4 == 0 {
		d4 = waitFor(t, t0, 15*time.Second, func() error { return ra.WantNextHops(lab.Anycast+"/32", b.RouterWAN.String()) })
	}
	netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !p4.OKSince(t0.Add(d4)) || !p6.OKSince(t0.Add(d6)) {
			return errors.New("no answer from region b yet")
		}
		return nil
	})
	w4, _ := outage(t, p4, t0)
	w6, _ := outage(t, p6, t0)
	t.Logf("region a lost: %s routes to region b after %v (IPv4, SIP gap %v) and %v (IPv6, SIP gap %v)",
		ra.Region.RouterName(), d4.Round(time.Millisecond), w4.Round(time.Millisecond), d6.Round(time.Millisecond), w6.Round(time.Millisecond))
	fig.add(t, "region loss: IPv4 route to the other region", d4)
	fig.add(t, "region loss: IPv4 SIP loss window", w4)
	fig.add(t, "region loss: IPv6 route to the other region", d6)
	fig.add(t, "region loss: IPv6 SIP loss window", w6)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Register(ctx, lab.AnycastSIP6(), "carol", 5300); err != nil {
		t.Errorf("IPv6 REGISTER from region a's client during the region loss: %v", err)
	}
	// The call: dave's phone is a UAS on region a's client, registered
	// on both edges of region b (by their own addresses: location is per
	// node in the lab); the caller, also in region a, dials through the
	// anycast address, which now leads to region b.
	const uasPort, uacPort = 5370, 5380
	for _, e := range b.Edges {
		if err := c.Register(ctx, fmt.Sprintf("%s:%d", e.Addr, lab.SIPPort), "dave", uasPort); err != nil {
			t.Fatalf("register dave at %s: %v", e.Name, err)
		}
	}
	uas, err := c.StartSIPp(ctx, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(uasPort), "-m", "1", "-timeout", "20s", "-timeout_error")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunSIPp(ctx, "uac_call.xml", lab.AnycastSIP(), "-s", "dave", "-p", strconv.Itoa(uacPort), "-m", "1", "-timeout", "15s", "-timeout_error"); err != nil {
		uas.Stop()
		t.Fatalf("call from region a through %s during the region loss: %v", lab.AnycastSIP(), err)
	}
	if err := uas.Wait(); err != nil {
		t.Fatalf("call during the region loss, callee side: %v", err)
	}
	t.Logf("during the region loss a client of region a registered over IPv6 and placed an IPv4 call, both served in region b")

	for _, e := range a.Edges {
		restart(t, l.Edges[e.Name])
	}
	d := ecmp6(t, l, a, 45*time.Second)
	// Recovery moves the clients back: new flows of region a's client
	// reach region a's edges again.
	for _, dst := range []string{lab.AnycastSIP(), lab.AnycastSIP6()} {
		p := probe(t, l, a, dst)
		e, err := l.FlowEdge(a, p, 5*time.Second)
		p.Stop()
		if err != nil {
			t.Fatalf("after the recovery, the flow to %s: %v", dst, err)
		}
		t.Logf("after the recovery the flow to %s reaches %s", dst, e.Name)
	}
	t.Logf("region a back in both ECMP routes %v after its edges answered", d.Round(time.Millisecond))
}

// ecmp6 waits until region r's router routes both anycast addresses
// through both of its edges again.
func ecmp6(t *testing.T, l *lab.Lab, r *lab.RegionPlan, timeout time.Duration) time.Duration {
	t.Helper()
	var hops, hops6 []string
	for _, e := range r.Edges {
		hops = append(hops, e.Addr.String())
		hops6 = append(hops6, e.Addr6.String())
	}
	start := time.Now()
	return waitFor(t, start, timeout, func() error {
		if err := l.Routers[r.Name].WantNextHops(lab.Anycast+"/32", hops...); err != nil {
			return err
		}
		return l.Routers[r.Name].WantNextHops(lab.Anycast6+"/128", hops6...)
	})
}

// vip6Kill kills the holder of region a's VIP tags three times and
// measures how fast its partner takes over the IPv6 VIPs: the l2 one
// (2001:db8:a::21 on the LAN, moved by unsolicited neighbour
// advertisements with the override flag) and the l3 one (2001:db8:a::31
// on lo, announced as a /128 by its owner), and how long SIP to each is
// lost.
func vip6Kill(t *testing.T, l *lab.Lab, fig *figures) {
	a := l.Plan.Region("a")
	ra := l.Routers["a"]
	l2, l3 := a.VIPL2v6.String(), a.VIPL3v6.String()
	holds := func(e *lab.Edge) error {
		if ok, err := e.HasAddr("lan0", l2); err != nil || !ok {
			return fmt.Errorf("%s does not hold %s (%v)", e.Name, l2, err)
		}
		if ok, err := partner(l, e).HasAddr("lan0", l2); err != nil || ok {
			return fmt.Errorf("%s still holds %s (%v)", partner(l, e).Name, l2, err)
		}
		return ra.WantNextHops(l3+"/128", e.Addr6.String())
	}
	holder := func() *lab.Edge {
		t.Helper()
		var h *lab.Edge
		netlab.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
			for _, e := range a.Edges {
				if holds(l.Edges[e.Name]) == nil {
					h = l.Edges[e.Name]
					return nil
				}
			}
			return fmt.Errorf("no edge of region a holds %s and %s alone", l2, l3)
		})
		return h
	}
	for run := 1; run <= 3; run++ {
		owner := holder()
		other := partner(l, owner)
		p2 := probe(t, l, a, fmt.Sprintf("[%s]:%d", l2, lab.SIPPort))
		p3 := probe(t, l, a, fmt.Sprintf("[%s]:%d", l3, lab.SIPPort))
		t0 := time.Now()
		if err := owner.Proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		took2 := waitFor(t, t0, 6*time.Second, func() error {
			if ok, err := other.HasAddr("lan0", l2); err != nil || !ok {
				return fmt.Errorf("%s does not hold %s yet", other.Name, l2)
			}
			return nil
		})
		took3 := waitFor(t, t0, 6*time.Second, func() error {
			return ra.WantNextHops(l3+"/128", other.Addr6.String())
		})
		netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if !p2.OKSince(t0.Add(took2)) || !p3.OKSince(t0.Add(took3)) {
				return errors.New("SIP to the IPv6 VIPs not answered by the partner yet")
			}
			return nil
		})
		w2, lost2 := outage(t, p2, t0)
		w3, lost3 := outage(t, p3, t0)
		t.Logf("run %d: %s (holder) killed; %s holds the l2 VIP %s after %v (SIP lost for %v, %d probes), "+
			"and %s routes the l3 VIP %s to it after %v (SIP lost for %v, %d probes)",
			run, owner.Name, other.Name, l2, took2.Round(time.Millisecond), w2.Round(time.Millisecond), lost2,
			ra.Region.RouterName(), l3, took3.Round(time.Millisecond), w3.Round(time.Millisecond), lost3)
		if took2 >= time.Second || took3 >= time.Second {
			t.Errorf("run %d: IPv6 VIP takeover after %v (l2) and %v (l3), want < 1 s", run, took2, took3)
		}
		fig.add(t, "vip6 kill: l2 partner holds it", took2)
		fig.add(t, "vip6 kill: l2 SIP loss window", w2)
		fig.add(t, "vip6 kill: l3 route to the partner", took3)
		fig.add(t, "vip6 kill: l3 SIP loss window", w3)
		restart(t, owner)
		ecmp6(t, l, a, 45*time.Second)
	}
}
