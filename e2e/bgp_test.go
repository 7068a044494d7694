//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/anyedge/anyedge/e2e/netlab"
)

// The BGP end-to-end test: a BIRD 2 router and two edge speakers (the real
// bgp package, run by e2e/cmd/bgpspeaker) in their own namespaces on one
// bridge. Both speakers announce the same anycast /32 and /128; s1 runs
// BFD with the router, s2 does not.
//
//	router  198.18.0.1   fd00:198:18::1    AS 65000, BIRD
//	s1      198.18.0.11  fd00:198:18::11   AS 65001, BFD on
//	s2      198.18.0.12  fd00:198:18::12   AS 65001, BFD off, TCP-MD5
//
// Host IPv6 addresses are ULA: 2001:db8::/32 is kept for anycast and VIPs.

const (
	anycast4 = "203.0.113.10/32"
	anycast6 = "2001:db8::10/128"
)

type edge struct {
	name     string
	host     *netlab.Host
	v4, v6   string
	bfd      bool
	password string // TCP-MD5 key, "" for none
	cfgPath  string
	proc     *netlab.Proc
	bin      string
	extraYML string // per-prefix policy lines for the /32
}

func TestBGPWithBIRD(t *testing.T) {
	for _, tool := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	lab := netlab.New(t) // skips unless root
	bin := buildSpeaker(t)

	lan := lab.Bridge("lan")
	r := lab.Host("r", lan, "198.18.0.1/24")
	s1 := &edge{name: "s1", v4: "198.18.0.11", v6: "fd00:198:18::11", bfd: true, bin: bin}
	s2 := &edge{name: "s2", v4: "198.18.0.12", v6: "fd00:198:18::12", bfd: false, password: "s2-md5-key", bin: bin}
	s1.host = lab.Host("s1", lan, s1.v4+"/24")
	s2.host = lab.Host("s2", lan, s2.v4+"/24")
	addV6(t, r, "fd00:198:18::1/64")
	addV6(t, s1.host, s1.v6+"/64")
	addV6(t, s2.host, s2.v6+"/64")

	b := startBIRD(t, lab, r, []*edge{s1, s2})
	s1.start(t, lab)
	s2.start(t, lab)

	ok := t.Run("established_and_ecmp", func(t *testing.T) {
		d := netlab.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
			return b.established("s1", "s1v6", "s2", "s2v6")
		})
		t.Logf("all four sessions established after %v", d.Round(time.Millisecond))
		d = netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if err := wantNexthops(r, anycast4, s1.v4, s2.v4); err != nil {
				return err
			}
			return wantNexthops(r, anycast6, s1.v6, s2.v6)
		})
		t.Logf("kernel ECMP routes with two next hops (v4 and v6) after %v more", d.Round(time.Millisecond))
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("bfd_up", func(t *testing.T) {
		d := netlab.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
			for _, addr := range []string{s1.v4, s1.v6} {
				if err := b.bfdUp(addr); err != nil {
					return err
				}
			}
			return nil
		})
		t.Logf("BIRD's BFD sessions with s1 (v4 and v6) Up, timers negotiated down to 300 ms, after %v", d.Round(time.Millisecond))
		out, _ := b.cmd("show", "bfd", "sessions")
		t.Logf("birdc show bfd sessions:\n%s", out)
		if err := b.bfdUp(s2.v4); err == nil {
			t.Errorf("BFD session with s2, which has BFD off")
		}
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("set_replaces_path", func(t *testing.T) {
		s1.extraYML = "      med: 50\n      communities: [\"65535:0\"]\n"
		s1.writeConfig(t)
		if err := s1.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		d := netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			routes, err := b.routes(anycast4)
			if err != nil {
				return err
			}
			if err := onePathEach(routes, "s1", "s2"); err != nil {
				return err
			}
			r1 := routes[slices.IndexFunc(routes, func(r birdRoute) bool { return r.proto == "s1" })]
			for _, want := range []string{"BGP.med: 50", "BGP.community: (65535,0)", "BGP.local_pref: 0"} {
				if !slices.Contains(r1.attrs, want) {
					return fmt.Errorf("s1's path lacks %q: %q", want, r1.attrs)
				}
			}
			if best := bestProto(routes); best != "s2" {
				return fmt.Errorf("best path from %q, want s2 (s1 is graceful-shutdown, local-pref 0)", best)
			}
			return wantNexthops(r, anycast4, s2.v4)
		})
		t.Logf("new attributes in place after %v: one path per speaker, s1's with MED 50, (65535,0), local-pref 0; the kernel routes via s2 only", d.Round(time.Millisecond))
		out, _ := b.cmd("show", "route", "all", anycast4)
		t.Logf("birdc show route all %s:\n%s", anycast4, out)

		// And back: the plain path, ECMP again.
		s1.extraYML = ""
		s1.writeConfig(t)
		if err := s1.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			routes, err := b.routes(anycast4)
			if err != nil {
				return err
			}
			if err := onePathEach(routes, "s1", "s2"); err != nil {
				return err
			}
			return wantNexthops(r, anycast4, s1.v4, s2.v4)
		})
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("freeze_with_bfd", func(t *testing.T) {
		// The router declares s1 dead 3 x 300 ms after the last BFD packet
		// it got, which left 0-300 ms before the freeze; then BIRD closes
		// the sessions and flushes the kernel routes. v4 and v6 have their
		// own BFD sessions and are timed apart.
		start := time.Now()
		if err := s1.proc.Stop(); err != nil {
			t.Fatal(err)
		}
		var d4, d6 time.Duration
		waitSince(t, start, 5*time.Second, func() error {
			if d4 == 0 && wantNexthops(r, anycast4, s2.v4) == nil {
				d4 = time.Since(start)
			}
			if d6 == 0 && wantNexthops(r, anycast6, s2.v6) == nil {
				d6 = time.Since(start)
			}
			if d4 == 0 || d6 == 0 {
				return errors.New("s1's paths still in the kernel")
			}
			return nil
		})
		t.Logf("s1 frozen (SIGSTOP): its paths left the kernel after %v (v4) and %v (v6) (BFD 3 x 300 ms)",
			d4.Round(time.Millisecond), d6.Round(time.Millisecond))
		for _, d := range []time.Duration{d4, d6} {
			if d >= time.Second {
				t.Errorf("path removal took %v, want < 1s with BFD", d)
			}
		}
		s1.proc.Cont()
		d := netlab.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
			if err := b.established("s1", "s1v6"); err != nil {
				return err
			}
			if err := wantNexthops(r, anycast4, s1.v4, s2.v4); err != nil {
				return err
			}
			return b.bfdUp(s1.v4)
		})
		t.Logf("s1 thawed: back in ECMP with BFD Up after %v", d.Round(time.Millisecond))
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("freeze_without_bfd", func(t *testing.T) {
		start := time.Now()
		if err := s2.proc.Stop(); err != nil {
			t.Fatal(err)
		}
		d := waitSince(t, start, 12*time.Second, func() error {
			return wantNexthops(r, anycast4, s1.v4)
		})
		t.Logf("s2 frozen (SIGSTOP): its path left the kernel after %v (hold timer 9 s, no BFD)", d.Round(time.Millisecond))
		if d >= 10*time.Second {
			t.Errorf("path removal took %v, want < 10s (hold time 9 s)", d)
		}
		s2.proc.Cont()
		d = netlab.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
			if err := b.established("s2", "s2v6"); err != nil {
				return err
			}
			return wantNexthops(r, anycast4, s1.v4, s2.v4)
		})
		t.Logf("s2 thawed: back in ECMP after %v", d.Round(time.Millisecond))
	})
	if !ok {
		t.FailNow()
	}

	t.Run("kill", func(t *testing.T) {
		start := time.Now()
		if err := s1.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		d := waitSince(t, start, 5*time.Second, func() error {
			if err := wantNexthops(r, anycast4, s2.v4); err != nil {
				return err
			}
			return wantNexthops(r, anycast6, s2.v6)
		})
		t.Logf("s1 killed (SIGKILL): its paths left the kernel after %v (TCP closed by the kernel)", d.Round(time.Millisecond))
		if d >= time.Second {
			t.Errorf("path removal after SIGKILL took %v, want < 1s", d)
		}
	})

	t.Run("sigterm_withdraws", func(t *testing.T) {
		start := time.Now()
		if err := s2.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		d := waitSince(t, start, 5*time.Second, func() error {
			if err := noRoute(r, anycast4); err != nil {
				return err
			}
			return noRoute(r, anycast6)
		})
		t.Logf("s2 terminated (SIGTERM): anycast routes gone after %v", d.Round(time.Millisecond))
		if err, ok := s2.proc.WaitTimeout(5 * time.Second); !ok || err != nil {
			t.Errorf("s2 did not exit cleanly: %v (exited %v)", err, ok)
		}
		if !strings.Contains(s2.proc.Log(), "withdrawing before exit") {
			t.Errorf("s2 did not withdraw before exiting:\n%s", s2.proc.Tail(20))
		}
	})
}

// buildSpeaker builds e2e/cmd/bgpspeaker into a temporary directory.
func buildSpeaker(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go not in PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), "bgpspeaker")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/bgpspeaker")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building bgpspeaker: %v\n%s", err, b)
	}
	return out
}

func addV6(t *testing.T, h *netlab.Host, cidr string) {
	t.Helper()
	// nodad: the address is usable at once, so that BGP and BFD can bind.
	if out, err := exec.Command("ip", "-n", h.NS, "addr", "add", cidr, "dev", h.Ifaces()[0].Name, "nodad").CombinedOutput(); err != nil {
		t.Fatalf("ipv6 address on %s: %v: %s", h.Name, err, out)
	}
}

const speakerTmpl = `log_level: debug
bgp:
  asn: 65001
  router_id: {{.V4}}
  peers:
    - address: 198.18.0.1
      asn: 65000
      password: "{{.Password}}"
      bfd: {enabled: {{.BFD}}}
    - address: fd00:198:18::1
      asn: 65000
      password: "{{.Password}}"
      bfd: {enabled: {{.BFD}}}
  prefixes:
    - prefix: 203.0.113.10/32
{{.Extra}}    - prefix: 2001:db8::10/128
`

func (e *edge) writeConfig(t *testing.T) {
	t.Helper()
	var b strings.Builder
	template.Must(template.New("").Parse(speakerTmpl)).Execute(&b, map[string]any{
		"V4": e.v4, "BFD": e.bfd, "Extra": e.extraYML, "Password": e.password,
	})
	// Write and rename, so that a SIGHUP never reads half a file.
	tmp := e.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfgPath); err != nil {
		t.Fatal(err)
	}
}

func (e *edge) start(t *testing.T, lab *netlab.Lab) {
	t.Helper()
	e.cfgPath = filepath.Join(lab.Dir(), e.name+".yaml")
	e.writeConfig(t)
	e.proc = e.host.Start(t, e.name+".log", e.bin, "-config", e.cfgPath)
}

// bird is the BIRD 2 router.
type bird struct {
	sock string
	proc *netlab.Proc
}

const birdTmpl = `router id 198.18.0.1;
log stderr all;

protocol device { scan time 10; }
protocol direct { disabled; }

protocol kernel kernel4 {
	ipv4 { import none; export all; };
	merge paths on;
}
protocol kernel kernel6 {
	ipv6 { import none; export all; };
	merge paths on;
}

protocol bfd {
	debug { states };
	interface "*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };
}

# RFC 8326: a path tagged GRACEFUL_SHUTDOWN loses to every other path.
filter edge_in {
	if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
	accept;
}

{{range .}}
protocol bgp {{.Name}} {
	local {{.Local}} as 65000;
	neighbor {{.Addr}} as 65001;
	debug { states };
	passive on;       # edges only dial out
	hold time 9;
	bfd {{.BFD}};
	{{if .Password}}password "{{.Password}}";{{end}}
	error wait time 1, 5;
	{{.AF}} { import filter edge_in; export none; };
}
{{end}}`

func startBIRD(t *testing.T, lab *netlab.Lab, r *netlab.Host, edges []*edge) *bird {
	t.Helper()
	type proto struct{ Name, Local, Addr, BFD, AF, Password string }
	var protos []proto
	for _, e := range edges {
		onoff := "off"
		if e.bfd {
			onoff = "on"
		}
		protos = append(protos,
			proto{e.name, "198.18.0.1", e.v4, onoff, "ipv4", e.password},
			proto{e.name + "v6", "fd00:198:18::1", e.v6, onoff, "ipv6", e.password})
	}
	var conf strings.Builder
	template.Must(template.New("").Parse(birdTmpl)).Execute(&conf, protos)
	dir := lab.Dir()
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{sock: filepath.Join(dir, "bird.ctl")}
	b.proc = r.Start(t, "bird.log", "bird", "-c", confPath, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"), "-f")
	netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if b.proc.Exited() {
			return netlab.Permanent(fmt.Errorf("bird exited: %s\n%s", b.proc.State(), b.proc.Tail(20)))
		}
		out, err := b.cmd("show", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Daemon is up and running") {
			return fmt.Errorf("bird status: %s", out)
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range [][]string{{"show", "protocols", "all"}, {"show", "bfd", "sessions"}, {"show", "route", "all"}} {
				out, _ := b.cmd(c...)
				t.Logf("birdc %s:\n%s", strings.Join(c, " "), out)
			}
		}
	})
	return b
}

func (b *bird) cmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// established checks that the named BGP protocols are Established.
func (b *bird) established(names ...string) error {
	out, err := b.cmd("show", "protocols")
	if err != nil {
		return err
	}
	for _, n := range names {
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == n {
				found = true
				if !strings.Contains(line, "Established") {
					return fmt.Errorf("protocol %s: %s", n, strings.TrimSpace(line))
				}
			}
		}
		if !found {
			return fmt.Errorf("protocol %s not listed:\n%s", n, out)
		}
	}
	return nil
}

// bfdUp checks that BIRD's BFD session with addr is Up with the 300 ms
// timers (interval 0.300, timeout 0.900) in force.
func (b *bird) bfdUp(addr string) error {
	out, err := b.cmd("show", "bfd", "sessions")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// IP address, Interface, State, Since (one or two fields), Interval, Timeout
		if len(f) < 6 || f[0] != addr {
			continue
		}
		if f[2] != "Up" {
			return fmt.Errorf("bfd %s: %s", addr, strings.TrimSpace(line))
		}
		if f[len(f)-2] != "0.300" || f[len(f)-1] != "0.900" {
			return fmt.Errorf("bfd %s Up but timers not yet 300/900 ms: %s", addr, strings.TrimSpace(line))
		}
		return nil
	}
	return fmt.Errorf("no bfd session with %s:\n%s", addr, out)
}

// birdRoute is one path of `birdc show route all`.
type birdRoute struct {
	proto string
	best  bool
	attrs []string // the indented lines, trimmed
}

func (b *bird) routes(prefix string) ([]birdRoute, error) {
	out, err := b.cmd("show", "route", "all", prefix)
	if err != nil {
		return nil, err
	}
	return parseBirdRoutes(out), nil
}

// parseBirdRoutes reads the paths of birdc's "show route [all]" output.
func parseBirdRoutes(out string) []birdRoute {
	var rs []birdRoute
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		// "203.0.113.10/32      unicast [s1 12:00:01.123] * (100) [AS65001i]"
		// and the alternatives: "                     unicast [s2 ...] (100) ..."
		if i := strings.Index(line, "unicast ["); i >= 0 {
			rest := line[i+len("unicast ["):]
			name, _, _ := strings.Cut(rest, " ")
			_, after, _ := strings.Cut(rest, "]")
			rs = append(rs, birdRoute{proto: name, best: strings.HasPrefix(strings.TrimSpace(after), "*")})
			continue
		}
		if len(rs) > 0 && strings.HasPrefix(line, "\t") {
			rs[len(rs)-1].attrs = append(rs[len(rs)-1].attrs, strings.TrimSpace(line))
		}
	}
	return rs
}

func onePathEach(rs []birdRoute, protos ...string) error {
	for _, p := range protos {
		n := 0
		for _, r := range rs {
			if r.proto == p {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d paths from %s, want 1 (%+v)", n, p, rs)
		}
	}
	if len(rs) != len(protos) {
		return fmt.Errorf("%d paths, want %d (%+v)", len(rs), len(protos), rs)
	}
	return nil
}

func bestProto(rs []birdRoute) string {
	for _, r := range rs {
		if r.best {
			return r.proto
		}
	}
	return ""
}

// nexthops lists the next hops of the router's kernel route to prefix
// ("via X" of a single path, or of each "nexthop" of a multipath route).
func nexthops(h *netlab.Host, prefix string) ([]string, error) {
	fam := "-4"
	if strings.Contains(prefix, ":") {
		fam = "-6"
	}
	out, err := exec.Command("ip", "-n", h.NS, fam, "route", "show", "exact", prefix).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip route: %w: %s", err, out)
	}
	var via []string
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			via = append(via, f[i+1])
		}
	}
	slices.Sort(via)
	return via, nil
}

func wantNexthops(h *netlab.Host, prefix string, want ...string) error {
	got, err := nexthops(h, prefix)
	if err != nil {
		return err
	}
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("kernel route %s via %v, want %v", prefix, got, want)
	}
	return nil
}

func noRoute(h *netlab.Host, prefix string) error {
	got, err := nexthops(h, prefix)
	if err != nil {
		return err
	}
	if len(got) > 0 {
		return fmt.Errorf("kernel route %s still via %v", prefix, got)
	}
	return nil
}

// waitSince polls f every 5 ms until it succeeds and returns the time
// since start (the moment of the event being measured).
func waitSince(t *testing.T, start time.Time, timeout time.Duration, f func() error) time.Duration {
	t.Helper()
	var d time.Duration
	_, err := netlab.Poll(timeout, 5*time.Millisecond, func() error {
		if err := f(); err != nil {
			return err
		}
		d = time.Since(start)
		return nil
	})
	if err != nil {
		t.Fatal(errors.Join(fmt.Errorf("after %v", time.Since(start).Round(time.Millisecond)), err))
	}
	return d
}
