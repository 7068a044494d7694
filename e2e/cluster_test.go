//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/e2e/netlab"
)

// TestCluster runs one five-node cluster through a sequence of real-network
// scenarios. Scenarios share the cluster (starting one costs seconds); each
// first checks that the cluster is whole again, so that a failure in one
// does not hide behind another.
func TestCluster(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add(nodeSpec{name: "n1", id: 1, ip: "198.18.0.11", seed: true, join: []string{"198.18.0.11:5600"}})
	members := []*node{n1}
	for i := uint32(2); i <= 5; i++ {
		members = append(members, c.add(nodeSpec{
			name: fmt.Sprintf("n%d", i), id: i, ip: fmt.Sprintf("198.18.0.%d", 10+i), join: []string{n1.clusterAddr()},
		}))
	}
	n2, n3, n4, n5 := members[1], members[2], members[3], members[4]
	// Outsiders: a node with the wrong key, a node claiming id 3, and a
	// plain host for raw TCP clients.
	wrongKey := c.add(nodeSpec{name: "n6", id: 6, ip: "198.18.0.16", join: []string{n1.clusterAddr()},
		key: "fedcba9876543210fedcba9876543210"})
	dup := c.add(nodeSpec{name: "n3dup", id: 3, ip: "198.18.0.17", join: []string{n1.clusterAddr()}})
	client := c.lab.Host("client", c.lan, "198.18.0.20/24")

	mesh := fullMesh(members)
	whole := func(t *testing.T) {
		t.Helper()
		c.await(t, 10*time.Second, members, mesh)
	}

	if !t.Run("join_through_one_seed", func(t *testing.T) {
		c.start(t, n1)
		t0 := time.Now()
		for _, n := range members[1:] {
			c.start(t, n)
		}
		d := c.await(t, 10*time.Second, members, mesh)
		t.Logf("full mesh of 5 seen by every node %v after nodes 2..5 were started (%v after they were all healthy)",
			time.Since(t0).Round(time.Millisecond), d.Round(time.Millisecond))
	}) {
		t.Fatal("the cluster did not form: skipping the scenarios that need it")
	}

	t.Run("edgectl_topology", func(t *testing.T) {
		if bins.edgectlErr != nil {
			t.Skipf("edgectl not built: %v", bins.edgectlErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := n2.host.Run(ctx, bins.edgectl, "-admin", n2.adminURL(), "-o", "json", "cluster", "topology")
		if err != nil {
			t.Fatal(err)
		}
		var v cluster.TopologyView
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("edgectl -o json cluster topology: %v\n%s", err, out)
		}
		if err := mesh(n2, v); err != nil {
			t.Fatalf("edgectl's topology: %v", err)
		}
		if out, err = n2.host.Run(ctx, bins.edgectl, "-admin", n2.adminURL(), "cluster", "nodes"); err != nil {
			t.Fatal(err)
		}
		t.Logf("edgectl cluster nodes on n2:\n%s", out)
	})

	// No flapping under a full CPU load: every core busy with spinning
	// processes for a while, and no link may be declared dead meanwhile.
	t.Run("no_flap_under_cpu_load", func(t *testing.T) {
		whole(t)
		deadBefore := sumLinksDead(t, members)
		hogs := runtime.NumCPU() * 2
		for i := 0; i < hogs; i++ {
			// The shell itself spins and stops after about 8 s: under
			// `timeout`, killing timeout (the PID we hold) left the
			// spinning shell behind for good.
			p := client.Start(t, fmt.Sprintf("hog%d.log", i), "sh", "-c",
				`end=$(($(date +%s) + 8)); while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; done`)
			t.Cleanup(func() { p.Kill() })
		}
		netlab.Consistently(t, 6*time.Second, 100*time.Millisecond, func() error {
			for _, n := range members {
				v, err := n.topology()
				if err != nil {
					return err
				}
				if err := mesh(n, v); err != nil {
					return fmt.Errorf("under CPU load: %w", err)
				}
			}
			return nil
		})
		if after := sumLinksDead(t, members); after != deadBefore {
			t.Errorf("links declared dead under CPU load: %v -> %v", deadBefore, after)
		}
		t.Logf("%d CPU hogs on %d cores for 6 s: no link declared dead, full mesh throughout", hogs, runtime.NumCPU())
	})

	t.Run("link_cut_rerouted", func(t *testing.T) {
		whole(t)
		if err := c.lab.Cut(n2.host, n3.host); err != nil {
			t.Fatal(err)
		}
		healed := false
		heal := func() {
			if !healed {
				healed = true
				if err := c.lab.Heal(n2.host, n3.host); err != nil {
					t.Error(err)
				}
			}
		}
		defer heal()
		rerouted := func(o *node, v cluster.TopologyView) error {
			other := n3
			if o == n3 {
				other = n2
			}
			return sees(other.id, func(nv cluster.NodeView) error {
				if nv.State != "up" || nv.Direct || nv.Hops != 2 || nv.NextHop == nv.ID || nv.NextHop == 0 {
					return fmt.Errorf("%s direct=%v hops=%d next_hop=%d, want up, not direct, hops=2 through another node",
						nv.State, nv.Direct, nv.Hops, nv.NextHop)
				}
				return nil
			})(o, v)
		}
		d := c.await(t, 2*time.Second, []*node{n2, n3}, rerouted)
		v, _ := n2.topology()
		nv, _ := findNode(v, 3)
		t.Logf("after cutting 2<->3: rerouted in %v; n2 reaches 3 via %d in %d hops", d.Round(time.Millisecond), nv.NextHop, nv.Hops)
		// Nobody else lost anyone.
		for _, o := range []*node{n1, n4, n5} {
			for _, id := range []uint32{2, 3} {
				if err := sees(id, isUpDirect)(o, mustTopology(t, o)); err != nil {
					t.Error(err)
				}
			}
		}

		heal()
		d = c.await(t, 10*time.Second, []*node{n2, n3}, func(o *node, v cluster.TopologyView) error {
			other := uint32(3)
			if o == n3 {
				other = 2
			}
			return sees(other, isUpDirect)(o, v)
		})
		t.Logf("after healing: direct again in %v", d.Round(time.Millisecond))
		whole(t)
	})

	// LAN profile: dead after 400 ms of silence, detected within 500 ms.
	// The bound allows for polling (every 10 ms per observer) and a busy
	// 2-core machine.
	const detectBound = time.Second
	var inc5 uint64 // node 5's incarnation before the kill

	t.Run("kill_detected", func(t *testing.T) {
		whole(t)
		if nv, ok := findNode(mustTopology(t, n1), 5); ok {
			inc5 = nv.Incarnation
		}
		down := c.measureDown(t, n5, []*node{n1, n2, n3, n4}, 5*time.Second, n5.proc.Kill)
		t.Logf("SIGKILL of node 5 seen as down by every node after %v (%s)", maxOf(down).Round(time.Millisecond), fmtDurations(down))
		if mx := maxOf(down); mx >= detectBound {
			t.Errorf("detection took %v, want < %v (LAN bound 500 ms)", mx, detectBound)
		}
		if err, ok := n5.proc.WaitTimeout(5 * time.Second); !ok || err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("node 5 after SIGKILL: exited=%v %v", ok, err)
		}
	})

	t.Run("restart_and_sync", func(t *testing.T) {
		if !n5.proc.Exited() {
			n5.proc.Kill()
			n5.proc.Wait()
		}
		// Data the restarted node must get back from a partner: users
		// registered (with real SIPp) at node 4 while node 5 is down.
		const users = 20
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := client.Run(ctx, "sipp", "-sf", "testdata/reg_unique.xml", "-key", "domain", "example.com",
			"-m", fmt.Sprint(users), "-r", "50", "-i", client.Addr().String(), "-buff_size", "4194304",
			"-timeout", "20s", n4.ip()+":5060")
		if err != nil {
			t.Fatalf("registering %d users at node 4: %v\n%s", users, err, out)
		}
		t0 := time.Now()
		c.start(t, n5)
		c.await(t, 10*time.Second, members, mesh)
		t.Logf("restarted node 5 up and direct everywhere %v after start", time.Since(t0).Round(time.Millisecond))
		if nv, ok := findNode(mustTopology(t, n1), 5); ok {
			t.Logf("node 5 incarnation before %d, after %d", inc5, nv.Incarnation)
		}
		var caps []cluster.CapView
		d := netlab.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
			var err error
			if caps, err = n5.caps(); err != nil {
				return err
			}
			if len(caps) == 0 {
				return fmt.Errorf("no capabilities")
			}
			for _, cv := range caps {
				if cv.State != "synced" {
					return fmt.Errorf("capability %s is %s (donor %d, %d records, %d attempts)",
						cv.Name, cv.State, cv.Donor, cv.Records, cv.Attempts)
				}
			}
			return nil
		})
		t.Logf("node 5's %d capabilities synced %v after rejoining: %+v", len(caps), d.Round(time.Millisecond), caps)
		for _, cv := range caps {
			if cv.Name == "sip.tx" {
				continue // carries misdelivered SIP messages, holds no state to sync
			}
			if cv.Records == 0 && cv.Donor == 0 {
				t.Errorf("capability %s synced without a snapshot from a donor: %+v", cv.Name, cv)
			}
		}
		// The bindings themselves: node 5 holds the users as replicas.
		netlab.Eventually(t, 5*time.Second, 100*time.Millisecond, func() error {
			v, found, err := n5.metric("anyedge_geo_bindings")
			if err != nil || !found {
				return fmt.Errorf("anyedge_geo_bindings: found=%v err=%v", found, err)
			}
			if v < users {
				return fmt.Errorf("node 5 holds %v bindings, want %d", v, users)
			}
			return nil
		})
	})

	t.Run("stop_detected_cont_recovers", func(t *testing.T) {
		whole(t)
		t.Cleanup(func() { n4.proc.Cont() }) // never leave it frozen
		down := c.measureDown(t, n4, []*node{n1, n2, n3, n5}, 5*time.Second, n4.proc.Stop)
		t.Logf("SIGSTOP of node 4 seen as down by every node after %v (%s)", maxOf(down).Round(time.Millisecond), fmtDurations(down))
		if mx := maxOf(down); mx >= detectBound {
			t.Errorf("detection took %v, want < %v (LAN bound 500 ms)", mx, detectBound)
		}
		if err := n4.proc.Cont(); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		c.await(t, 10*time.Second, members, mesh)
		t.Logf("after SIGCONT node 4 is back in the full mesh in %v", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("wrong_key_refused", func(t *testing.T) {
		whole(t)
		const failures = "anyedge_cluster_auth_failures_total"
		before, _, err := n1.metric(failures)
		if err != nil {
			t.Fatal(err)
		}
		c.start(t, wrongKey)
		defer wrongKey.proc.Terminate(3 * time.Second)
		d := netlab.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
			v, found, err := n1.metric(failures)
			if err != nil {
				return err
			}
			if !found || v <= before {
				return fmt.Errorf("%s on node 1: %v (found %v), want > %v", failures, v, found, before)
			}
			return nil
		})
		after, _, _ := n1.metric(failures)
		t.Logf("node 1 counted the wrong-key node %v after it started: %s %v -> %v", d.Round(time.Millisecond), failures, before, after)

		// For two seconds (several join retries), nobody lets it in.
		netlab.Consistently(t, 2*time.Second, 100*time.Millisecond, func() error {
			for _, o := range members {
				v, err := o.topology()
				if err != nil {
					return err
				}
				for _, nv := range v.Nodes {
					if nv.ID == wrongKey.id || nv.ClusterAddr == wrongKey.clusterAddr() {
						return fmt.Errorf("%s lists the unauthenticated node: %+v", o.name, nv)
					}
				}
			}
			v, err := wrongKey.topology()
			if err != nil {
				return err
			}
			for _, nv := range v.Nodes {
				if nv.State == "up" {
					return fmt.Errorf("the wrong-key node sees %d up", nv.ID)
				}
			}
			return nil
		})
		c.await(t, time.Second, members, mesh)
	})

	t.Run("garbage_cut_off", func(t *testing.T) {
		whole(t)
		frame := func(length uint32, magic string, n int) []byte {
			b := binary.BigEndian.AppendUint32(nil, length)
			b = append(b, magic...)
			return append(b, make([]byte, n)...)
		}
		for _, tc := range []struct {
			name    string
			payload []byte
			bound   time.Duration
		}{
			{"http_request", []byte("GET / HTTP/1.1\r\nHost: 198.18.0.11\r\n\r\n"), 3 * time.Second},
			{"bad_magic", frame(64, "XXXX", 60), 3 * time.Second},
			{"oversized_frame", frame(0xffffffff, "AEDG", 60), 3 * time.Second},
			{"random_bytes", []byte(strings.Repeat("\x8f\x13\xee\x02garbage", 512)), 3 * time.Second},
			// Says nothing: the handshake timeout (3 s) must cut it off.
			{"silent", nil, 5 * time.Second},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d, got, err := garbageClient(client, n1.clusterAddr(), tc.payload, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("connection closed by node 1 %v after sending %d bytes (received %d bytes)", d.Round(time.Millisecond), len(tc.payload), got)
				if d >= tc.bound {
					t.Errorf("cut off after %v, want < %v", d, tc.bound)
				}
			})
		}
		// Node 1 shrugged it off.
		c.await(t, 2*time.Second, members, mesh)
	})

	t.Run("duplicate_id_refused", func(t *testing.T) {
		whole(t)
		incs := map[string]uint64{}
		for _, o := range members {
			nv, _ := findNode(mustTopology(t, o), 3)
			incs[o.name] = nv.Incarnation
		}
		refusedBefore, _, _ := n1.metric("anyedge_cluster_links_refused_total")

		// Not c.start: the impostor may exit at once, which is a pass.
		dup.runs++
		dup.proc = dup.host.Start(c.t, "edged-n3dup.log", bins.edged, "-config", dup.cfg)
		defer dup.proc.Terminate(3 * time.Second)
		loud := regexp.MustCompile(`(?i)\b(duplicate|conflict|already (in use|up|taken|linked))\b`)
		var evidence string
		d := netlab.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
			for _, l := range strings.Split(dup.proc.Log(), "\n") {
				if loud.MatchString(l) {
					evidence = "its log says: " + l
					return nil
				}
			}
			if dup.proc.Exited() && dup.proc.ExitCode() != 0 {
				evidence = "it exited: " + dup.proc.State()
				return nil
			}
			return fmt.Errorf("the impostor (id 3 at %s) neither logs a refusal nor exits non-zero (%s); log:\n%s",
				dup.ip(), dup.proc.State(), dup.proc.Tail(20))
		})
		t.Logf("impostor refused loudly after %v: %s", d.Round(time.Millisecond), evidence)

		// Node 3 is untouched: same address, same incarnation, up and direct
		// everywhere, and nobody knows the impostor's address.
		netlab.Consistently(t, 2*time.Second, 100*time.Millisecond, func() error {
			if err := n3.exitedErr(); err != nil {
				return err
			}
			for _, o := range members {
				v, err := o.topology()
				if err != nil {
					return err
				}
				if err := mesh(o, v); err != nil {
					return err
				}
				nv, _ := findNode(v, 3)
				if nv.Incarnation != incs[o.name] {
					return fmt.Errorf("%s: node 3's incarnation changed from %d to %d", o.name, incs[o.name], nv.Incarnation)
				}
				for _, x := range v.Nodes {
					if x.ClusterAddr == dup.clusterAddr() {
						return fmt.Errorf("%s lists the impostor's address: %+v", o.name, x)
					}
				}
			}
			return nil
		})
		refusedAfter, _, _ := n1.metric("anyedge_cluster_links_refused_total")
		t.Logf("node 1 anyedge_cluster_links_refused_total %v -> %v", refusedBefore, refusedAfter)
	})
}

func mustTopology(t *testing.T, n *node) cluster.TopologyView {
	t.Helper()
	v, err := n.topology()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// garbageClient connects from h to addr, sends payload and reads until the
// peer closes the connection. It returns how long the peer took to close
// after the payload was sent, and how many bytes it sent meanwhile. An
// error means the connection was not closed within limit.
func garbageClient(h *netlab.Host, addr string, payload []byte, limit time.Duration) (time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	start := time.Now()
	conn.SetDeadline(start.Add(limit))
	if len(payload) > 0 {
		// A write may fail once the peer has reset the connection: that
		// counts as being cut off.
		if _, err := conn.Write(payload); err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			return 0, 0, fmt.Errorf("write: %w", err)
		}
	}
	got, err := io.Copy(io.Discard, conn)
	d := time.Since(start)
	switch {
	case err == nil, errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return d, int(got), nil // EOF or reset: closed by the peer
	default:
		return d, int(got), fmt.Errorf("not cut off after %v (%d bytes received): %w", d.Round(time.Millisecond), got, err)
	}
}

// sumLinksDead adds up anyedge_cluster_links_dead_total over the nodes.
func sumLinksDead(t *testing.T, nodes []*node) float64 {
	t.Helper()
	total := 0.0
	for _, n := range nodes {
		v, found, err := n.metric("anyedge_cluster_links_dead_total")
		if err != nil || !found {
			t.Fatalf("node %s: anyedge_cluster_links_dead_total: found=%v err=%v", n.name, found, err)
		}
		total += v
	}
	return total
}
