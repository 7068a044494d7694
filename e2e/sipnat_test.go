//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/anyedge/anyedge/e2e/netlab"
)

// TestSIPNAT puts a phone behind a real NAT: a namespace doing nftables
// masquerade between a private segment and the edge's segment.
//
//	public  198.18.0.0/24:  edge 198.18.0.11, caller 198.18.0.21, nat 198.18.0.1
//	private 198.19.0.0/24:  nat 198.19.0.1, phone 198.19.0.10 (default route via nat)
//
// The phone registers with its private Contact; the edge has no route to
// 198.19.0.0/24 at all, so a call can only reach the phone if the edge
// sends it to the address the REGISTER came from (the NAT's public address
// and mapped port) and the NAT's mapping carries it back in.
func TestSIPNAT(t *testing.T) {
	lab := netlab.New(t) // skips unless root
	pub := lab.Bridge("pub")
	priv := lab.Bridge("priv")

	natbox := lab.Host("nat", pub, "198.18.0.1/24")
	privIf := natbox.Attach(priv, "198.19.0.1/24")
	pubIf := natbox.Ifaces()[0]
	if err := natbox.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	// "random": the NAT picks a random source port, as carrier-grade NATs
	// do, so the mapped port differs from the one in the phone's Contact.
	rules := filepath.Join(lab.Dir(), "nat.nft")
	ruleset := fmt.Sprintf(`table ip nat {
	chain post {
		type nat hook postrouting priority 100;
		oifname %q counter masquerade random
	}
}
`, pubIf.Name)
	if err := os.WriteFile(rules, []byte(ruleset), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := natbox.Run(ctx, "nft", "-f", rules); err != nil {
		t.Fatal(err)
	}
	t.Logf("nat: masquerade out of %s (public side), in from %s (private side)", pubIf.Name, privIf.Name)

	phone := &sipUA{host: lab.Host("phone", priv, "198.19.0.10/24"), next: 5061}
	if err := phone.host.AddRoute("default", "198.19.0.1"); err != nil {
		t.Fatal(err)
	}
	caller := newSipUA(lab, pub, "caller", "198.18.0.21")
	edge := startSIPEdge(t, lab, pub, "edge", "198.18.0.11", map[string]any{
		"domains": []string{sipDomain},
		// Keepalives every 2 s, so that the test sees them cross the NAT.
		"keepalive": map[string]any{"interval": "2s"},
	})
	if n := edge.metric(t, "anyedge_sip_keepalive_contacts"); n != 0 {
		t.Fatalf("%v NATed contacts before anyone registered", n)
	}

	// The phone registers its private address, then answers on that port.
	port := phone.port()
	reg := startSIPp(t, phone, "uac_register_noauth.xml", edge.sipAddr(), "-s", "frank", "-p", strconv.Itoa(port))
	reg.wait(t)
	msgs, err := os.ReadFile(filepath.Join(reg.dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	contact := regexp.MustCompile(`Contact: <sip:frank@([0-9.]+:[0-9]+)`).FindSubmatch(msgs)
	received := regexp.MustCompile(`received=([0-9.]+)`).FindSubmatch(msgs)
	rport := regexp.MustCompile(`rport=([0-9]+)`).FindSubmatch(msgs)
	if contact == nil || received == nil || rport == nil {
		t.Fatalf("the REGISTER and its 200 lack a Contact or received/rport:\n%s", msgs)
	}
	t.Logf("phone registered Contact %s; the edge saw it from %s:%s", contact[1], received[1], rport[1])
	if string(received[1]) != "198.18.0.1" {
		t.Fatalf("the edge saw the REGISTER from %s, not from the NAT's public address: no masquerade?", received[1])
	}

	// SIPp counts each keepalive OPTIONS it auto-answers (-aa) as a call
	// towards -m: the UAS takes up to 100 and is stopped after the call.
	uas := startSIPp(t, phone, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(port), "-m", "100")
	uas.listening(t)

	// The edge stored a NATed binding: the keepalive pinger tracks it.
	d := netlab.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		if n := edge.metric(t, "anyedge_sip_keepalive_contacts"); n != 1 {
			return fmt.Errorf("anyedge_sip_keepalive_contacts = %v, want 1 (frank's binding, NATed)", n)
		}
		return nil
	})
	t.Logf("the edge tracks 1 NATed contact (anyedge_sip_keepalive_contacts), %v after the UAS listened", d.Round(time.Millisecond))

	// Keepalives cross the NAT too: at least one OPTIONS answered by the
	// phone (SIPp -aa) through the mapping.
	d = netlab.Eventually(t, 15*time.Second, 200*time.Millisecond, func() error {
		probes := edge.metric(t, "anyedge_sip_keepalive_probes_total")
		fails := edge.metric(t, "anyedge_sip_keepalive_failures_total")
		if probes-fails < 1 {
			return fmt.Errorf("keepalive probes %v, failures %v: none answered yet", probes, fails)
		}
		return nil
	})
	t.Logf("keepalive OPTIONS answered through the NAT mapping (probes %v, failures %v), %v after the UAS listened",
		edge.metric(t, "anyedge_sip_keepalive_probes_total"), edge.metric(t, "anyedge_sip_keepalive_failures_total"), d.Round(time.Millisecond))

	inv0 := edge.metricLabel(t, "anyedge_sip_requests_total", `method="INVITE"`)
	start := time.Now()
	// The caller's scenario asserts 180, 200 (then ACK) and the BYE's
	// 200: every one of them came from the phone through the NAT.
	runSIPp(t, caller, "uac_call.xml", edge.sipAddr(), "-s", "frank")
	callDur := time.Since(start)
	uas.stop()
	inv := edge.metricLabel(t, "anyedge_sip_requests_total", `method="INVITE"`) - inv0
	uasMsgs, err := os.ReadFile(filepath.Join(uas.dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	got := func(what string) bool { return regexp.MustCompile(what).Match(uasMsgs) }
	gotInvite := got(`received \[[0-9]+\] bytes :\s+INVITE sip:frank@198\.19\.0\.10`)
	gotAck := got(`received \[[0-9]+\] bytes :\s+ACK `)
	gotBye := got(`received \[[0-9]+\] bytes :\s+BYE `)
	t.Logf("caller → edge → NAT 198.18.0.1:%s → phone 198.19.0.10:%d: INVITE/180/200/ACK/BYE/200 in %v; edge INVITEs +%v; phone got INVITE %v, ACK %v, BYE %v",
		rport[1], port, callDur.Round(time.Millisecond), inv, gotInvite, gotAck, gotBye)
	if inv != 1 || !gotInvite || !gotAck || !gotBye {
		t.Errorf("want the INVITE through the edge, and INVITE, ACK and BYE at the phone")
	}

	out, err := natbox.Run(ctx, "nft", "list", "chain", "ip", "nat", "post")
	if err == nil {
		if m := regexp.MustCompile(`counter packets ([0-9]+)`).FindSubmatch(out); m != nil {
			t.Logf("nat: %s new flows masqueraded", m[1])
		}
	}
}
