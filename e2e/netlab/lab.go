//go:build linux

// Package netlab builds small test networks out of Linux network namespaces,
// veth pairs and bridges, for end-to-end tests that run real daemons.
//
// A Lab owns everything it creates. Every name carries the lab's random
// prefix ("ae" and 5 hex digits), so that labs of concurrent runs never
// collide and a crashed run can be swept with Purge. Bridges live in a
// dedicated "switch" namespace and hosts in their own namespaces: nothing
// touches the root namespace's networking.
//
// Cleanup is layered: t.Cleanup tears a lab down when its test ends (even
// on failure), RunMain handles SIGINT/SIGTERM and the approaching
// -test.timeout, and Purge removes whatever still carries a prefix.
//
// Setup methods (New, Bridge, Host, Attach) report failures on the Lab's
// testing.TB and must be called from the goroutine of the test that created
// the lab. Run-time actions (Cut, Heal, LinkDown, ...) return errors so that
// subtests can call them.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// cmdTimeout bounds one ip/iptables command.
const cmdTimeout = 10 * time.Second

// Lab is one test network.
type Lab struct {
	// Prefix is the lab's unique name prefix, for example "ae1f3c9".
	Prefix string

	t   testing.TB
	dir string

	closeOnce sync.Once
	closeErr  error

	pmu   sync.Mutex // guards procs only; never held for long
	procs []*Proc

	mu       sync.Mutex
	closed   bool
	switchNS string
	nss      []string // created namespaces, in creation order
	bridges  map[string]*Bridge
	hosts    map[string]*Host
	cuts     map[[2]string][]rule
	seq      int // bridge and veth-peer counter
}

// Bridge is an L2 segment: a Linux bridge in the lab's switch namespace.
type Bridge struct {
	Name string // the lab's name for it
	Dev  string // the bridge device in the switch namespace
	lab  *Lab
}

// registry tracks live labs so that RunMain's signal handler and watchdog
// can tear them down. It is the only package-level state, and exists only
// because a signal handler has no testing.TB to reach labs through.
var registry = struct {
	sync.Mutex
	labs map[*Lab]struct{}
}{labs: map[*Lab]struct{}{}}

// New creates an empty lab and registers its teardown with t.Cleanup. It
// skips the test when not running as root.
func New(t testing.TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab: needs root (network namespaces, veth, iptables); " +
			"run as root: go test -count=1 -tags e2e ./e2e/...")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("netlab: %s not found in PATH: %v", tool, err)
		}
	}
	l := &Lab{
		t:       t,
		dir:     t.TempDir(),
		bridges: map[string]*Bridge{},
		hosts:   map[string]*Host{},
		cuts:    map[[2]string][]rule{},
	}
	for {
		p, err := newPrefix()
		if err != nil {
			t.Fatalf("netlab: prefix: %v", err)
		}
		if left := prefixed(p); len(left) == 0 {
			l.Prefix = p
			break
		}
	}
	registry.Lock()
	registry.labs[l] = struct{}{}
	registry.Unlock()
	t.Logf("netlab: lab prefix %s (if a run is killed hard: go run ./e2e/netlab/cmd/netlab-purge -prefix %s)", l.Prefix, l.Prefix)
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netlab: teardown: %v", err)
		}
	})
	return l
}

func newPrefix() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "ae" + hex.EncodeToString(b[:])[:5], nil
}

// Dir is a per-lab scratch directory (removed with the test's temp dirs).
func (l *Lab) Dir() string { return l.dir }

// Bridge creates (or returns) the bridge called name.
func (l *Lab) Bridge(name string) *Bridge {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.bridges[name]; ok {
		return b
	}
	if err := l.ensureSwitchLocked(); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	l.seq++
	b := &Bridge{Name: name, Dev: fmt.Sprintf("%sb%d", l.Prefix, l.seq), lab: l}
	if err := run("ip", "-n", l.switchNS, "link", "add", b.Dev, "type", "bridge"); err != nil {
		l.t.Fatalf("netlab: bridge %s: %v", name, err)
	}
	if err := run("ip", "-n", l.switchNS, "link", "set", b.Dev, "up"); err != nil {
		l.t.Fatalf("netlab: bridge %s up: %v", name, err)
	}
	l.bridges[name] = b
	return b
}

// ensureSwitchLocked creates the switch namespace. l.mu is held.
func (l *Lab) ensureSwitchLocked() error {
	if l.switchNS != "" {
		return nil
	}
	ns := l.Prefix + "-sw"
	if err := l.addNSLocked(ns); err != nil {
		return err
	}
	l.switchNS = ns
	return nil
}

// addNSLocked creates a namespace with lo up. The name is recorded before
// the command runs so that teardown removes it whatever happens.
func (l *Lab) addNSLocked(ns string) error {
	if l.closed {
		return errors.New("lab is closed")
	}
	l.nss = append(l.nss, ns)
	if err := run("ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("netns %s: lo up: %w", ns, err)
	}
	return nil
}

// Host creates a host namespace called name. When br is not nil the host
// gets an interface on br with address addrCIDR (for example
// "198.18.0.11/24"); more interfaces can be added with Attach.
func (l *Lab) Host(name string, br *Bridge, addrCIDR string) *Host {
	l.t.Helper()
	if name == "" || name == "sw" || strings.ContainsAny(name, "/ \t") {
		l.t.Fatalf("netlab: bad host name %q", name)
	}
	l.mu.Lock()
	if _, ok := l.hosts[name]; ok {
		l.mu.Unlock()
		l.t.Fatalf("netlab: host %q exists", name)
	}
	h := &Host{Name: name, NS: l.Prefix + "-" + name, lab: l}
	err := l.addNSLocked(h.NS)
	if err == nil {
		l.hosts[name] = h
	}
	l.mu.Unlock()
	if err != nil {
		l.t.Fatalf("netlab: host %s: %v", name, err)
	}
	if br != nil {
		h.Attach(br, addrCIDR)
	}
	return h
}

// Attach adds an interface to h on bridge br, with address addrCIDR, and
// brings it up. The interface is named after the lab prefix and its index.
func (h *Host) Attach(br *Bridge, addrCIDR string) *Iface {
	l := h.lab
	l.t.Helper()
	pfx, err := netip.ParsePrefix(addrCIDR)
	if err != nil {
		l.t.Fatalf("netlab: host %s: address %q: %v", h.Name, addrCIDR, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.t.Fatalf("netlab: host %s: lab is closed", h.Name)
	}
	if br.lab != l {
		l.t.Fatalf("netlab: host %s: bridge %s belongs to another lab", h.Name, br.Name)
	}
	l.seq++
	ifc := &Iface{
		Name:   fmt.Sprintf("%se%d", l.Prefix, len(h.Ifaces())),
		Peer:   fmt.Sprintf("%sp%d", l.Prefix, l.seq),
		Bridge: br,
		Prefix: pfx,
		host:   h,
	}
	steps := [][]string{
		// Both ends are created inside namespaces: the root namespace never
		// sees them.
		{"ip", "-n", h.NS, "link", "add", ifc.Name, "type", "veth", "peer", "name", ifc.Peer, "netns", l.switchNS},
		{"ip", "-n", l.switchNS, "link", "set", ifc.Peer, "master", br.Dev, "up"},
		{"ip", "-n", h.NS, "addr", "add", pfx.String(), "dev", ifc.Name},
		{"ip", "-n", h.NS, "link", "set", ifc.Name, "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			l.t.Fatalf("netlab: host %s on %s: %v", h.Name, br.Name, err)
		}
	}
	h.mu.Lock()
	h.ifaces = append(h.ifaces, ifc)
	h.mu.Unlock()
	return ifc
}

// Close stops every process the lab started and removes every namespace
// it created. It is idempotent and safe to call from any goroutine; a
// concurrent caller returns only when the teardown is complete.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Lab) close() error {
	l.mu.Lock()
	l.closed = true
	procs := l.procList()
	nss := append([]string(nil), l.nss...)
	hosts := make([]*Host, 0, len(l.hosts))
	for _, h := range l.hosts {
		hosts = append(hosts, h)
	}
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Terminate(3 * time.Second)
		}()
	}
	wg.Wait()
	for _, h := range hosts {
		h.closeIdle()
	}
	var errs []error
	// Hosts first (their veths take the switch ends with them), switch last.
	for i := len(nss) - 1; i >= 0; i-- {
		if err := delNS(nss[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := Purge(l.Prefix); err != nil {
		errs = append(errs, err)
	}
	if left := prefixed(l.Prefix); len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left behind: %v", left))
	}
	registry.Lock()
	delete(registry.labs, l)
	registry.Unlock()
	return errors.Join(errs...)
}

func (l *Lab) procList() []*Proc {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	return append([]*Proc(nil), l.procs...)
}

// CleanupAll closes every live lab of this process. RunMain calls it on
// SIGINT/SIGTERM and before -test.timeout expires, when a test may be
// stuck anywhere: a lab whose orderly Close does not finish in 20 s (its
// lock held by a stuck test) is torn down bluntly, without its lock: its
// processes are stopped and everything with its prefix is purged.
func CleanupAll() error {
	registry.Lock()
	labs := make([]*Lab, 0, len(registry.labs))
	for l := range registry.labs {
		labs = append(labs, l)
	}
	registry.Unlock()
	errc := make(chan error, len(labs))
	for _, l := range labs {
		go func() {
			done := make(chan error, 1)
			go func() { done <- l.Close() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				for _, p := range l.procList() {
					p.Terminate(time.Second)
				}
				err = Purge(l.Prefix)
			}
			if err != nil {
				err = fmt.Errorf("lab %s: %w", l.Prefix, err)
			}
			errc <- err
		}()
	}
	var errs []error
	for range labs {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// Purge removes every namespace whose name starts with prefix, and every
// link in the root namespace whose name does. It needs no Lab: it is the
// sweep of last resort for a run that was killed before its cleanup ran.
// It never kills processes; see PIDs.
func Purge(prefix string) error {
	if len(prefix) < 4 {
		return fmt.Errorf("purge: prefix %q too short to be a lab prefix", prefix)
	}
	var errs []error
	for _, ns := range prefixed(prefix) {
		if err := delNS(ns); err != nil {
			errs = append(errs, err)
		}
	}
	out, err := output("ip", "-o", "link", "show")
	if err != nil {
		errs = append(errs, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "12: name@peer: <...>"
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, prefix) {
			if err := run("ip", "link", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Prefixed lists the namespaces whose names start with prefix.
func Prefixed(prefix string) []string { return prefixed(prefix) }

func prefixed(prefix string) []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// PIDs lists the processes still running in namespace ns.
func PIDs(ns string) []string {
	out, _ := output("ip", "netns", "pids", ns)
	return strings.Fields(string(out))
}

func delNS(ns string) error {
	if _, err := os.Stat(netnsDir + "/" + ns); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run("ip", "netns", "del", ns)
}

func run(args ...string) error {
	_, err := output(args...)
	return err
}

func output(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
