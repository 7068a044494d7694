//go:build e2e && linux

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/e2e/netlab"
	"github.com/anyedge/anyedge/internal/admin"
)

// TestGeoTwoRegions runs the user-facing distributed location (geo) on two
// regions of two edged nodes each, with real SIPp user agents:
//
//	region rA  198.18.1.0/24: a1 .11 (id 1, home of the users), a2 .12 (id 2),
//	                          uaA .21 (the callee's UAS), uaA2 .22 (a caller)
//	region rB  198.18.2.0/24: b1 .11 (id 3), b2 .12 (id 4), uaB .21 (a caller)
//	wan        198.18.1.1 / 198.18.2.1: the router between the regions
//
// Each region's nodes share its sharing tag (home-rA, home-rB): they are
// HA partners. The scenarios run in order on the same lab, each building
// on the state the previous one left:
//
//  1. users registered at a1 are called from region B through b1: the call
//     is relayed to a1, which delivers it (a1's relayed lookups, the Via
//     path seen by the UA); the same calls placed in region A through a1
//     are the direct baseline for the setup time.
//  2. a1 is killed (SIGKILL): a2 takes its tag over and the next call from
//     region B reaches the UA through a2.
//  3. a1 restarts: it syncs from a2 and holds its bindings again, and calls
//     go through it again.
//  4. the WAN is cut; region A unregisters a user and region B registers
//     one; the WAN is restored: the cluster heals by itself and a lookup
//     on every node finds every live binding, and not the removed one.
func TestGeoTwoRegions(t *testing.T) {
	c := newTestCluster(t) // skips unless root
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp not installed (make deps): %v", err)
	}
	rA := c.lab.Bridge("rA")
	rB := c.lab.Bridge("rB")
	wan := c.lab.Host("wan", rA, "198.18.1.1/24")
	wanB := wan.Attach(rB, "198.18.2.1/24")
	wanA := wan.Ifaces()[0]
	if err := wan.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	routeVia := func(h *netlab.Host, region string) {
		t.Helper()
		dst, gw := "198.18.2.0/24", "198.18.1.1"
		if region == "rB" {
			dst, gw = "198.18.1.0/24", "198.18.2.1"
		}
		if err := h.AddRoute(dst, gw); err != nil {
			t.Fatal(err)
		}
	}

	b1Cluster := "198.18.2.11:5600"
	a2Cluster := "198.18.1.12:5600"
	join := []string{b1Cluster, a2Cluster}
	a1 := addGeoNode(c, rA, geoSpec{name: "a1", id: 1, ip: "198.18.1.11", region: "rA", priority: 200, join: join})
	a2 := addGeoNode(c, rA, geoSpec{name: "a2", id: 2, ip: "198.18.1.12", region: "rA", join: join})
	b1 := addGeoNode(c, rB, geoSpec{name: "b1", id: 3, ip: "198.18.2.11", region: "rB", seed: true, join: join})
	b2 := addGeoNode(c, rB, geoSpec{name: "b2", id: 4, ip: "198.18.2.12", region: "rB", join: join})
	all := []*node{a1, a2, b1, b2}
	for _, n := range all {
		routeVia(n.host, map[bool]string{true: "rA", false: "rB"}[n == a1 || n == a2])
	}
	uaA := newSipUA(c.lab, rA, "uaA", "198.18.1.21")
	uaA2 := newSipUA(c.lab, rA, "uaA2", "198.18.1.22")
	uaB := newSipUA(c.lab, rB, "uaB", "198.18.2.21")
	routeVia(uaA.host, "rA")
	routeVia(uaA2.host, "rA")
	routeVia(uaB.host, "rB")

	mesh := fullMesh(all)
	for _, n := range []*node{b1, a1, a2, b2} {
		c.start(t, n)
	}
	d := c.await(t, 20*time.Second, all, mesh)
	t.Logf("two regions, full mesh of 4 after %v", d.Round(time.Millisecond))
	d = awaitSynced(t, all, 20*time.Second)
	t.Logf("every node's capabilities synced after another %v", d.Round(time.Millisecond))

	// alice and bob register at a1 from uaA: a1 is their home.
	alicePort, bobPort := uaA.port(), uaA.port()
	aliceContact := fmt.Sprintf("sip:alice@%s:%d;transport=UDP", uaA.ip(), alicePort)
	runSIPp(t, uaA, "uac_register_noauth.xml", gsip(a1), "-s", "alice", "-p", strconv.Itoa(alicePort))
	runSIPp(t, uaA, "uac_register_noauth.xml", gsip(a1), "-s", "bob", "-p", strconv.Itoa(bobPort))
	// Every node knows where they live before the first call.
	d = netlab.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		return errors.Join(
			expectHome(all, "alice@example.com", a1, aliceContact),
			expectHome(all, "bob@example.com", a1, ""))
	})
	t.Logf("alice and bob registered at a1, found from every node after %v", d.Round(time.Millisecond))

	const calls = 5
	var relaySetup, directSetup []time.Duration
	ok := t.Run("call_relayed_to_home", func(t *testing.T) {
		rel0 := metricWith(t, a1, "anyedge_geo_lookups_total", `kind="relayed"`)
		fwd0 := metricWith(t, b1, "anyedge_sip_relayed_requests_total", "")
		res := callAlice(t, uaB, b1, uaA, alicePort, calls)
		relaySetup = res.setup
		if err := res.path(b1, a1); err != nil {
			t.Error(err)
		}
		rel := metricWith(t, a1, "anyedge_geo_lookups_total", `kind="relayed"`) - rel0
		fwd := metricWith(t, b1, "anyedge_sip_relayed_requests_total", "") - fwd0
		t.Logf("%d calls uaB → b1 → a1 → alice: setup (INVITE→180 at the caller) %s; b1 relayed +%v, a1 relayed lookups +%v",
			calls, fmtSetups(res.setup), fwd, rel)
		if rel < calls || fwd < calls {
			t.Errorf("want every INVITE relayed by b1 and looked up locally on a1: b1 +%v, a1 +%v, want %d each", fwd, rel, calls)
		}

		res = callAlice(t, uaA2, a1, uaA, alicePort, calls)
		directSetup = res.setup
		if err := res.path(a1); err != nil {
			t.Error(err)
		}
		t.Logf("%d calls uaA2 → a1 → alice (direct): setup %s", calls, fmtSetups(res.setup))
		if len(relaySetup) > 0 && len(directSetup) > 0 {
			t.Logf("call setup: relayed median %v, direct median %v, relay costs %v",
				median(relaySetup), median(directSetup), median(relaySetup)-median(directSetup))
		}
	})
	if !ok {
		t.Fatal("the first calls failed: the failover scenarios need them")
	}

	var takeoverTag, takeoverB time.Duration
	ok = t.Run("kill_home_partner_takes_over", func(t *testing.T) {
		if owner := tagOwner(t, a2, "home-rA"); owner != a1.id {
			t.Fatalf("home-rA is owned by %d before the kill, want a1 (%d, priority 200)", owner, a1.id)
		}
		t0 := time.Now()
		if err := a1.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		// Both clocks run concurrently from the kill.
		type timed struct {
			d   time.Duration
			err error
		}
		tagc, routec := make(chan timed, 1), make(chan timed, 1)
		go func() {
			_, err := netlab.Poll(15*time.Second, 10*time.Millisecond, func() error {
				if o := tagOwnerErr(a2, "home-rA"); o != a2.id {
					return fmt.Errorf("a2 sees home-rA owned by %d", o)
				}
				return nil
			})
			tagc <- timed{time.Since(t0), err}
		}()
		go func() {
			_, err := netlab.Poll(15*time.Second, 10*time.Millisecond, func() error {
				return expectRelay(b1, "alice@example.com", a2)
			})
			routec <- timed{time.Since(t0), err}
		}()
		tr, rr := <-tagc, <-routec
		if tr.err != nil || rr.err != nil {
			t.Fatal(errors.Join(tr.err, rr.err))
		}
		takeoverTag, takeoverB = tr.d, rr.d
		t.Logf("a1 killed: a2 owns home-rA after %v; b1 routes alice's calls to a2 after %v",
			takeoverTag.Round(time.Millisecond), takeoverB.Round(time.Millisecond))
		if err, done := a1.proc.WaitTimeout(5 * time.Second); !done || err == nil {
			t.Errorf("a1 after SIGKILL: exited=%v %v", done, err)
		}
		// a2 serves alice's binding as a replica.
		if err := expectRoute(a2, "alice@example.com", "replica", a2, aliceContact); err != nil {
			t.Error(err)
		}
		rel0 := metricWith(t, a2, "anyedge_geo_lookups_total", `kind="relayed"`)
		res := callAlice(t, uaB, b1, uaA, alicePort, 1)
		if err := res.path(b1, a2); err != nil {
			t.Error(err)
		}
		if rel := metricWith(t, a2, "anyedge_geo_lookups_total", `kind="relayed"`) - rel0; rel < 1 {
			t.Errorf("a2 looked up no relayed request (+%v)", rel)
		}
		t.Logf("call uaB → b1 → a2 → alice with a1 dead: setup %s", fmtSetups(res.setup))
	})
	if !ok {
		t.Fatal("the takeover failed: skipping the restart and partition scenarios")
	}

	ok = t.Run("restart_syncs", func(t *testing.T) {
		t0 := time.Now()
		c.start(t, a1)
		c.await(t, 20*time.Second, all, mesh)
		dMesh := time.Since(t0)
		dSync := awaitSynced(t, []*node{a1}, 20*time.Second)
		caps, _ := a1.caps()
		t.Logf("a1 restarted: full mesh after %v, synced %v later: %+v", dMesh.Round(time.Millisecond), dSync.Round(time.Millisecond), caps)
		for _, cv := range caps {
			if strings.HasPrefix(cv.Name, "geo.") && cv.Donor == 0 && cv.Records == 0 {
				t.Errorf("a1's %s synced without a snapshot from a donor: %+v", cv.Name, cv)
			}
		}
		// Its bindings are back: homed on a1 again, and found through it
		// from everywhere.
		d := netlab.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
			return errors.Join(
				expectHome(all, "alice@example.com", a1, aliceContact),
				expectHome(all, "bob@example.com", a1, ""))
		})
		t.Logf("a1 serves alice and bob again, seen from every node %v after it synced", d.Round(time.Millisecond))
		if n, found, err := a1.metric("anyedge_geo_bindings"); err != nil || !found || n < 2 {
			t.Errorf("a1 anyedge_geo_bindings = %v (found %v, %v), want >= 2", n, found, err)
		}
		res := callAlice(t, uaB, b1, uaA, alicePort, 1)
		if err := res.path(b1, a1); err != nil {
			t.Error(err)
		}
		t.Logf("call uaB → b1 → a1 → alice after the restart: setup %s", fmtSetups(res.setup))
	})
	if !ok {
		t.Fatal("the restart failed: skipping the partition scenario")
	}

	t.Run("partition_heals", func(t *testing.T) {
		c.await(t, 10*time.Second, all, mesh)
		carolPort := uaB.port()
		carolContact := fmt.Sprintf("sip:carol@%s:%d;transport=UDP", uaB.ip(), carolPort)
		t0 := time.Now()
		if err := errors.Join(wanA.Down(), wanB.Down()); err != nil {
			t.Fatal(err)
		}
		healed := false
		heal := func() {
			if !healed {
				healed = true
				if err := errors.Join(wanA.Up(), wanB.Up()); err != nil {
					t.Error(err)
				}
			}
		}
		defer heal()
		// Each side sees the other region down (WAN timers).
		region := map[*node]string{a1: "rA", a2: "rA", b1: "rB", b2: "rB"}
		split := func(o *node, v cluster.TopologyView) error {
			for _, n := range all {
				if n == o {
					continue
				}
				nv, ok := findNode(v, n.id)
				same := region[n] == region[o]
				switch {
				case same && (!ok || nv.State != "up"):
					return fmt.Errorf("%s sees its partner %s as %q", o.name, n.name, nv.State)
				case !same && ok && nv.State == "up":
					return fmt.Errorf("%s still sees %s up", o.name, n.name)
				}
			}
			return nil
		}
		c.await(t, 20*time.Second, all, split)
		t.Logf("WAN cut: each region sees the other down after %v", time.Since(t0).Round(time.Millisecond))

		// Side A removes bob; side B registers carol at b1.
		runSIPp(t, uaA, "uac_unregister_noauth.xml", gsip(a1), "-s", "bob", "-p", strconv.Itoa(bobPort))
		runSIPp(t, uaB, "uac_register_noauth.xml", gsip(b1), "-s", "carol", "-p", strconv.Itoa(carolPort))
		netlab.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
			return errors.Join(
				expectHome([]*node{a1, a2}, "alice@example.com", a1, aliceContact),
				expectNone([]*node{a1, a2}, "bob@example.com"),
				expectHome([]*node{b1, b2}, "carol@example.com", b1, carolContact))
		})
		t.Logf("during the partition: bob unregistered on side A, carol registered on side B")

		t1 := time.Now()
		heal()
		dMesh := c.await(t, 30*time.Second, all, mesh)
		d := netlab.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
			return errors.Join(
				expectHome(all, "alice@example.com", a1, aliceContact),
				expectNone(all, "bob@example.com"),
				expectHome(all, "carol@example.com", b1, carolContact))
		})
		t.Logf("WAN restored: full mesh after %v, every node's lookups agree %v after the heal, %v after the mesh "+
			"(alice via a1, carol via b1, bob gone everywhere)", dMesh.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond), d.Round(time.Millisecond))
		res := callAlice(t, uaB, b1, uaA, alicePort, 1)
		if err := res.path(b1, a1); err != nil {
			t.Error(err)
		}
		t.Logf("call uaB → b1 → a1 → alice after the heal: setup %s", fmtSetups(res.setup))
	})

	t.Logf("figures: setup relayed %s, direct %s; takeover: tag %v, region B rerouted %v",
		fmtSetups(relaySetup), fmtSetups(directSetup), takeoverTag.Round(time.Millisecond), takeoverB.Round(time.Millisecond))
}

// geoSpec is one node of the two-region lab.
type geoSpec struct {
	name, ip, region string
	id               uint32
	priority         int
	seed             bool
	join             []string
}

// geoConfig is edged's config for the geo lab: only the keys it sets.
type geoConfig struct {
	Log     map[string]string `yaml:"log"`
	Admin   map[string]string `yaml:"admin"`
	Cluster struct {
		NodeID   uint32              `yaml:"node_id"`
		Region   string              `yaml:"region"`
		Listen   string              `yaml:"listen"`
		Priority int                 `yaml:"priority,omitempty"`
		Seed     bool                `yaml:"seed,omitempty"`
		Join     []string            `yaml:"join"`
		Key      string              `yaml:"key"`
		StateDir string              `yaml:"state_dir"`
		SIPAddr  string              `yaml:"sip_addr"`
		Tags     []map[string]string `yaml:"tags"`
	} `yaml:"cluster"`
	SIP map[string]any `yaml:"sip"`
	Geo map[string]any `yaml:"geo"`
}

// addGeoNode creates the node's host on br and writes its config (checked
// with `edged config check`); it does not start it.
func addGeoNode(c *testCluster, br *netlab.Bridge, s geoSpec) *node {
	c.t.Helper()
	h := c.lab.Host(s.name, br, s.ip+"/24")
	n := &node{id: s.id, name: s.name, host: h}
	var cfg geoConfig
	cfg.Log = map[string]string{"level": "info", "format": "text"}
	cfg.Admin = map[string]string{"listen": fmt.Sprintf("%s:%d", s.ip, adminPort), "token": adminToken}
	cl := &cfg.Cluster
	cl.NodeID, cl.Region, cl.Listen, cl.Priority, cl.Seed = s.id, s.region, n.clusterAddr(), s.priority, s.seed
	cl.Join, cl.Key, cl.StateDir = s.join, clusterKey, filepath.Join(c.lab.Dir(), s.name+"-state")
	cl.SIPAddr = fmt.Sprintf("%s:%d", s.ip, sipPort)
	cl.Tags = []map[string]string{{"name": "home-rA", "region": "rA"}, {"name": "home-rB", "region": "rB"}}
	cfg.SIP = map[string]any{
		"listeners": []map[string]string{{"transport": "udp", "addr": cl.SIPAddr}},
		"domains":   []string{sipDomain},
	}
	cfg.Geo = map[string]any{}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	n.cfg = filepath.Join(c.lab.Dir(), s.name+".yaml")
	if err := os.WriteFile(n.cfg, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if out, err := execOut(bins.edged, "config", "check", n.cfg); err != nil {
		c.t.Fatalf("edged config check %s: %v\n%s\n%s", n.cfg, err, out, b)
	}
	c.nodes[s.name] = n
	return n
}

func gsip(n *node) string { return fmt.Sprintf("%s:%d", n.ip(), sipPort) }

// awaitSynced waits until every capability of every node is synced.
func awaitSynced(t *testing.T, nodes []*node, timeout time.Duration) time.Duration {
	t.Helper()
	return netlab.Eventually(t, timeout, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if err := n.exitedErr(); err != nil {
				return err
			}
			caps, err := n.caps()
			if err != nil {
				return err
			}
			if len(caps) == 0 {
				return fmt.Errorf("%s: no capabilities", n.name)
			}
			for _, cv := range caps {
				if cv.State != "synced" {
					return fmt.Errorf("%s: %s is %s", n.name, cv.Name, cv.State)
				}
			}
		}
		return nil
	})
}

// lookup asks n's admin API where a call for aor entering n would go.
func lookup(n *node, aor string) ([]admin.LocationRoute, error) {
	var rs []admin.LocationRoute
	return rs, n.getJSON("/v1/location/"+aor, &rs)
}

// expectRoute checks that n's lookup of aor is exactly one route of kind
// to node to, with contact (when not "").
func expectRoute(n *node, aor, kind string, to *node, contact string) error {
	rs, err := lookup(n, aor)
	if err != nil {
		return err
	}
	if len(rs) != 1 || rs[0].Kind != kind || rs[0].Node != to.id || (contact != "" && rs[0].Contact != contact) {
		return fmt.Errorf("%s looks %s up as %+v, want one %s route to %s (%d) %s", n.name, aor, rs, kind, to.name, to.id, contact)
	}
	if !rs[0].Expires.After(time.Now()) {
		return fmt.Errorf("%s: %s's route has expired: %+v", n.name, aor, rs[0])
	}
	return nil
}

// expectRelay checks that n relays calls for aor to node to.
func expectRelay(n *node, aor string, to *node) error {
	return expectRoute(n, aor, "relay", to, "")
}

// expectHome checks that every node finds aor through home: home itself
// delivers to contact, every other node relays to home.
func expectHome(nodes []*node, aor string, home *node, contact string) error {
	var errs []error
	for _, n := range nodes {
		if n == home {
			errs = append(errs, expectRoute(n, aor, "local", home, contact))
		} else {
			errs = append(errs, expectRelay(n, aor, home))
		}
	}
	return errors.Join(errs...)
}

// expectNone checks that no node finds aor.
func expectNone(nodes []*node, aor string) error {
	var errs []error
	for _, n := range nodes {
		rs, err := lookup(n, aor)
		if err == nil && len(rs) != 0 {
			err = fmt.Errorf("%s still finds %s: %+v", n.name, aor, rs)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func tagOwnerErr(n *node, tag string) uint32 {
	var tags []cluster.TagView
	if err := n.getJSON("/v1/cluster/tags", &tags); err != nil {
		return 0
	}
	for _, tv := range tags {
		if tv.Name == tag {
			return tv.Owner
		}
	}
	return 0
}

func tagOwner(t *testing.T, n *node, tag string) uint32 {
	t.Helper()
	var tags []cluster.TagView
	if err := n.getJSON("/v1/cluster/tags", &tags); err != nil {
		t.Fatal(err)
	}
	for _, tv := range tags {
		if tv.Name == tag {
			return tv.Owner
		}
	}
	t.Fatalf("%s does not know tag %s: %+v", n.name, tag, tags)
	return 0
}

// metricWith sums the samples of family name whose labels contain label
// ("" for all).
func metricWith(t *testing.T, n *node, name, label string) float64 {
	t.Helper()
	resp, err := n.host.HTTPClient().Get(n.adminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') || !strings.Contains(rest, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", n.name, line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// callResult is what one batch of calls to alice showed.
type callResult struct {
	setup []time.Duration // INVITE sent → 180 received, per call, at the caller
	vias  [][]string      // the Via hosts of each INVITE as the UA received it, top first
}

// path checks that every INVITE reached the UA through exactly nodes, in
// order (the first node the caller's, the last the one that delivered).
func (r callResult) path(nodes ...*node) error {
	var want []string
	for i := len(nodes) - 1; i >= 0; i-- {
		want = append(want, gsip(nodes[i]))
	}
	if len(r.vias) == 0 {
		return errors.New("the UA received no INVITE")
	}
	for i, v := range r.vias {
		// The caller's own Via is last.
		if len(v) != len(want)+1 || !slices.Equal(v[:len(want)], want) {
			return fmt.Errorf("INVITE %d reached the UA through Vias %v, want %v then the caller's", i+1, v, want)
		}
	}
	return nil
}

// callAlice runs n calls from caller through edge to alice's UAS on
// uaA:port (uac_call.xml / uas_answer.xml, one at a time) and returns what
// the caller and the UA saw. The SIPp scenarios assert the calls' success.
func callAlice(t *testing.T, caller *sipUA, edge *node, ua *sipUA, port, n int) callResult {
	t.Helper()
	uas := startSIPp(t, ua, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(port), "-m", strconv.Itoa(n))
	uas.listening(t)
	uac := startSIPp(t, caller, "uac_call.xml", gsip(edge), "-s", "alice", "-m", strconv.Itoa(n), "-r", "20")
	uac.wait(t)
	uas.wait(t)
	var res callResult
	out, err := sippMessages(filepath.Join(uac.dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]time.Time{}
	for _, m := range out {
		switch {
		case m.sent && strings.HasPrefix(m.first, "INVITE "):
			if _, ok := sent[m.callID]; !ok {
				sent[m.callID] = m.at
			}
		case !m.sent && strings.HasPrefix(m.first, "SIP/2.0 180"):
			if t0, ok := sent[m.callID]; ok {
				res.setup = append(res.setup, m.at.Sub(t0))
				delete(sent, m.callID)
			}
		}
	}
	in, err := sippMessages(filepath.Join(uas.dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range in {
		if !m.sent && strings.HasPrefix(m.first, "INVITE ") && !seen[m.callID] { // not a retransmission
			seen[m.callID] = true
			res.vias = append(res.vias, m.vias)
		}
	}
	if len(res.setup) != n || len(res.vias) != n {
		t.Errorf("%d calls: %d setup times and %d INVITEs at the UA", n, len(res.setup), len(res.vias))
	}
	return res
}

// sippMsg is one message of a SIPp -trace_msg log.
type sippMsg struct {
	at     time.Time
	sent   bool
	first  string   // request or status line
	callID string   // Call-ID
	vias   []string // Via sent-by host:port, top first
}

// sippMessages parses a SIPp -trace_msg log: blocks that start with a
// dashed line carrying the local time ("----- 2026-11-25 15:09:07.003074"),
// then "UDP message sent" or "UDP message received", then the message.
func sippMessages(path string) ([]sippMsg, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []sippMsg
	var cur *sippMsg
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.HasPrefix(line, "-----") {
			f := strings.Fields(line)
			if len(f) < 3 {
				return nil, fmt.Errorf("%s: bad separator %q", path, line)
			}
			at, err := time.ParseInLocation("2006-01-02 15:04:05.000000", f[1]+" "+f[2], time.Local)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", path, line, err)
			}
			out = append(out, sippMsg{at: at})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "UDP message sent"):
			cur.sent = true
		case strings.HasPrefix(line, "UDP message received"):
		case line == "":
		case cur.first == "":
			cur.first = line
		default:
			name, val, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			val = strings.TrimSpace(val)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "call-id", "i":
				cur.callID = val
			case "via", "v":
				for _, v := range strings.Split(val, ",") {
					// "SIP/2.0/UDP host:port;params"
					f := strings.Fields(strings.TrimSpace(v))
					if len(f) >= 2 {
						host, _, _ := strings.Cut(f[1], ";")
						cur.vias = append(cur.vias, host)
					}
				}
			}
		}
	}
	return out, sc.Err()
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtSetups(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("median %v (min %v, max %v, n=%d)", median(s).Round(10*time.Microsecond),
		s[0].Round(10*time.Microsecond), s[len(s)-1].Round(10*time.Microsecond), len(s))
}
