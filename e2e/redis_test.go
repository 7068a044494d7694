//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/e2e/netlab"
	"github.com/anyedge/anyedge/internal/redistest"
)

// TestRedisDBDriven runs the DB-driven location (location.mode: db-driven)
// end to end: a real Redis Cluster (six redis-server processes, three
// masters and three replicas) in its own namespace, two edged nodes that
// share it, and SIPp user agents:
//
//	redis  198.18.0.50  the Redis Cluster, ports chosen at random
//	n1     198.18.0.11  edged, node 1
//	n2     198.18.0.12  edged, node 2
//	ua1    198.18.0.21  alice's UA: registers at n1, answers calls
//	ua2    198.18.0.22  the caller, calls through n2
//
// alice registers at n1, so her binding in Redis has Home 1; a call placed
// through n2 finds it in Redis and is relayed to n1, which reaches the UA.
// Then Redis is killed: both nodes report not ready with "location: redis
// unreachable" and a REGISTER gets 500 with Retry-After; the cluster
// restarts from its AOF and alice is still registered.
func TestRedisDBDriven(t *testing.T) {
	c := newTestCluster(t) // skips unless root
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp not installed (make deps): %v", err)
	}
	rh := c.lab.Host("redis", c.lan, "198.18.0.50/24")
	rc := redistest.Start(t, redistest.Options{
		Bind: "198.18.0.50",
		Command: func(name string, args ...string) *exec.Cmd {
			return rh.Exec(context.Background(), name, args...)
		},
		Dial: rh.DialContext,
	})
	addrs := rc.Addrs()

	n1 := addRedisNode(c, "n1", 1, "198.18.0.11", true, []string{"198.18.0.12:5600"}, addrs)
	n2 := addRedisNode(c, "n2", 2, "198.18.0.12", false, []string{"198.18.0.11:5600"}, addrs)
	ua1 := newSipUA(c.lab, c.lan, "ua1", "198.18.0.21")
	ua2 := newSipUA(c.lab, c.lan, "ua2", "198.18.0.22")
	all := []*node{n1, n2}
	for _, n := range all {
		c.start(t, n)
	}
	d := c.await(t, 20*time.Second, all, fullMesh(all))
	t.Logf("two nodes meshed after %v", d.Round(time.Millisecond))
	d = netlab.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range all {
			if err := readyz(n, true, ""); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("both nodes ready (redis reachable) after another %v", d.Round(time.Millisecond))

	alicePort := ua1.port()
	runSIPp(t, ua1, "uac_register_noauth.xml", gsip(n1), "-s", "alice", "-p", strconv.Itoa(alicePort))
	if v := metricWith(t, n1, "anyedge_location_redis_operations_total", `op="save",result="ok"`); v < 1 {
		t.Fatalf("n1 answered alice's REGISTER without a save in Redis (%v)", v)
	}

	const calls = 3
	fwd0 := metricWith(t, n2, "anyedge_sip_relayed_requests_total", "")
	res := callAlice(t, ua2, n2, ua1, alicePort, calls)
	if err := res.path(n2, n1); err != nil {
		t.Error(err)
	}
	fwd := metricWith(t, n2, "anyedge_sip_relayed_requests_total", "") - fwd0
	t.Logf("%d calls ua2 → n2 → (Redis lookup, home n1) → n1 → alice: setup %s, n2 relayed +%v", calls, fmtSetups(res.setup), fwd)
	if fwd < calls {
		t.Errorf("n2 relayed %v requests to alice's home, want at least %d", fwd, calls)
	}
	// A call through n1 itself reaches her directly.
	res = callAlice(t, ua2, n1, ua1, alicePort, 1)
	if err := res.path(n1); err != nil {
		t.Error(err)
	}

	// Redis down: no node is ready, REGISTER is refused with Retry-After.
	rc.KillAll()
	netlab.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, n := range all {
			if err := readyz(n, false, "location: redis unreachable"); err != nil {
				return err
			}
		}
		return nil
	})
	ua2.registerExpect(t, gsip(n2), "bob", 500, "Retry-After")
	t.Logf("redis down: both nodes not ready, REGISTER answered 500 with Retry-After")

	rc.RestartAll()
	netlab.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, n := range all {
			if err := readyz(n, true, ""); err != nil {
				return err
			}
		}
		return nil
	})
	// alice's binding survived (AOF): a call through n2 still reaches her.
	res = callAlice(t, ua2, n2, ua1, alicePort, 1)
	if err := res.path(n2, n1); err != nil {
		t.Error(err)
	}
}

// addRedisNode writes the config of a db-driven node (checked with `edged
// config check`); it does not start it.
func addRedisNode(c *testCluster, name string, id uint32, ip string, seed bool, join, redisAddrs []string) *node {
	c.t.Helper()
	h := c.lab.Host(name, c.lan, ip+"/24")
	n := &node{id: id, name: name, host: h}
	sipAddr := fmt.Sprintf("%s:%d", ip, sipPort)
	cfg := map[string]any{
		"log":   map[string]string{"level": "debug", "format": "text"},
		"admin": map[string]string{"listen": fmt.Sprintf("%s:%d", ip, adminPort), "token": adminToken},
		"cluster": map[string]any{
			"node_id": id, "region": "lab", "listen": n.clusterAddr(), "seed": seed, "join": join,
			"key": clusterKey, "state_dir": filepath.Join(c.lab.Dir(), name+"-state"), "sip_addr": sipAddr,
		},
		"sip": map[string]any{
			"listeners": []map[string]string{{"transport": "udp", "addr": sipAddr}},
			"domains":   []string{sipDomain},
		},
		"location": map[string]any{
			"mode":  "db-driven",
			"redis": map[string]any{"addrs": redisAddrs, "timeout": "300ms", "reap_interval": "200ms"},
		},
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

// readyz checks n's /readyz: ready or not, and a reason containing want.
func readyz(n *node, ready bool, want string) error {
	if err := n.exitedErr(); err != nil {
		return netlab.Permanent(err)
	}
	resp, err := n.host.HTTPClient().Get(n.adminURL() + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return fmt.Errorf("%s /readyz: %v: %s", n.name, err, b)
	}
	if body.Ready != ready || (want != "" && !strings.Contains(strings.Join(body.Reasons, "; "), want)) {
		return fmt.Errorf("%s /readyz: ready=%v reasons %q, want ready=%v with %q", n.name, body.Ready, body.Reasons, ready, want)
	}
	return nil
}

// registerExpect sends one REGISTER for user to edge from u over UDP and
// checks the final response's status and that it carries header.
func (u *sipUA) registerExpect(t *testing.T, edge, user string, status int, header string) {
	t.Helper()
	port := u.port()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := u.host.DialContext(ctx, "udp", edge)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.UDPAddr)
	msg := fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-redis-%d;rport\r\n"+
		"Max-Forwards: 70\r\nTo: <sip:%s@%s>\r\nFrom: <sip:%s@%s>;tag=r%d\r\n"+
		"Call-ID: redis-%d@%s\r\nCSeq: 1 REGISTER\r\nContact: <sip:%s@%s:%d>\r\nContent-Length: 0\r\n\r\n",
		sipDomain, u.ip(), local.Port, port, user, sipDomain, user, sipDomain, port, port, u.ip(), user, u.ip(), port)
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("REGISTER %s at %s: no final response: %v", user, edge, err)
		}
		reply := string(buf[:n])
		first, _, _ := strings.Cut(reply, "\r\n")
		f := strings.Fields(first)
		if len(f) < 2 {
			t.Fatalf("bad response %q", reply)
		}
		code, _ := strconv.Atoi(f[1])
		if code < 200 {
			continue
		}
		if code != status || (header != "" && !strings.Contains(reply, "\r\n"+header+":")) {
			t.Fatalf("REGISTER %s at %s: %q, want %d with %s", user, edge, first, status, header)
		}
		return
	}
}
