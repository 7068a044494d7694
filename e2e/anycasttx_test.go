//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/lab"
)

// metricOf reads one series (name with its labels, as /metrics prints it),
// 0 when absent.
func metricOf(e *lab.Edge, series string) int {
	var v int
	if err := e.Metric(series, &v); err != nil {
		return 0
	}
	return v
}

// TestAnycastTransactions: calls ring at the edge that owns their INVITE
// transaction, which sent the INVITE to the callee from the anycast
// address; that edge is drained meanwhile, so the router sends what
// follows to the other edge.
//   - answered: the callee's 200, the caller's ACK and BYE and their
//     responses reach the other edge. The call completes: the other edge
//     relays the 200 over the cluster to the owner, whose client
//     transaction forwards it to the caller once, and routes the ACK and
//     BYE along the Record-Route itself.
//   - cancelled: the caller's CANCEL and the ACK of the 487 reach the
//     other edge, which answers the CANCEL and relays both; the owner
//     answers 487 and cancels the callee's branch, whose 200 and 487 come
//     back through the other edge too.
//
// ANYEDGE_TX_DEBUG=DIR runs the edges at debug level and leaves their logs
// and the callee's SIPp message trace in DIR.
func TestAnycastTransactions(t *testing.T) {
	l := startLab(t, func(e *lab.EdgePlan, c lab.Config) {
		if os.Getenv("ANYEDGE_TX_DEBUG") != "" {
			c.Section("log")["level"] = "debug"
		}
	}, nil)
	if dir := os.Getenv("ANYEDGE_TX_DEBUG"); dir != "" {
		t.Cleanup(func() {
			for _, e := range l.Edges {
				if e.Proc != nil {
					b, _ := os.ReadFile(e.Proc.Log)
					_ = os.WriteFile(filepath.Join(dir, e.Name+".log"), b, 0o600)
				}
			}
		})
	}
	a := l.Plan.Region("a")
	c := l.Clients["a"]
	const uacPort = 5082
	owner := l.ServedBy(a, uacPort)
	other := partner(l, owner)
	if owner == nil || other == nil {
		t.Fatalf("the caller's flow does not go to an edge of region a")
	}
	// bob registers through the anycast address from a port whose flow
	// the router sends to the same edge as the caller's: the owner then
	// holds his binding and sends him the INVITE from the anycast address,
	// so his answers come back through the router, to whichever edge it
	// picks by then.
	uasPort := 0
	for p := 5070; p < 5080; p++ {
		if l.ServedBy(a, p) == owner {
			uasPort = p
			break
		}
	}
	if uasPort == 0 {
		t.Fatalf("no port in 5070-5079 whose flow goes to %s", owner.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.Register(ctx, lab.AnycastSIP(), "bob", uasPort); err != nil {
		t.Fatal(err)
	}
	tc := txCase{l: l, owner: owner, other: other, uasPort: uasPort, uacPort: uacPort}

	t.Run("answered", func(t *testing.T) {
		const ring = 6 * time.Second
		d := map[string]int{
			`anyedge_sip_misdelivered_relayed_total{kind="response"}`:  1, // on other
			`anyedge_sip_misdelivered_injected_total{kind="response"}`: 1, // on owner
		}
		tc.run(ctx, t, ring, d, "uas_ring_answer.xml", []string{"-d", strconv.Itoa(int(ring / time.Millisecond))},
			"uac_call.xml", nil)
	})
	t.Run("cancelled", func(t *testing.T) {
		const ring = 5 * time.Second
		d := map[string]int{
			`anyedge_sip_misdelivered_relayed_total{kind="cancel"}`:  1,
			`anyedge_sip_misdelivered_relayed_total{kind="ack"}`:     1,
			`anyedge_sip_misdelivered_injected_total{kind="cancel"}`: 1,
			`anyedge_sip_misdelivered_injected_total{kind="ack"}`:    1,
		}
		tc.run(ctx, t, ring, d, "uas_ring.xml", nil,
			"uac_cancel_late.xml", []string{"-d", strconv.Itoa(int(ring / time.Millisecond))})
	})
}

// txCase is the lab and the roles of TestAnycastTransactions.
type txCase struct {
	l                *lab.Lab
	owner, other     *lab.Edge
	uasPort, uacPort int
}

// run places one call from uacScen to bob (uasScen), drains the owner as
// soon as it has the INVITE, and checks that both scenarios succeed and
// that each series in want rose by at least its value (relayed_* on the
// other edge, injected_* on the owner). ring is how long the call rings:
// the route must have moved by then.
func (tc txCase) run(ctx context.Context, t *testing.T, ring time.Duration, want map[string]int,
	uasScen string, uasArgs []string, uacScen string, uacArgs []string) {
	l, owner, other := tc.l, tc.owner, tc.other
	a := owner.Region
	ra := l.Routers[a.Name]
	c := l.Clients[a.Name]
	on := func(series string) *lab.Edge {
		if strings.Contains(series, "relayed") {
			return other
		}
		return owner
	}
	before := map[string]int{}
	for s := range want {
		before[s] = metricOf(on(s), s)
	}
	var trace []string
	if dir := os.Getenv("ANYEDGE_TX_DEBUG"); dir != "" {
		trace = []string{"-trace_msg", "-message_file", filepath.Join(dir, uasScen+".msgs.log")}
	}
	uas, err := c.StartSIPp(ctx, uasScen, "", append(append([]string{"-aa", "-p", strconv.Itoa(tc.uasPort), "-m", "1"},
		uasArgs...), trace...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer uas.Stop()
	const invites = `anyedge_sip_requests_total{method="INVITE"}`
	invitesBefore := metricOf(owner, invites)
	uac, err := c.StartSIPp(ctx, uacScen, lab.AnycastSIP(), append([]string{"-s", "bob", "-p", strconv.Itoa(tc.uacPort),
		"-m", "1", "-timeout", "40s", "-timeout_error"}, uacArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer uac.Stop()
	// Once the owner has the INVITE (the callee now rings), drain it.
	t0 := time.Now()
	waitFor(t, t0, 10*time.Second, func() error {
		if metricOf(owner, invites) <= invitesBefore {
			return fmt.Errorf("%s has not received the INVITE", owner.Name)
		}
		return nil
	})
	t1 := time.Now()
	if err := owner.Post("/v1/drain", ""); err != nil {
		t.Fatal(err)
	}
	undrained := false
	defer func() {
		if !undrained {
			owner.Post("/v1/undrain", "")
		}
	}()
	shift := waitFor(t, t1, 10*time.Second, func() error {
		return ra.WantNextHops(lab.Anycast+"/32", other.Addr.String())
	})
	if since := time.Since(t0); since >= ring {
		t.Fatalf("the route moved %v after the INVITE, after the call's %v of ringing: the test proves nothing", since, ring)
	}
	t.Logf("%s owns the call's transaction; drained %v after its INVITE arrived, the router moved the anycast route to %s %v later",
		owner.Name, t1.Sub(t0).Round(time.Millisecond), other.Name, shift.Round(time.Millisecond))

	defer func() {
		for _, e := range []*lab.Edge{owner, other} {
			var b strings.Builder
			for _, k := range []string{"response", "cancel", "ack"} {
				fmt.Fprintf(&b, " relayed{%s}=%d injected{%s}=%d", k,
					metricOf(e, `anyedge_sip_misdelivered_relayed_total{kind="`+k+`"}`), k,
					metricOf(e, `anyedge_sip_misdelivered_injected_total{kind="`+k+`"}`))
			}
			t.Logf("%s:%s", e.Name, b.String())
		}
	}()
	if err := uac.Wait(); err != nil {
		t.Fatalf("caller: %v", err)
	}
	if err := uas.Wait(); err != nil {
		t.Errorf("callee: %v", err)
	}
	// The owner's injection runs just after the relay is counted.
	waitFor(t, time.Now(), 5*time.Second, func() error {
		for s, n := range want {
			if got := metricOf(on(s), s) - before[s]; got < n {
				return fmt.Errorf("%s: %s rose by %d, want at least %d", on(s).Name, s, got, n)
			}
		}
		return nil
	})
	if err := owner.Post("/v1/undrain", ""); err != nil {
		t.Fatal(err)
	}
	undrained = true
	d := ecmp(t, l, a, 30*time.Second)
	t.Logf("undrained: back in ECMP after %v", d.Round(time.Millisecond))
}
