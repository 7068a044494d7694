//go:build linux

package lab

import (
	"fmt"
	"slices"
	"strings"
	"text/template"
)

// birdTmpl is a region router's BIRD 2 config. The router:
//   - peers with its edges (eBGP, passive: edges dial out), BFD on, short
//     error waits so that a restarted edge is peered with again at once;
//   - prefers its own region (local-pref 200 over 100 for the WAN) and
//     honours GRACEFUL_SHUTDOWN (RFC 8326: local-pref 0), so a drained
//     region's traffic goes to the others;
//   - puts every equal best path in the kernel (ECMP: merge paths);
//   - exchanges its connected networks and the anycast paths with the
//     other routers over the WAN.
//
// IPv6 runs on separate sessions over IPv6 addresses (edge "a1v6",
// "wan_b6"), each with its own BFD session, rather than as a second
// family on the IPv4 sessions. On an IPv4 session GoBGP v3's
// next-hop-self gives an IPv6 path the session's IPv4 address as next hop
// (an IPv4-mapped address in MP_REACH_NLRI), which BIRD cannot resolve,
// and RFC 8950 extended next hop covers only the opposite case (IPv4
// routes, IPv6 next hop). Separate sessions need nothing special from
// either side: next-hop-self is the edge's IPv6 address on the LAN, and
// a dead IPv6 session (or its BFD) withdraws only the IPv6 paths.
const birdTmpl = `# Region {{.R.Name}} router, written by the anyedge lab.
router id {{.R.RouterWAN}};
log stderr all;

protocol device { scan time 10; }

# Our segments, for the other regions.
protocol direct {
	ipv4;
	ipv6;
	interface "lan0", "cli0";
}

protocol kernel kernel4 {
	ipv4 {
		import none;
		export filter { if source = RTS_DEVICE then reject; accept; };
	};
	merge paths on;
}

protocol kernel kernel6 {
	ipv6 {
		import none;
		export filter { if source = RTS_DEVICE then reject; accept; };
	};
	merge paths on;
}

protocol bfd {
	interface "lan0" { min rx interval {{.BFDms}} ms; min tx interval {{.BFDms}} ms; multiplier 3; };
}

define ANYCAST = [ 203.0.113.0/24{32,32} ];
define ANYCAST6 = [ 2001:db8::/32{128,128} ];

# Paths from our edges: anycast and VIP /32s and /128s only.
filter edge_in {
	if ! (net ~ ANYCAST) then reject;
	if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
	else bgp_local_pref = 200;
	accept;
}

filter edge_in6 {
	if ! (net ~ ANYCAST6) then reject;
	if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
	else bgp_local_pref = 200;
	accept;
}

filter wan_in {
	if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
	else bgp_local_pref = 100;
	accept;
}

filter wan_out {
	if source = RTS_DEVICE then accept;
	if net ~ ANYCAST then accept;
	reject;
}

filter wan_out6 {
	if source = RTS_DEVICE then accept;
	if net ~ ANYCAST6 then accept;
	reject;
}

template bgp edge {
	local {{.R.RouterLAN}} as {{.R.ASN}};
	passive on;
	hold time 9;
	bfd on;
	error wait time 1, 5;
	ipv4 { import filter edge_in; export none; };
}

template bgp edge6 {
	local {{.R.RouterLAN6}} as {{.R.ASN}};
	passive on;
	hold time 9;
	bfd on;
	error wait time 1, 5;
	ipv6 { import filter edge_in6; export none; };
}
{{range .R.Edges}}
protocol bgp {{.Name}} from edge { neighbor {{.Addr}} as {{$.EdgeASN}}; }
protocol bgp {{.Name}}v6 from edge6 { neighbor {{.Addr6}} as {{$.EdgeASN}}; }
{{- end}}
{{range .Peers}}
protocol bgp wan_{{.Name}} {
	local {{$.R.RouterWAN}} as {{$.R.ASN}};
	neighbor {{.RouterWAN}} as {{.ASN}};
	hold time 9;
	connect retry time 1;
	error wait time 1, 5;
	ipv4 { import filter wan_in; export filter wan_out; next hop self; };
}

protocol bgp wan_{{.Name}}6 {
	local {{$.R.RouterWAN6}} as {{$.R.ASN}};
	neighbor {{.RouterWAN6}} as {{.ASN}};
	hold time 9;
	connect retry time 1;
	error wait time 1, 5;
	ipv6 { import filter wan_in; export filter wan_out6; next hop self; };
}
{{- end}}
`

// BFDInterval is the routers' BFD interval; with a multiplier of 3 a
// dead edge is declared down 400-600 ms after its last packet, inside the
// 1 s budget even on a loaded machine. The edges run the same.
const BFDInterval = 200

// birdConfig renders the config of region r's router.
func birdConfig(p *Plan, r *RegionPlan) (string, error) {
	var peers []*RegionPlan
	for _, o := range p.Regions {
		if o != r {
			peers = append(peers, o)
		}
	}
	var b strings.Builder
	err := template.Must(template.New("bird").Parse(birdTmpl)).Execute(&b, map[string]any{
		"R": r, "Peers": peers, "EdgeASN": EdgeASN, "BFDms": BFDInterval,
	})
	return b.String(), err
}

// Router is a region's BIRD.
type Router struct {
	Region *RegionPlan
	NS     string
	Sock   string // birdc control socket
	Proc   *Proc
}

// Birdc runs a birdc command against the router.
func (r *Router) Birdc(args ...string) (string, error) {
	return run(append([]string{"birdc", "-s", r.Sock}, args...)...)
}

// Established checks that the named BGP protocols are Established.
func (r *Router) Established(names ...string) error {
	out, err := r.Birdc("show", "protocols")
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
					return fmt.Errorf("%s: protocol %s: %s", r.Region.RouterName(), n, strings.TrimSpace(line))
				}
			}
		}
		if !found {
			return fmt.Errorf("%s: protocol %s not listed", r.Region.RouterName(), n)
		}
	}
	return nil
}

// BFDUp checks that the BFD session with addr is Up.
func (r *Router) BFDUp(addr string) error {
	out, err := r.Birdc("show", "bfd", "sessions")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == addr {
			if f[2] != "Up" {
				return fmt.Errorf("%s: bfd %s: %s", r.Region.RouterName(), addr, strings.TrimSpace(line))
			}
			return nil
		}
	}
	return fmt.Errorf("%s: no bfd session with %s", r.Region.RouterName(), addr)
}

// NextHops lists the next hops of the router's kernel route to prefix,
// sorted ("via X" of a single path, or of each "nexthop" of a multipath
// route). None when there is no route.
func (r *Router) NextHops(prefix string) ([]string, error) {
	out, err := run("ip", "-n", r.NS, family(prefix), "route", "show", "exact", prefix)
	if err != nil {
		return nil, err
	}
	var via []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			via = append(via, f[i+1])
		}
	}
	slices.Sort(via)
	return via, nil
}

// WantNextHops checks the kernel route to prefix against want (any order;
// none: no route).
func (r *Router) WantNextHops(prefix string, want ...string) error {
	got, err := r.NextHops(prefix)
	if err != nil {
		return err
	}
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: route %s via %v, want %v", r.Region.RouterName(), prefix, got, want)
	}
	return nil
}

// family is ip's family flag for an address or prefix.
func family(addr string) string {
	if strings.Contains(addr, ":") {
		return "-6"
	}
	return "-4"
}

// RouteFor is the next hop the router's kernel picks for traffic from src
// to dst arriving on the client interface (the ECMP choice of that flow).
func (r *Router) RouteFor(src, dst string) (string, error) {
	out, err := run("ip", "-n", r.NS, family(dst), "route", "get", dst, "from", src, "iif", "cli0")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("%s: no next hop for %s from %s: %s", r.Region.RouterName(), dst, src, strings.TrimSpace(out))
}
