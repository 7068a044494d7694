//go:build e2e && linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/e2e/netlab"
	"github.com/anyedge/anyedge/edge/dialog"
)

// dialogVIP is the SIP address the HA pair serves: it follows the owner
// of the sharing tag home-lab (an l2 VIP, moved by gratuitous ARP).
const dialogVIP = "203.0.113.50"

// TestDialogFailover: call state replicated to the HA partner keeps an
// established call working after its node dies.
//
//	lan 198.18.0.0/24: d1 .11 (id 1, priority 200: holds the VIP),
//	                   d2 .12 (id 2), ua .21 (a SIPp caller and callee)
//
// Both nodes listen on the VIP only (d2 binds it with IP_FREEBIND before
// it holds it), with the same record_route_key, so a route recorded by d1
// is d2's too. A call is made through d1; d2 holds it as a confirmed
// replica. d1 is killed (SIGKILL) while the call is up: d2 takes the tag
// and the VIP, and the caller's re-INVITE and BYE, sent along the route
// set to the VIP, reach d2, which finds the replica, relays both to the
// callee and terminates the call on the BYE. d1 then restarts and syncs the terminated call back
// from d2 before it is ready.
func TestDialogFailover(t *testing.T) {
	c := newTestCluster(t) // skips unless root
	d1 := addDialogNode(c, "d1", 1, "198.18.0.11", 200, nil)
	d2 := addDialogNode(c, "d2", 2, "198.18.0.12", 100, []string{"198.18.0.11:5600"})
	// A witness in another region: with it, d2 alone still sees a quorum
	// of the cluster and may take the tag over.
	w := addDialogNode(c, "w", 3, "198.18.0.13", 100, []string{"198.18.0.11:5600"})
	ua := newSipUA(c.lab, c.lan, "ua", "198.18.0.21")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := ua.host.Run(ctx, "ip", "route", "add", dialogVIP+"/32", "dev", ua.host.Ifaces()[0].Name); err != nil {
		t.Fatalf("route to the VIP: %v %s", err, out)
	}
	all := []*node{d1, d2, w}
	for _, n := range all {
		c.start(t, n)
	}
	c.await(t, 20*time.Second, all, fullMesh(all))
	awaitSynced(t, all, 20*time.Second)
	netlab.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if o := tagOwnerErr(d2, "home-lab"); o != d1.id {
			return fmt.Errorf("home-lab owned by %d, want d1", o)
		}
		return nil
	})
	vip := dialogVIP + ":" + strconv.Itoa(sipPort)

	// bob (the callee) registers through the VIP: d1 holds his binding.
	bobPort := ua.port()
	runSIPp(t, ua, "uac_register_noauth.xml", vip, "-s", "bob", "-p", strconv.Itoa(bobPort))
	uas := startSIPp(t, ua, "uas_answer_reinvite.xml", "", "-aa", "-p", strconv.Itoa(bobPort))
	uas.listening(t)
	uac := startSIPp(t, ua, "uac_call_hold.xml", vip, "-s", "bob", "-d", "4000")

	// The call is confirmed on d1 and replicated to d2.
	var s1, s2 dialog.Summary
	dConf := netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := errors.Join(d1.getJSON("/v1/dialogs", &s1), d2.getJSON("/v1/dialogs", &s2)); err != nil {
			return err
		}
		if s1.Home["confirmed"] != 1 || s2.Replica["confirmed"] != 1 {
			return fmt.Errorf("d1 home %v, d2 replica %v", s1.Home, s2.Replica)
		}
		return nil
	})
	t.Logf("call confirmed on d1 and replicated to d2 within %v of the INVITE", dConf.Round(time.Millisecond))

	t0 := time.Now()
	if err := d1.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	dTag := netlab.Eventually(t, 15*time.Second, 10*time.Millisecond, func() error {
		if o := tagOwnerErr(d2, "home-lab"); o != d2.id {
			return fmt.Errorf("d2 sees home-lab owned by %d", o)
		}
		return nil
	})
	t.Logf("d1 killed: d2 owns home-lab (and the VIP) after %v", dTag.Round(time.Millisecond))

	// The caller's re-INVITE and BYE go to the VIP, now d2: the call is
	// re-negotiated, then ends on both legs.
	uac.wait(t)
	uas.wait(t)
	t.Logf("re-INVITE and BYE through d2 answered, %v after the kill", time.Since(t0).Round(time.Millisecond))
	netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		if err := d2.getJSON("/v1/dialogs", &s2); err != nil {
			return err
		}
		if s2.Replica["confirmed"] != 0 || s2.Replica["terminated"] != 1 {
			return fmt.Errorf("d2 replica %v, want the call terminated", s2.Replica)
		}
		return nil
	})
	if n := metricWith(t, d2, "anyedge_dialog_replica_requests_total", ""); n < 2 {
		t.Errorf("d2 handled %v in-dialog requests on replicas, want the re-INVITE and the BYE", n)
	}
	if n := metricWith(t, d2, "anyedge_dialog_replication_lag_seconds_count", ""); n < 2 {
		t.Errorf("d2 observed %v replication lags", n)
	}

	// d1 restarts: it syncs the call (now terminated, written by d2) from
	// d2 before it is ready; the call is its own again.
	c.start(t, d1)
	awaitSynced(t, all, 20*time.Second)
	if err := d1.getJSON("/v1/dialogs", &s1); err != nil {
		t.Fatal(err)
	}
	if !s1.Synced || s1.Home["terminated"] != 1 || s1.Home["confirmed"] != 0 {
		t.Fatalf("d1 after restart: %+v, want its call back, terminated", s1)
	}
	t.Logf("d1 restarted and synced its call back from d2: %v", s1.Home)
}

// addDialogNode writes the config of one node of the HA pair (checked
// with `edged config check`); it does not start it.
func addDialogNode(c *testCluster, name string, id uint32, ip string, priority int, join []string) *node {
	c.t.Helper()
	h := c.lab.Host(name, c.lan, ip+"/24")
	n := &node{id: id, name: name, host: h}
	region := "lab"
	if name == "w" {
		region = "wit"
	}
	cl := map[string]any{
		"node_id": id, "region": region, "listen": n.clusterAddr(), "priority": priority,
		"key": clusterKey, "state_dir": filepath.Join(c.lab.Dir(), name+"-state"),
		"sip_addr": fmt.Sprintf("%s:%d", dialogVIP, sipPort),
		"tags":     []map[string]string{{"name": "home-lab", "region": "lab"}, {"name": "home-wit", "region": "wit"}},
	}
	if join == nil {
		cl["seed"] = true
	} else {
		cl["join"] = join
	}
	cfg := map[string]any{
		"log":     map[string]string{"level": "debug", "format": "text"},
		"admin":   map[string]string{"listen": fmt.Sprintf("%s:%d", ip, adminPort), "token": adminToken},
		"cluster": cl,
		"sip": map[string]any{
			"listeners":        []map[string]string{{"transport": "udp", "addr": fmt.Sprintf("%s:%d", dialogVIP, sipPort)}},
			"domains":          []string{sipDomain},
			"record_route_key": "e2e-record-route-key-0123456789abcdef",
		},
		"vips":   []map[string]string{{"tag": "home-lab", "address": dialogVIP + "/32", "mode": "l2", "interface": h.Ifaces()[0].Name}},
		"dialog": map[string]any{"max_calls_per_user": 4},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	n.cfg = filepath.Join(c.lab.Dir(), name+".yaml")
	if err := os.WriteFile(n.cfg, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if out, err := execOut(bins.edged, "config", "check", n.cfg); err != nil {
		c.t.Fatalf("edged config check %s: %v\n%s\n%s", n.cfg, err, out, b)
	}
	c.nodes[name] = n
	return n
}
