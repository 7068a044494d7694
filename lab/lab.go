//go:build linux

package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Options configure a lab.
type Options struct {
	// Regions is the number of regions, 2 (default) or 3.
	Regions int
	// Prefix starts every namespace name ("anylab": anylab-a1, ...).
	// Default "anylab".
	Prefix string
	// Dir is the run directory: configs, logs, the state file. Required.
	Dir string
	// Edged and Edgectl are the binaries. Required (Edgectl only for the
	// hints printed).
	Edged, Edgectl string
	// Scenarios is the SIPp scenario directory (edge/sipp).
	Scenarios string
	// Detach makes the processes outlive the caller (make lab); otherwise
	// they die with it (tests).
	Detach bool
	// Logf reports progress. Default: silent.
	Logf func(format string, args ...any)
	// Geo turns on distributed user location (the edges' geo section,
	// with every region's home-<region> tag): a registration is found
	// from every edge and survives a restart of the edge that took it.
	// Off, location is per edge, as the tests that register a contact on
	// each edge by its own address expect. make lab turns it on.
	Geo bool
	// Edge, if set, may change each edge's config before it is written.
	Edge func(e *EdgePlan, cfg Config)
	// Timeout bounds the bring-up. Default 90 s.
	Timeout time.Duration
	// Started, if set, is called once every process is started, before Up
	// waits for the lab to be ready (to watch the bring-up).
	Started func(*Lab)
}

// Lab is a running lab.
type Lab struct {
	Plan    *Plan
	Routers map[string]*Router // by region name
	Edges   map[string]*Edge   // by edge name
	Clients map[string]*Client // by region name

	opts    Options
	dir     string
	secrets Secrets

	mu    sync.Mutex // guards state writes
	procs []*Proc    // BIRDs; edges' procs are read from Edges
}

// state is what `down` needs from a lab started by another process.
type state struct {
	Prefix  string  `json:"prefix"`
	Regions int     `json:"regions"`
	Secrets Secrets `json:"secrets"`
	Procs   []*Proc `json:"procs"`
}

const stateFile = "state.json"

func (o *Options) defaults() error {
	if o.Regions == 0 {
		o.Regions = 2
	}
	if o.Prefix == "" {
		o.Prefix = "anylab"
	}
	if o.Dir == "" || o.Edged == "" {
		return errors.New("lab: Dir and Edged are required")
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Up builds the network, starts the routers and the edges and waits
// until every router has every edge's path and the cluster is whole. On
// failure it tears down what it built and returns the error.
func Up(ctx context.Context, o Options) (l *Lab, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	plan, err := NewPlan(o.Prefix, o.Regions)
	if err != nil {
		return nil, err
	}
	if left := namespaces(o.Prefix); len(left) > 0 {
		return nil, fmt.Errorf("lab: namespaces %v exist: a lab with prefix %q is up (take it down first)", left, o.Prefix)
	}
	l = newLab(plan, o)
	l.secrets = Secrets{ClusterKey: randHex(24), AuthSecret: randHex(16), RecordRouteKey: randHex(16)}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, err
	}
	// Recorded before anything exists, so that Down finds whatever a
	// failed Up leaves.
	if err := l.saveState(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := l.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("teardown: %w", derr))
			}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	start := time.Now()
	if err := l.buildNetwork(); err != nil {
		return l, err
	}
	o.Logf("network: %d namespaces, bridges and veths in %v", len(namespaces(o.Prefix)), time.Since(start).Round(time.Millisecond))
	if err := l.writeSubscribers(); err != nil {
		return l, err
	}
	if err := l.startRouters(); err != nil {
		return l, err
	}
	for _, e := range l.edgeList() {
		if err := e.writeConfig(); err != nil {
			return l, err
		}
		if err := e.Start(); err != nil {
			return l, err
		}
	}
	o.Logf("started %d BIRD routers and %d edged", len(l.Routers), len(l.Edges))
	if o.Started != nil {
		o.Started(l)
	}
	if err := l.waitReady(ctx); err != nil {
		return l, err
	}
	o.Logf("lab ready in %v", time.Since(start).Round(time.Millisecond))
	return l, nil
}

func newLab(plan *Plan, o Options) *Lab {
	l := &Lab{
		Plan: plan, opts: o, dir: o.Dir,
		Routers: map[string]*Router{}, Edges: map[string]*Edge{}, Clients: map[string]*Client{},
	}
	for _, r := range plan.Regions {
		ns := plan.NS(r.RouterName())
		l.Routers[r.Name] = &Router{Region: r, NS: ns, Sock: filepath.Join(o.Dir, r.RouterName(), "bird.ctl")}
		l.Clients[r.Name] = &Client{Region: r, NS: plan.NS(r.ClientName()), lab: l}
		for _, e := range r.Edges {
			ns := plan.NS(e.Name)
			l.Edges[e.Name] = &Edge{EdgePlan: e, NS: ns, lab: l, http: httpClient(ns),
				Config: filepath.Join(o.Dir, e.Name, "edged.yaml")}
		}
	}
	return l
}

// Dir is the run directory.
func (l *Lab) Dir() string { return l.dir }

// edgeList lists the edges in plan order.
func (l *Lab) edgeList() []*Edge {
	var out []*Edge
	for _, e := range l.Plan.Edges() {
		out = append(out, l.Edges[e.Name])
	}
	return out
}

// buildNetwork creates the namespaces, bridges, veths, addresses, routes
// and sysctls.
func (l *Lab) buildNetwork() error {
	p := l.Plan
	sw := p.SwitchNS()
	hosts := []string{sw}
	for _, r := range p.Regions {
		hosts = append(hosts, p.NS(r.RouterName()), p.NS(r.ClientName()))
		for _, e := range r.Edges {
			hosts = append(hosts, p.NS(e.Name))
		}
	}
	var add []string
	for _, ns := range hosts {
		add = append(add, "netns add "+ns)
	}
	if err := batch("", add); err != nil {
		return err
	}
	// Commands per namespace: the switch's first (it creates the veths
	// into the hosts), then each host's.
	cmds := map[string][]string{}
	for _, ns := range hosts {
		cmds[ns] = append(cmds[ns], "link set lo up")
	}
	bridge := func(name string) {
		cmds[sw] = append(cmds[sw], "link add "+name+" type bridge", "link set "+name+" up")
	}
	// attach adds interface ifname to host on bridge br, with addr and
	// addr6 (nodad: usable at once, for BGP and BFD to bind).
	attach := func(host, ifname, br, addr, addr6 string) {
		ns := p.NS(host)
		port := host + "." + ifname
		cmds[sw] = append(cmds[sw],
			fmt.Sprintf("link add %s type veth peer name %s netns %s", port, ifname, ns),
			fmt.Sprintf("link set %s master %s up", port, br))
		cmds[ns] = append(cmds[ns],
			fmt.Sprintf("addr add %s dev %s", addr, ifname),
			fmt.Sprintf("addr add %s dev %s nodad", addr6, ifname),
			fmt.Sprintf("link set %s up", ifname))
	}
	bridge("wan")
	for _, r := range p.Regions {
		lan, cli := "lan-"+r.Name, "cli-"+r.Name
		bridge(lan)
		bridge(cli)
		rt := r.RouterName()
		attach(rt, "lan0", lan, r.RouterLAN.String()+"/24", r.RouterLAN6.String()+"/64")
		attach(rt, "cli0", cli, r.RouterClient.String()+"/24", r.RouterClient6.String()+"/64")
		attach(rt, "wan0", "wan", r.RouterWAN.String()+"/24", r.RouterWAN6.String()+"/64")
		// The region's L2 VIPs are on the LAN: the router ARPs (or
		// solicits) for them.
		cmds[p.NS(rt)] = append(cmds[p.NS(rt)],
			fmt.Sprintf("route add %s/32 dev lan0", r.VIPL2),
			fmt.Sprintf("route add %s/128 dev lan0", r.VIPL2v6))
		attach(r.ClientName(), "eth0", cli, r.Client.String()+"/24", r.Client6.String()+"/64")
		cmds[p.NS(r.ClientName())] = append(cmds[p.NS(r.ClientName())],
			"route add default via "+r.RouterClient.String(),
			"route add default via "+r.RouterClient6.String())
		for _, e := range r.Edges {
			attach(e.Name, "lan0", lan, e.Addr.String()+"/24", e.Addr6.String()+"/64")
			cmds[p.NS(e.Name)] = append(cmds[p.NS(e.Name)],
				"route add default via "+r.RouterLAN.String(),
				"route add default via "+r.RouterLAN6.String(),
				"addr add "+Anycast+"/32 dev lo",
				"addr add "+Anycast6+"/128 dev lo")
		}
	}
	if err := batch(sw, cmds[sw]); err != nil {
		return err
	}
	for _, ns := range hosts[1:] {
		if err := batch(ns, cmds[ns]); err != nil {
			return err
		}
	}
	for _, r := range p.Regions {
		if _, err := inNS(p.NS(r.RouterName()), "sysctl", "-q", "-w",
			"net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
			"net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1"); err != nil {
			return err
		}
		for _, e := range r.Edges {
			// The VIP sysctls (package vip): answer ARP only for
			// addresses on the asking interface, source ARP from the
			// interface's own address, no reverse-path filter (replies
			// leave from the anycast or a VIP), and bind to addresses not
			// (yet) on the box.
			if _, err := inNS(p.NS(e.Name), "sysctl", "-q", "-w",
				"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
				"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
				"net.ipv4.ip_nonlocal_bind=1", "net.ipv6.ip_nonlocal_bind=1"); err != nil {
				return err
			}
		}
	}
	return nil
}

// startRouters writes the BIRD configs and starts the routers.
func (l *Lab) startRouters() error {
	for _, r := range l.Plan.Regions {
		rt := l.Routers[r.Name]
		dir := filepath.Join(l.dir, r.RouterName())
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		conf, err := birdConfig(l.Plan, r)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, "bird.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return err
		}
		p, err := startProc("bird-"+r.RouterName(), rt.NS, filepath.Join(dir, "bird.log"), l.opts.Detach,
			"bird", "-f", "-c", path, "-s", rt.Sock, "-P", filepath.Join(dir, "bird.pid"))
		if err != nil {
			return err
		}
		rt.Proc = p
		l.mu.Lock()
		l.procs = append(l.procs, p)
		l.mu.Unlock()
		if err := l.saveState(); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits for BIRD, the edges' admin APIs, every BGP session,
// the ECMP routes and the whole cluster.
func (l *Lab) waitReady(ctx context.Context) error {
	dl, _ := ctx.Deadline()
	left := func() time.Duration { return max(time.Until(dl), time.Second) }
	poll := func(timeout, interval time.Duration, fn func() error) error {
		return poll(timeout, interval, func() error {
			if err := ctx.Err(); err != nil {
				return permanent(context.Cause(ctx))
			}
			return fn()
		})
	}
	for _, rt := range l.Routers {
		if err := poll(left(), 50*time.Millisecond, func() error {
			if !rt.Proc.Alive() {
				return permanent(fmt.Errorf("bird in %s exited:\n%s", rt.NS, rt.Proc.Tail(20)))
			}
			_, err := rt.Birdc("show", "status")
			return err
		}); err != nil {
			return err
		}
	}
	for _, e := range l.edgeList() {
		if err := e.WaitHealthy(left()); err != nil {
			return err
		}
	}
	l.opts.Logf("routers and edges answer; waiting for BGP, BFD, ECMP routes and the cluster")
	for _, r := range l.Plan.Regions {
		rt := l.Routers[r.Name]
		var names, hops, hops6 []string
		for _, e := range r.Edges {
			names = append(names, e.Name, e.Name+"v6")
			hops = append(hops, e.Addr.String())
			hops6 = append(hops6, e.Addr6.String())
		}
		for _, o := range l.Plan.Regions {
			if o != r {
				names = append(names, "wan_"+o.Name, "wan_"+o.Name+"6")
			}
		}
		if err := poll(left(), 100*time.Millisecond, func() error {
			if err := l.edgesAlive(); err != nil {
				return permanent(err)
			}
			if err := rt.Established(names...); err != nil {
				return err
			}
			for _, e := range r.Edges {
				if err := rt.BFDUp(e.Addr.String()); err != nil {
					return err
				}
				if err := rt.BFDUp(e.Addr6.String()); err != nil {
					return err
				}
			}
			if err := rt.WantNextHops(Anycast+"/32", hops...); err != nil {
				return err
			}
			return rt.WantNextHops(Anycast6+"/128", hops6...)
		}); err != nil {
			return err
		}
	}
	n := len(l.Edges)
	return poll(left(), 100*time.Millisecond, func() error {
		if err := l.edgesAlive(); err != nil {
			return permanent(err)
		}
		for _, e := range l.edgeList() {
			up, err := e.UpNodes()
			if err != nil {
				return err
			}
			if up != n {
				return fmt.Errorf("%s sees %d of %d nodes up", e.Name, up, n)
			}
		}
		return nil
	})
}

func (l *Lab) edgesAlive() error {
	for _, e := range l.edgeList() {
		if e.Proc == nil || !e.Proc.Alive() {
			return fmt.Errorf("%s exited; log tail:\n%s", e.Name, e.tail())
		}
	}
	return nil
}

// saveState writes the state file atomically.
func (l *Lab) saveState() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := state{Prefix: l.Plan.Prefix, Regions: len(l.Plan.Regions), Secrets: l.secrets}
	st.Procs = append(st.Procs, l.procs...)
	for _, e := range l.edgeList() {
		if e.Proc != nil {
			st.Procs = append(st.Procs, e.Proc)
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.dir, stateFile))
}

// Load reads the lab recorded in dir (by an Up in another process).
func Load(dir string, o Options) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", stateFile, err)
	}
	plan, err := NewPlan(st.Prefix, st.Regions)
	if err != nil {
		return nil, err
	}
	o.Dir, o.Prefix, o.Regions = dir, st.Prefix, st.Regions
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	l := newLab(plan, o)
	l.secrets = st.Secrets
	for _, p := range st.Procs {
		switch {
		case len(p.Name) > 6 && p.Name[:6] == "edged-":
			if e := l.Edges[p.Name[6:]]; e != nil {
				e.Proc = p
			}
		default:
			l.procs = append(l.procs, p)
			for _, rt := range l.Routers {
				if p.Name == "bird-"+rt.Region.RouterName() {
					rt.Proc = p
				}
			}
		}
	}
	return l, nil
}

// Down stops every process the lab started (edges first, with SIGTERM so
// that they withdraw; then the routers) and deletes every namespace with
// the lab's prefix. It leaves the run directory (logs) in place.
func (l *Lab) Down() error {
	var (
		errs []error
		emu  sync.Mutex
		wg   sync.WaitGroup
	)
	stop := func(ps []*Proc) {
		for _, p := range ps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.Stop(5 * time.Second); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	var edges []*Proc
	for _, e := range l.edgeList() {
		if e.Proc != nil {
			edges = append(edges, e.Proc)
		}
	}
	stop(edges)
	l.mu.Lock()
	others := slices.Clone(l.procs)
	l.mu.Unlock()
	stop(others)
	// Hosts first (their veths take the switch ends with them), then the
	// switch.
	nss := namespaces(l.Plan.Prefix)
	slices.SortFunc(nss, func(a, b string) int {
		if a == l.Plan.SwitchNS() {
			return 1
		}
		if b == l.Plan.SwitchNS() {
			return -1
		}
		return 0
	})
	for _, ns := range nss {
		if err := delNS(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if left := namespaces(l.Plan.Prefix); len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left behind: %v", left))
	}
	if len(errs) == 0 {
		_ = os.Remove(filepath.Join(l.dir, stateFile))
	}
	return errors.Join(errs...)
}
