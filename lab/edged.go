//go:build linux

package lab

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Users are the SIP subscribers of the lab; each one's password is its
// name followed by "pw".
var Users = []string{"alice", "bob", "carol", "dave"}

// Secrets are shared by every edge of a lab: nodes behind one anycast
// address must agree on them.
type Secrets struct {
	ClusterKey     string `json:"cluster_key"`
	AuthSecret     string `json:"auth_secret"`
	RecordRouteKey string `json:"record_route_key"`
}

// Config is an edged config as a YAML tree, so that tests can change any
// key before it is written (Options.Edge).
type Config map[string]any

// Section returns the mapping at key, creating it.
func (c Config) Section(key string) map[string]any {
	if m, ok := c[key].(map[string]any); ok {
		return m
	}
	m := map[string]any{}
	c[key] = m
	return m
}

// edgedConfig is the config of edge e.
func (l *Lab) edgedConfig(e *EdgePlan) Config {
	r := e.Region
	seed := l.Plan.Regions[0].Edges[0]
	var tags []map[string]any
	for _, o := range l.Plan.Regions {
		tags = append(tags,
			map[string]any{"name": o.VIPTag(), "region": o.Name},
			map[string]any{"name": o.VIPL3Tag(), "region": o.Name})
	}
	cl := map[string]any{
		"node_id":   e.ID,
		"region":    r.Name,
		"listen":    fmt.Sprintf("%s:%d", e.Addr, ClusterPort),
		"sip_addr":  fmt.Sprintf("%s:%d", e.Addr, SIPPort),
		"key":       l.secrets.ClusterKey,
		"state_dir": filepath.Join(l.dir, e.Name, "state"),
		"tags":      tags,
	}
	if e == seed {
		cl["seed"] = true
	} else {
		// Region a's edges only: a node dials its join addresses only
		// until its first link is up, so two nodes of another region that
		// found each other first would stay an island.
		var join []string
		for _, o := range l.Plan.Regions[0].Edges {
			if o != e {
				join = append(join, fmt.Sprintf("%s:%d", o.Addr, ClusterPort))
			}
		}
		cl["join"] = join
	}
	no := false
	cfg := Config{
		"log":     map[string]any{"level": "info", "format": "text"},
		"admin":   map[string]any{"listen": AdminAddr},
		"cluster": cl,
		"sip": map[string]any{
			// The node's own address first: requests the edge sends (to
			// contacts, upstreams) leave from it, so their responses come
			// back to this node rather than to whichever edge the anycast
			// route picks (one that lands elsewhere is relayed to its
			// owner over the cluster, but that costs a hop).
			// The same again for IPv6: the edge sends to IPv6 contacts from
			// the first IPv6 listener, its own address.
			"listeners": []map[string]any{
				{"transport": "udp", "addr": fmt.Sprintf("%s:%d", e.Addr, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("%s:%d", Anycast, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("%s:%d", r.VIPL2, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("%s:%d", r.VIPL3, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("[%s]:%d", e.Addr6, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("[%s]:%d", Anycast6, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("[%s]:%d", r.VIPL2v6, SIPPort)},
				{"transport": "udp", "addr": fmt.Sprintf("[%s]:%d", r.VIPL3v6, SIPPort)},
			},
			"domains": []string{Domain},
			"auth": map[string]any{
				"enabled":          true,
				"subscribers_file": filepath.Join(l.dir, "subscribers"),
				"invite":           &no,
				"secret":           l.secrets.AuthSecret,
			},
			"record_route_key": l.secrets.RecordRouteKey,
		},
		"cps": map[string]any{
			"limits": []map[string]any{{"name": "calls", "rate": 1000}},
		},
		"bgp": map[string]any{
			"asn":       EdgeASN,
			"router_id": e.Addr.String(),
			// One session per family (see birdTmpl), each with BFD.
			"peers": []map[string]any{
				peer(r.RouterLAN.String(), e.Addr.String(), r.ASN),
				peer(r.RouterLAN6.String(), e.Addr6.String(), r.ASN),
			},
			"prefixes": []map[string]any{{"prefix": Anycast + "/32"}, {"prefix": Anycast6 + "/128"}},
		},
		"announce": map[string]any{
			"hold_down": "3s",
			// The lab's tests kill edges on purpose, many times within the
			// restart window: cap the crash-loop hold-down (3 s, 6 s, ...)
			// so that a test's restarts stay quick.
			"max_hold_down": "6s",
			// The routers honour GRACEFUL_SHUTDOWN; the prepend shows the
			// knob (and covers routers that do not).
			"drain": map[string]any{"prepend": 1, "quiet": "2s"},
		},
		"vips": []map[string]any{
			{"tag": r.VIPTag(), "address": r.VIPL2.String() + "/32", "mode": "l2", "interface": "lan0"},
			{"tag": r.VIPL3Tag(), "address": r.VIPL3.String() + "/32", "mode": "l3"},
			{"tag": r.VIPTag(), "address": r.VIPL2v6.String() + "/128", "mode": "l2", "interface": "lan0"},
			{"tag": r.VIPL3Tag(), "address": r.VIPL3v6.String() + "/128", "mode": "l3"},
		},
	}
	if l.opts.Geo {
		EnableGeo(e, cfg)
	}
	return cfg
}

// EnableGeo turns on user-facing distributed location in an edge's
// config: a binding lives on the edge that took the REGISTER and on its
// region partner, and every edge finds it (relayed to the home, or served
// by the partner while the home is down or restarting). It adds the geo
// section and, for every region of the cluster tags, its HA tag
// home-<region> (geo.CheckClusterTags wants every region's on every
// node). Without it location is per edge: a restarted edge forgets its
// registrations, and a call that lands on another edge than the REGISTER
// did gets 480. It fits Options.Edge.
func EnableGeo(_ *EdgePlan, cfg Config) {
	cfg["geo"] = map[string]any{}
	cl := cfg.Section("cluster")
	tags, _ := cl["tags"].([]map[string]any)
	var regions []string
	for _, t := range tags {
		if r, ok := t["region"].(string); ok && !slices.Contains(regions, r) {
			regions = append(regions, r)
		}
	}
	for _, r := range regions {
		tags = append(tags, map[string]any{"name": (&RegionPlan{Name: r}).HomeTag(), "region": r})
	}
	cl["tags"] = tags
}

// peer is the BGP config of the session with the router at addr, from
// local.
func peer(addr, local string, asn uint32) map[string]any {
	return map[string]any{
		"address":       addr,
		"asn":           asn,
		"local_address": local,
		"bfd": map[string]any{
			"enabled": true,
			"min_tx":  fmt.Sprintf("%dms", BFDInterval),
			"min_rx":  fmt.Sprintf("%dms", BFDInterval),
		},
	}
}

// writeSubscribers writes the subscriber file: MD5 HA1s only, as SIPp
// knows no SHA-256.
func (l *Lab) writeSubscribers() error {
	var b strings.Builder
	for _, u := range Users {
		ha1 := md5.Sum([]byte(u + ":" + Domain + ":" + u + "pw"))
		fmt.Fprintf(&b, "%s %s %s -\n", u, Domain, hex.EncodeToString(ha1[:]))
	}
	return os.WriteFile(filepath.Join(l.dir, "subscribers"), []byte(b.String()), 0o600)
}

// Edge is one running edged.
type Edge struct {
	*EdgePlan
	NS     string
	Config string // the config file
	// Bin, if set, is the edged binary the next Start runs instead of
	// Options.Edged (a roll-out installs a new one).
	Bin  string
	Proc *Proc

	lab  *Lab
	runs int
	http *http.Client
}

// writeConfig renders and writes the edge's config.
func (e *Edge) writeConfig() error {
	cfg := e.lab.edgedConfig(e.EdgePlan)
	if e.lab.opts.Edge != nil {
		e.lab.opts.Edge(e.EdgePlan, cfg)
	}
	b, err := yaml.Marshal(map[string]any(cfg))
	if err != nil {
		return err
	}
	e.Config = filepath.Join(e.lab.dir, e.Name, "edged.yaml")
	if err := os.MkdirAll(filepath.Dir(e.Config), 0o700); err != nil {
		return err
	}
	hdr := fmt.Sprintf("# edge %s (node %d, region %s), written by the anyedge lab\n", e.Name, e.ID, e.Region.Name)
	return os.WriteFile(e.Config, append([]byte(hdr), b...), 0o600)
}

// Start starts (or restarts) the edge. It returns once the process runs;
// WaitHealthy waits for its admin API.
func (e *Edge) Start() error {
	if e.Proc != nil && e.Proc.Alive() {
		return fmt.Errorf("%s: already running (pid %d)", e.Name, e.Proc.PID)
	}
	e.runs++
	log := filepath.Join(e.lab.dir, e.Name, fmt.Sprintf("edged-%d.log", e.runs))
	if e.runs == 1 {
		log = filepath.Join(e.lab.dir, e.Name, "edged.log")
	}
	bin := e.lab.opts.Edged
	if e.Bin != "" {
		bin = e.Bin
	}
	p, err := startProc("edged-"+e.Name, e.NS, log, e.lab.opts.Detach, bin, "-config", e.Config)
	if err != nil {
		return err
	}
	e.Proc = p
	return e.lab.saveState()
}

// WaitHealthy waits until the edge's admin API answers /healthz.
func (e *Edge) WaitHealthy(timeout time.Duration) error {
	return poll(timeout, 50*time.Millisecond, func() error {
		if e.Proc == nil || !e.Proc.Alive() {
			return permanent(fmt.Errorf("%s exited; log tail:\n%s", e.Name, e.tail()))
		}
		return e.Get("/healthz", nil)
	})
}

func (e *Edge) tail() string {
	if e.Proc == nil {
		return ""
	}
	return e.Proc.Tail(20)
}

// Get fetches an admin API path into v (nil: only the status matters).
func (e *Edge) Get(path string, v any) error {
	resp, err := e.http.Get("http://" + AdminAddr + path)
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", e.Name, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET %s: %s: %s", e.Name, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(body, v)
}

// Post calls a state-changing admin API path.
func (e *Edge) Post(path string, body string) error {
	resp, err := e.http.Post("http://"+AdminAddr+path, "application/json", strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: POST %s: %w", e.Name, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: POST %s: %s: %s", e.Name, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// UpNodes counts the nodes the edge sees up (itself included).
func (e *Edge) UpNodes() (int, error) {
	var nodes []struct {
		State string `json:"state"`
	}
	if err := e.Get("/v1/cluster/nodes", &nodes); err != nil {
		return 0, err
	}
	n := 0
	for _, v := range nodes {
		if v.State == "up" || v.State == "self" {
			n++
		}
	}
	return n, nil
}

// IsolateCluster drops (on) or lets through again (off) the edge's
// cluster traffic, both ways, with iptables in its namespace: BGP, BFD
// and SIP are untouched. The links go silent, as with a real cut.
func (e *Edge) IsolateCluster(on bool) error {
	op := "-D"
	if on {
		op = "-I"
	}
	port := fmt.Sprint(ClusterPort)
	for _, rule := range [][]string{
		{"INPUT", "-p", "tcp", "--dport", port, "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--sport", port, "-j", "DROP"},
	} {
		if _, err := inNS(e.NS, append([]string{"iptables", "-w", "5", op}, rule...)...); err != nil {
			return err
		}
	}
	return nil
}

// GetStatus fetches an admin API path and decodes its JSON body into v
// whatever the status (for /readyz, which answers 503 with reasons).
func (e *Edge) GetStatus(path string, v any) error {
	resp, err := e.http.Get("http://" + AdminAddr + path)
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", e.Name, path, err)
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Metric reads an unlabelled series from the edge's /metrics.
func (e *Edge) Metric(name string, v *int) error {
	text, err := e.Metrics()
	if err != nil {
		return err
	}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			var x float64
			if _, err := fmt.Sscan(f[1], &x); err != nil {
				return err
			}
			*v = int(x)
			return nil
		}
	}
	return fmt.Errorf("%s: no series %s", e.Name, name)
}

// Metrics fetches the edge's /metrics text.
func (e *Edge) Metrics() (string, error) {
	resp, err := e.http.Get("http://" + AdminAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// HasAddr reports whether the edge has addr on interface dev.
func (e *Edge) HasAddr(dev, addr string) (bool, error) {
	addrs, err := e.Addrs(dev)
	return slices.Contains(addrs, addr), err
}

// Addrs lists the addresses (IPv4 and IPv6, without their lengths) on
// interface dev of the edge.
func (e *Edge) Addrs(dev string) ([]string, error) {
	out, err := run("ip", "-n", e.NS, "-o", "addr", "show", "dev", dev)
	if err != nil {
		return nil, err
	}
	var addrs []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "inet" || f[i] == "inet6" {
			a, _, _ := strings.Cut(f[i+1], "/")
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}
