//go:build linux

package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Demo registers a few users to the anycast address from every region's
// client and places a test call through it, reporting to w.
func (l *Lab) Demo(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i, r := range l.Plan.Regions {
		c := l.Clients[r.Name]
		for j, u := range []string{Users[(2*i)%len(Users)], Users[(2*i+2)%len(Users)]} {
			port := 5100 + j
			if err := c.Register(ctx, AnycastSIP(), u, port); err != nil {
				return fmt.Errorf("register %s from %s: %w", u, r.ClientName(), err)
			}
			fmt.Fprintf(w, "lab: %s registered from %s (%s:%d) to %s, served by %s\n",
				u, r.ClientName(), r.Client, port, AnycastSIP(), l.servedBy(r, port))
		}
	}
	// dave from every region over IPv6, through the IPv6 anycast address
	// (not bob: he is the test call's callee, on IPv4).
	for _, r := range l.Plan.Regions {
		u, port := "dave", 5110
		if err := l.Clients[r.Name].Register(ctx, AnycastSIP6(), u, port); err != nil {
			return fmt.Errorf("register %s over IPv6 from %s: %w", u, r.ClientName(), err)
		}
		fmt.Fprintf(w, "lab: %s registered over IPv6 from %s ([%s]:%d) to %s\n", u, r.ClientName(), r.Client6, port, AnycastSIP6())
	}
	// The test call: bob's phone is a SIPp UAS on region a's client. With
	// geo it registers once through the anycast address (every edge finds
	// it); without, on both of the region's edges by their own addresses
	// (location is per edge). Either way the call works whichever edge the
	// anycast route picks.
	r := l.Plan.Regions[0]
	c := l.Clients[r.Name]
	const uasPort, uacPort = 5070, 5080
	registrars := []string{AnycastSIP()}
	if !l.opts.Geo {
		registrars = nil
		for _, e := range r.Edges {
			registrars = append(registrars, fmt.Sprintf("%s:%d", e.Addr, SIPPort))
		}
	}
	for _, to := range registrars {
		if err := c.Register(ctx, to, "bob", uasPort); err != nil {
			return fmt.Errorf("register bob at %s: %w", to, err)
		}
	}
	uas, err := c.StartSIPp(ctx, "uas_answer.xml", "", "-p", strconv.Itoa(uasPort), "-m", "1", "-timeout", "20s", "-timeout_error")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := c.RunSIPp(ctx, "uac_call.xml", AnycastSIP(), "-s", "bob", "-p", strconv.Itoa(uacPort), "-m", "1",
		"-timeout", "15s", "-timeout_error"); err != nil {
		uas.Interrupt()
		uas.Wait()
		return fmt.Errorf("test call: %w", err)
	}
	if err := uas.Wait(); err != nil {
		return fmt.Errorf("test call, callee side: %w", err)
	}
	fmt.Fprintf(w, "lab: test call %s:%d -> bob@%s via %s (served by %s) -> %s:%d: answered and hung up in %v\n",
		r.Client, uacPort, Domain, AnycastSIP(), l.servedBy(r, uacPort), r.Client, uasPort, time.Since(start).Round(time.Millisecond))
	return nil
}

// ServedBy is the edge that region r's router sends the client's UDP flow
// from port sport to the anycast SIP port to (the ECMP choice), or nil
// when the route leaves the region.
func (l *Lab) ServedBy(r *RegionPlan, sport int) *Edge {
	name := l.servedBy(r, sport)
	return l.Edges[name]
}

// ServedBy6 is ServedBy for the client's IPv6 flow to the IPv6 anycast
// address.
func (l *Lab) ServedBy6(r *RegionPlan, sport int) *Edge {
	return l.Edges[l.servedByFrom(r, r.Client6.String(), Anycast6, sport)]
}

// servedBy names the edge the router of r sends the client's UDP flow
// from port sport to the anycast address to (the ECMP choice).
func (l *Lab) servedBy(r *RegionPlan, sport int) string {
	return l.servedByFrom(r, r.Client.String(), Anycast, sport)
}

func (l *Lab) servedByFrom(r *RegionPlan, src, dst string, sport int) string {
	rt := l.Routers[r.Name]
	out, err := run("ip", "-n", rt.NS, family(dst), "route", "get", dst, "from", src, "iif", "cli0",
		"ipproto", "udp", "sport", strconv.Itoa(sport), "dport", strconv.Itoa(SIPPort))
	if err != nil {
		return "?"
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			for _, e := range l.Plan.Edges() {
				if e.Addr.String() == f[i+1] || e.Addr6.String() == f[i+1] {
					return e.Name
				}
			}
			return f[i+1]
		}
	}
	return "?"
}

// Summary describes the running lab: per router, the BGP sessions and
// the anycast route; per edge, the process and what it sees.
func (l *Lab) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== anyedge lab %q: %d regions, run directory %s\n", l.Plan.Prefix, len(l.Plan.Regions), l.dir)
	for _, r := range l.Plan.Regions {
		rt := l.Routers[r.Name]
		fmt.Fprintf(&b, "\nregion %s: router %s (AS %d, %s), client %s\n", r.Name, r.RouterName(), r.ASN, r.RouterLAN, r.Client)
		if out, err := rt.Birdc("show", "protocols"); err == nil {
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, " BGP ") {
					fmt.Fprintf(&b, "  bgp  %s\n", strings.Join(strings.Fields(line), " "))
				}
			}
		} else {
			fmt.Fprintf(&b, "  bird: %v\n", err)
		}
		hops, _ := rt.NextHops(Anycast + "/32")
		fmt.Fprintf(&b, "  route %s/32 via %s\n", Anycast, orNone(hops))
		hops, _ = rt.NextHops(Anycast6 + "/128")
		fmt.Fprintf(&b, "  route %s/128 via %s\n", Anycast6, orNone(hops))
		for _, e := range r.Edges {
			edge := l.Edges[e.Name]
			state := "stopped"
			if edge.Proc != nil && edge.Proc.Alive() {
				state = "pid " + strconv.Itoa(edge.Proc.PID)
			}
			line := fmt.Sprintf("  edge %s (node %d, %s): %s", e.Name, e.ID, e.Addr, state)
			if n, err := edge.UpNodes(); err == nil {
				line += fmt.Sprintf(", sees %d/%d nodes up", n, len(l.Edges))
			}
			line += ", " + edge.readiness()
			fmt.Fprintln(&b, line)
		}
	}
	return b.String()
}

// readiness summarises /readyz.
func (e *Edge) readiness() string {
	resp, err := e.http.Get("http://" + AdminAddr + "/readyz")
	if err != nil {
		return "readiness unknown"
	}
	defer resp.Body.Close()
	var body struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return "readiness unknown"
	}
	if body.Ready {
		return "ready"
	}
	return "not ready: " + strings.Join(body.Reasons, "; ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// Hints tells a newcomer what to type next.
func (l *Lab) Hints() string {
	a := l.Plan.Regions[0]
	a1, a2 := a.Edges[0], a.Edges[1]
	ra := l.Routers[a.Name]
	// Paths relative to where the user is, when below it.
	short := func(p string) string {
		wd, err := os.Getwd()
		if err != nil {
			return p
		}
		if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
		return p
	}
	ctl, sock := short(l.opts.Edgectl), short(ra.Sock)
	ns := l.Plan.NS
	return fmt.Sprintf(`
The lab is up and stays up. Each edge's admin API is on %[1]s inside its
namespace, so edgectl needs no flags there. Try:

  ip netns exec %[2]s %[3]s cluster nodes          # the cluster from %[4]s
  ip netns exec %[2]s %[3]s cluster tags           # who owns each VIP tag
  ip netns exec %[2]s %[3]s ready                  # readiness, and why not
  ip netns exec %[2]s %[3]s bgp peers              # %[4]s's session with its router (BGP, BFD)
  ip netns exec %[2]s %[3]s bgp routes             # what %[4]s announces
  ip netns exec %[2]s %[3]s drain -wait            # GRACEFUL_SHUTDOWN, withdraw, hand tags over
  ip netns exec %[2]s %[3]s undrain
  birdc -s %[5]s show protocols                    # router %[6]s
  birdc -s %[5]s show route all %[7]s/32
  birdc -s %[5]s show route all %[17]s/128           # the IPv6 anycast (sessions %[4]sv6, ...)
  ip netns exec %[8]s ip route show %[7]s          # the ECMP route in %[6]s's kernel
  ip netns exec %[9]s sipp -sf edge/sipp/uac_register.xml -s alice -au alice -ap alicepw \
      -key domain %[10]s -m 1 -i %[11]s %[7]s:5060   # register from client %[12]s
  kill -STOP %[13]s                               # freeze %[14]s: BFD drops its path in < 1 s
  kill -CONT %[13]s
  tail -f %[15]s/%[14]s/edged.log
  make lab-down                                    # remove everything

Users: %[16]s (password: the name + "pw"), domain %[10]s.
`, AdminAddr, ns(a1.Name), ctl, a1.Name, sock, a.RouterName(), Anycast, ns(a.RouterName()),
		ns(a.ClientName()), Domain, a.Client, a.ClientName(), l.pid(a2.Name), a2.Name, short(l.dir),
		strings.Join(Users, ", "), Anycast6)
}

// pid is an edge's PID as text.
func (l *Lab) pid(edge string) string {
	if e := l.Edges[edge]; e != nil && e.Proc != nil {
		return strconv.Itoa(e.Proc.PID)
	}
	return "PID"
}

// Purge removes every namespace named prefix-* without a state file (the
// sweep of last resort). It kills no process. It returns how many it
// removed.
func Purge(prefix string) (int, error) {
	n := 0
	var err error
	for _, ns := range namespaces(prefix) {
		if e := delNS(ns); e != nil {
			err = e
			continue
		}
		n++
	}
	return n, err
}

// FlowEdge finds, by counting packets, the edge of region r that receives
// p's flow: a counting rule (no target) in each edge's INPUT chain,
// removed again before it returns. The router's `ip route get` cannot be
// trusted for this with IPv6: the kernel's multipath hash of a forwarded
// IPv6 packet does not always pick the path route get reports.
func (l *Lab) FlowEdge(r *RegionPlan, p *Prober, timeout time.Duration) (*Edge, error) {
	tool := "iptables"
	if p.dst.IP.To4() == nil {
		tool = "ip6tables"
	}
	rule := []string{"INPUT", "-p", "udp", "-d", p.dst.IP.String(), "--dport", strconv.Itoa(p.dst.Port),
		"--sport", strconv.Itoa(p.LocalPort())}
	var edges []*Edge
	defer func() {
		for _, e := range edges {
			_, _ = inNS(e.NS, append([]string{tool, "-w", "5", "-D"}, rule...)...)
		}
	}()
	for _, ep := range r.Edges {
		e := l.Edges[ep.Name]
		if _, err := inNS(e.NS, append([]string{tool, "-w", "5", "-I"}, rule...)...); err != nil {
			return nil, err
		}
		edges = append(edges, e)
	}
	var found *Edge
	err := poll(timeout, 20*time.Millisecond, func() error {
		for _, e := range edges {
			out, err := inNS(e.NS, tool, "-w", "5", "-L", "INPUT", "-v", "-n", "-x")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) > 0 && strings.Contains(line, "spt:"+strconv.Itoa(p.LocalPort())) {
					if n, _ := strconv.Atoi(f[0]); n >= 3 {
						found = e
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no edge of region %s has received 3 packets of the flow from port %d yet", r.Name, p.LocalPort())
	})
	return found, err
}
