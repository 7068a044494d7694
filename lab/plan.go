package lab

import (
	"fmt"
	"net/netip"
)

// The address plan. Hosts live in 198.18.0.0/15 (RFC 2544 benchmarking
// space), anycast and VIPs in 203.0.113.0/24 (TEST-NET-3). The IPv6 plan
// mirrors it: hosts in fd00:198:18::/48 (ULA; fd00:198:18:<i>::/64 is
// region i's LAN), anycast and VIPs in 2001:db8:a::/48 (documentation
// space).
const (
	// Anycast is the address every edge announces and serves SIP on.
	Anycast = "203.0.113.10"
	// Anycast6 is the IPv6 anycast address, announced as a /128 over
	// separate IPv6 BGP sessions (see birdTmpl).
	Anycast6 = "2001:db8:a::10"
	// SIPPort is the edges' SIP port on the anycast address.
	SIPPort = 5060
	// EdgeASN is the edges' AS; each router has its own (RegionPlan.ASN).
	EdgeASN = 65001
	// ClusterPort and AdminAddr are the edges' cluster listener port and
	// admin API (on loopback inside each edge's namespace, so that
	// `ip netns exec NS edgectl ...` works with edgectl's default).
	ClusterPort = 5600
	AdminAddr   = "127.0.0.1:9090"
	// Domain is the SIP domain the edges serve.
	Domain = "lab.anyedge.test"
)

// regionNames name the regions; the lab has two or three.
var regionNames = []string{"a", "b", "c"}

// Plan is the lab's topology: every name and address, computed from the
// number of regions alone, before anything is created.
type Plan struct {
	// Prefix starts the name of every namespace of the lab.
	Prefix  string
	Regions []*RegionPlan
	// WAN and WAN6 are the segment between the routers.
	WAN, WAN6 netip.Prefix
}

// RegionPlan is one region: a router, two edges, a client.
type RegionPlan struct {
	Name  string // "a", "b", "c"
	Index int    // 1, 2, 3
	// ASN is the region router's AS.
	ASN uint32
	// LAN is the segment of the router and the edges; ClientNet the
	// router's segment with the client.
	LAN, ClientNet netip.Prefix
	// RouterLAN, RouterClient and RouterWAN are the router's addresses.
	RouterLAN, RouterClient, RouterWAN netip.Addr
	// Client is the client host's address.
	Client netip.Addr
	// VIPL2 lives on an edge's LAN interface (ARP moves it), VIPL3 on
	// its loopback, announced as a /32 by its owner.
	VIPL2, VIPL3 netip.Addr
	// The IPv6 side: the segments' prefixes, the router's and the client's
	// addresses, and the VIPs (VIPL2v6 moved by unsolicited NA, VIPL3v6 a
	// /128 over BGP), held with the IPv4 VIPs under the same tags.
	LAN6, ClientNet6                      netip.Prefix
	RouterLAN6, RouterClient6, RouterWAN6 netip.Addr
	Client6                               netip.Addr
	VIPL2v6, VIPL3v6                      netip.Addr
	Edges                                 []*EdgePlan
}

// EdgePlan is one edge node.
type EdgePlan struct {
	Name   string // "a1"
	ID     uint32 // cluster node id: region index * 10 + n
	Addr   netip.Addr
	Addr6  netip.Addr
	Region *RegionPlan
}

// Namespace names.
func (p *Plan) NS(host string) string { return p.Prefix + "-" + host }

// SwitchNS holds the bridges.
func (p *Plan) SwitchNS() string { return p.NS("sw") }

// RouterName and ClientName are the host names of a region's router and
// client.
func (r *RegionPlan) RouterName() string { return "r" + r.Name }
func (r *RegionPlan) ClientName() string { return "c" + r.Name }

// VIPTag and VIPL3Tag are the sharing tags of the region's VIPs.
func (r *RegionPlan) VIPTag() string   { return "vip-" + r.Name }
func (r *RegionPlan) VIPL3Tag() string { return "vip3-" + r.Name }

// HomeTag is the region's geo HA sharing tag (geo.tag_prefix "home-" +
// region).
func (r *RegionPlan) HomeTag() string { return "home-" + r.Name }

// NewPlan computes the plan of a lab with n regions (2 or 3).
func NewPlan(prefix string, n int) (*Plan, error) {
	if n < 2 || n > len(regionNames) {
		return nil, fmt.Errorf("lab: %d regions: want 2 or 3", n)
	}
	if prefix == "" || len(prefix) > 12 {
		return nil, fmt.Errorf("lab: prefix %q: want 1..12 characters", prefix)
	}
	p := &Plan{Prefix: prefix, WAN: netip.MustParsePrefix("198.18.200.0/24"),
		WAN6: netip.MustParsePrefix("fd00:198:18:200::/64")}
	for i := 1; i <= n; i++ {
		r := &RegionPlan{
			Name:         regionNames[i-1],
			Index:        i,
			ASN:          uint32(65000 + 10*i),
			LAN:          netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i)),
			ClientNet:    netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", 100+i)),
			RouterLAN:    netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", i)),
			RouterClient: netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", 100+i)),
			RouterWAN:    netip.MustParseAddr(fmt.Sprintf("198.18.200.%d", i)),
			Client:       netip.MustParseAddr(fmt.Sprintf("198.18.%d.10", 100+i)),
			VIPL2:        netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", 20+i)),
			VIPL3:        netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", 30+i)),

			LAN6:          netip.MustParsePrefix(fmt.Sprintf("fd00:198:18:%d::/64", i)),
			ClientNet6:    netip.MustParsePrefix(fmt.Sprintf("fd00:198:18:%d::/64", 100+i)),
			RouterLAN6:    netip.MustParseAddr(fmt.Sprintf("fd00:198:18:%d::1", i)),
			RouterClient6: netip.MustParseAddr(fmt.Sprintf("fd00:198:18:%d::1", 100+i)),
			RouterWAN6:    netip.MustParseAddr(fmt.Sprintf("fd00:198:18:200::%d", i)),
			Client6:       netip.MustParseAddr(fmt.Sprintf("fd00:198:18:%d::10", 100+i)),
			VIPL2v6:       netip.MustParseAddr(fmt.Sprintf("2001:db8:a::%d", 20+i)),
			VIPL3v6:       netip.MustParseAddr(fmt.Sprintf("2001:db8:a::%d", 30+i)),
		}
		for j := 1; j <= 2; j++ {
			r.Edges = append(r.Edges, &EdgePlan{
				Name:   fmt.Sprintf("%s%d", r.Name, j),
				ID:     uint32(10*i + j),
				Addr:   netip.MustParseAddr(fmt.Sprintf("198.18.%d.%d", i, 10+j)),
				Addr6:  netip.MustParseAddr(fmt.Sprintf("fd00:198:18:%d::%d", i, 10+j)),
				Region: r,
			})
		}
		p.Regions = append(p.Regions, r)
	}
	return p, nil
}

// Edges lists every edge, region by region.
func (p *Plan) Edges() []*EdgePlan {
	var out []*EdgePlan
	for _, r := range p.Regions {
		out = append(out, r.Edges...)
	}
	return out
}

// Region returns the region called name.
func (p *Plan) Region(name string) *RegionPlan {
	for _, r := range p.Regions {
		if r.Name == name {
			return r
		}
	}
	return nil
}
