//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
)

const (
	clusterKey = "0123456789abcdef0123456789abcdef"
	// adminToken: the admin API refuses to listen on a non-loopback address
	// without one. Only state-changing calls need it.
	adminToken  = "e2e-admin-token-0123456789abcdef"
	clusterPort = 5600
	adminPort   = 9090
)

// node is one edged in its own namespace.
type node struct {
	id   uint32
	name string // host name in the lab, for messages: "n1"
	host *netlab.Host
	cfg  string // config file
	proc *netlab.Proc
	runs int
}

func (n *node) ip() string          { return n.host.Addr().String() }
func (n *node) clusterAddr() string { return fmt.Sprintf("%s:%d", n.ip(), clusterPort) }
func (n *node) adminURL() string    { return fmt.Sprintf("http://%s:%d", n.ip(), adminPort) }

// testCluster is a lab of edged nodes on one bridge.
type testCluster struct {
	t     *testing.T // the test that owns the lab and the daemons
	lab   *netlab.Lab
	lan   *netlab.Bridge
	nodes map[string]*node
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	lab := netlab.New(t) // skips unless root
	if bins.edgedErr != nil {
		t.Fatalf("edged: %v", bins.edgedErr)
	}
	return &testCluster{t: t, lab: lab, lan: lab.Bridge("lan"), nodes: map[string]*node{}}
}

// nodeSpec is what differs between the nodes' configs.
type nodeSpec struct {
	name  string // lab host name
	id    uint32
	ip    string // in 198.18.0.0/24
	seed  bool
	join  []string
	key   string // default clusterKey
	level string // log level, default debug
}

// daemonConfig is edged's YAML config, only the keys the tests set.
type daemonConfig struct {
	Log     map[string]string `yaml:"log"`
	Admin   map[string]string `yaml:"admin"`
	Cluster clusterSection    `yaml:"cluster"`
	// SIP and Geo make the node carry real replicated data (user
	// location), so that a restarted node has something to sync.
	SIP map[string]any `yaml:"sip"`
	Geo map[string]any `yaml:"geo"`
}

type clusterSection struct {
	NodeID   uint32              `yaml:"node_id"`
	Region   string              `yaml:"region"`
	Listen   string              `yaml:"listen"`
	Seed     bool                `yaml:"seed,omitempty"`
	Join     []string            `yaml:"join,omitempty"`
	Key      string              `yaml:"key"`
	StateDir string              `yaml:"state_dir"`
	SIPAddr  string              `yaml:"sip_addr"`
	Tags     []map[string]string `yaml:"tags"`
}

// add creates the node's host and writes its config; check validates the
// config with `edged config check`. It does not start the daemon.
func (c *testCluster) add(s nodeSpec) *node {
	c.t.Helper()
	h := c.lab.Host(s.name, c.lan, s.ip+"/24")
	n := &node{id: s.id, name: s.name, host: h}
	key := s.key
	if key == "" {
		key = clusterKey
	}
	level := s.level
	if level == "" {
		level = "debug"
	}
	cfg := daemonConfig{
		Log:   map[string]string{"level": level, "format": "text"},
		Admin: map[string]string{"listen": n.adminURL()[len("http://"):], "token": adminToken},
		Cluster: clusterSection{
			NodeID:   s.id,
			Region:   "lab",
			Listen:   n.clusterAddr(),
			Seed:     s.seed,
			Join:     s.join,
			Key:      key,
			StateDir: filepath.Join(c.lab.Dir(), s.name+"-state"),
			SIPAddr:  n.ip() + ":5060",
			Tags:     []map[string]string{{"name": "t1", "region": "lab"}, {"name": "home-lab", "region": "lab"}},
		},
		SIP: map[string]any{
			"listeners": []map[string]string{{"transport": "udp", "addr": n.ip() + ":5060"}},
			"domains":   []string{"example.com"},
		},
		Geo: map[string]any{},
	}
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

func execOut(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// start starts (or restarts) the daemon and waits until its admin API
// answers. The process belongs to the cluster's test, not to the calling
// subtest, so that it outlives the subtest.
func (c *testCluster) start(t *testing.T, n *node) {
	t.Helper()
	if n.proc != nil && !n.proc.Exited() {
		t.Fatalf("%s: already running (pid %d)", n.name, n.proc.PID())
	}
	n.runs++
	n.proc = n.host.Start(c.t, fmt.Sprintf("edged-%s-run%d.log", n.name, n.runs), bins.edged, "-config", n.cfg)
	d := netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		if err := n.exitedErr(); err != nil {
			return err
		}
		resp, err := n.host.HTTPClient().Get(n.adminURL() + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s /healthz: %s", n.name, resp.Status)
		}
		return nil
	})
	t.Logf("%s (id %d) started, pid %d, healthy after %v", n.name, n.id, n.proc.PID(), d.Round(time.Millisecond))
}

// exitedErr is a permanent error when the daemon is not running.
func (n *node) exitedErr() error {
	if n.proc == nil {
		return netlab.Permanent(fmt.Errorf("%s: not started", n.name))
	}
	if n.proc.Exited() {
		return netlab.Permanent(fmt.Errorf("%s (id %d) exited: %s; log tail:\n%s",
			n.name, n.id, n.proc.State(), n.proc.Tail(20)))
	}
	return nil
}

// getJSON fetches an admin API path into v.
func (n *node) getJSON(path string, v any) error {
	resp, err := n.host.HTTPClient().Get(n.adminURL() + path)
	if err != nil {
		return fmt.Errorf("%s GET %s: %w", n.name, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s GET %s: %w", n.name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s GET %s: %s: %s", n.name, path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s GET %s: decoding %q: %w", n.name, path, body, err)
	}
	return nil
}

func (n *node) topology() (cluster.TopologyView, error) {
	var v cluster.TopologyView
	err := n.getJSON("/v1/cluster/topology", &v)
	if err == nil && v.Self != n.id {
		err = fmt.Errorf("%s: topology says self is %d, want %d", n.name, v.Self, n.id)
	}
	return v, err
}

func (n *node) caps() ([]cluster.CapView, error) {
	var v []cluster.CapView
	return v, n.getJSON("/v1/cluster/caps", &v)
}

// metric sums the samples of one metric family from /metrics. found is
// false when the family is absent.
func (n *node) metric(name string) (sum float64, found bool, err error) {
	resp, err := n.host.HTTPClient().Get(n.adminURL() + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("%s /metrics: %s", n.name, resp.Status)
	}
	return sumMetric(resp.Body, name)
}

// sumMetric parses the Prometheus text format just enough: the samples of
// family name, labelled or not, added up.
func sumMetric(r io.Reader, name string) (sum float64, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name with the same prefix
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false, fmt.Errorf("bad sample %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("bad sample %q: %w", line, err)
		}
		sum += v
		found = true
	}
	return sum, found, sc.Err()
}

// findNode returns id's entry in v.
func findNode(v cluster.TopologyView, id uint32) (cluster.NodeView, bool) {
	for _, nv := range v.Nodes {
		if nv.ID == id {
			return nv, true
		}
	}
	return cluster.NodeView{}, false
}

// viewCheck judges one observer's topology.
type viewCheck func(obs *node, v cluster.TopologyView) error

// await polls every observer's topology until check passes for all of
// them, and fails t after timeout. It returns how long it took.
func (c *testCluster) await(t *testing.T, timeout time.Duration, observers []*node, check viewCheck) time.Duration {
	t.Helper()
	return netlab.Eventually(t, timeout, 20*time.Millisecond, func() error {
		var errs []error
		for _, o := range observers {
			if err := o.exitedErr(); err != nil {
				return err
			}
			v, err := o.topology()
			if err == nil {
				err = check(o, v)
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// fullMesh checks that the observer sees exactly members, all up over
// direct links, and every link between them up at both ends.
func fullMesh(members []*node) viewCheck {
	return func(o *node, v cluster.TopologyView) error {
		var ids []uint32
		for _, nv := range v.Nodes {
			ids = append(ids, nv.ID)
		}
		slices.Sort(ids)
		var want []uint32
		for _, m := range members {
			want = append(want, m.id)
		}
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			return fmt.Errorf("%s sees nodes %v, want %v", o.name, ids, want)
		}
		for _, m := range members {
			nv, _ := findNode(v, m.id)
			if m == o {
				if nv.State != "self" {
					return fmt.Errorf("%s: own state %q, want self", o.name, nv.State)
				}
				continue
			}
			if nv.State != "up" || !nv.Direct || nv.Hops != 1 || nv.NextHop != m.id {
				return fmt.Errorf("%s sees %d as %s direct=%v hops=%d next_hop=%d, want up direct hops=1 next_hop=%d",
					o.name, m.id, nv.State, nv.Direct, nv.Hops, nv.NextHop, m.id)
			}
			if nv.ClusterAddr != m.clusterAddr() {
				return fmt.Errorf("%s sees %d at %s, want %s", o.name, m.id, nv.ClusterAddr, m.clusterAddr())
			}
		}
		up := 0
		for _, l := range v.Links {
			if l.State == "up" {
				up++
			}
		}
		if want := len(members) * (len(members) - 1) / 2; up != want {
			return fmt.Errorf("%s: %d links up, want %d (full mesh): %+v", o.name, up, want, v.Links)
		}
		return nil
	}
}

// sees checks how the observer sees node id.
func sees(id uint32, want func(nv cluster.NodeView) error) viewCheck {
	return func(o *node, v cluster.TopologyView) error {
		nv, ok := findNode(v, id)
		if !ok {
			return fmt.Errorf("%s does not know node %d", o.name, id)
		}
		if err := want(nv); err != nil {
			return fmt.Errorf("%s sees %d: %w", o.name, id, err)
		}
		return nil
	}
}

func isDown(nv cluster.NodeView) error {
	if nv.State != "down" {
		return fmt.Errorf("state %q, want down", nv.State)
	}
	return nil
}

func isUpDirect(nv cluster.NodeView) error {
	if nv.State != "up" || !nv.Direct || nv.Hops != 1 || nv.NextHop != nv.ID {
		return fmt.Errorf("%s direct=%v hops=%d next_hop=%d, want up direct hops=1", nv.State, nv.Direct, nv.Hops, nv.NextHop)
	}
	return nil
}

// measureDown kills or freezes a node with act and measures, per
// observer, the time until it sees the node down. It fails t when an
// observer does not within timeout.
func (c *testCluster) measureDown(t *testing.T, target *node, observers []*node, timeout time.Duration, act func() error) map[string]time.Duration {
	t.Helper()
	type result struct {
		name string
		d    time.Duration
		err  error
	}
	res := make(chan result, len(observers))
	start := make(chan struct{})
	var t0 time.Time // written before start is closed
	for _, o := range observers {
		go func() {
			<-start
			_, err := netlab.Poll(timeout, 10*time.Millisecond, func() error {
				if err := o.exitedErr(); err != nil {
					return err
				}
				v, err := o.topology()
				if err != nil {
					return err
				}
				return sees(target.id, isDown)(o, v)
			})
			res <- result{o.name, time.Since(t0), err}
		}()
	}
	t0 = time.Now()
	err := act()
	close(start)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	var errs []error
	for range observers {
		r := <-res
		out[r.name] = r.d
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

func maxOf(m map[string]time.Duration) time.Duration {
	var mx time.Duration
	for _, d := range m {
		mx = max(mx, d)
	}
	return mx
}

func fmtDurations(m map[string]time.Duration) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, m[k].Round(time.Millisecond))
	}
	return strings.TrimSpace(b.String())
}
