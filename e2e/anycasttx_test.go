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

// TestAnycastTransactions: a call rings at the edge that owns its INVITE
// transaction, which sent it to the callee from the anycast address; that
// edge is drained meanwhile, so the router sends the callee's 200, the
// caller's ACK and BYE and their responses to the other edge. The call
// still completes: the other edge relays the 200 over the cluster to the
// owner, whose client transaction forwards it to the caller once, and
// routes the ACK and BYE along the Record-Route itself.
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
	ra := l.Routers["a"]
	c := l.Clients["a"]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const uacPort = 5082
	const ring = 6 * time.Second
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
	if err := c.Register(ctx, lab.AnycastSIP(), "bob", uasPort); err != nil {
		t.Fatal(err)
	}
	var trace []string
	if dir := os.Getenv("ANYEDGE_TX_DEBUG"); dir != "" {
		trace = []string{"-trace_msg", "-message_file", filepath.Join(dir, "uas-msgs.log")}
	}
	uas, err := c.StartSIPp(ctx, "uas_ring_answer.xml", "", append([]string{"-aa", "-p", strconv.Itoa(uasPort),
		"-d", strconv.Itoa(int(ring / time.Millisecond)), "-m", "1"}, trace...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer uas.Stop()

	const relayed = `anyedge_sip_misdelivered_relayed_total{kind="response"}`
	const injected = `anyedge_sip_misdelivered_injected_total{kind="response"}`
	const invites = `anyedge_sip_requests_total{method="INVITE"}`
	relayedBefore, injectedBefore := metricOf(other, relayed), metricOf(owner, injected)
	invitesBefore := metricOf(owner, invites)

	uac, err := c.StartSIPp(ctx, "uac_call.xml", lab.AnycastSIP(), "-s", "bob", "-p", strconv.Itoa(uacPort),
		"-m", "1", "-timeout", "40s", "-timeout_error")
	if err != nil {
		t.Fatal(err)
	}
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
		t.Fatalf("the route moved %v after the INVITE, after the callee's %v of ringing: the test proves nothing", since, ring)
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
		t.Fatalf("the call did not complete: %v", err)
	}
	if err := uas.Wait(); err != nil {
		t.Errorf("callee: %v", err)
	}
	r, i := metricOf(other, relayed)-relayedBefore, metricOf(owner, injected)-injectedBefore
	t.Logf("call completed; %s relayed %d responses to %s, which fed %d to its transactions", other.Name, r, owner.Name, i)
	if r < 1 {
		t.Errorf("%s relayed no response: the 200 did not take the misdelivered path", other.Name)
	}
	if i < 1 {
		t.Errorf("%s injected no relayed response", owner.Name)
	}

	if err := owner.Post("/v1/undrain", ""); err != nil {
		t.Fatal(err)
	}
	undrained = true
	d := ecmp(t, l, a, 30*time.Second)
	t.Logf("undrained: back in ECMP after %v", d.Round(time.Millisecond))
}
