// Package lab builds the anyedge lab on one Linux machine with network
// namespaces, veth pairs and bridges: two regions (three on request),
// each with a BIRD 2 router, two edged nodes and a client, the routers
// peering with each other across a WAN segment. `make lab` runs it through
// lab/cmd/edgelab; the end-to-end tests and failover benchmarks use the
// same package.
//
//	        client ca 198.18.101.10           client cb 198.18.102.10
//	             |                                 |
//	    router ra (BIRD, AS 65010) ---- WAN ---- router rb (BIRD, AS 65020)
//	      198.18.1.1   198.18.200.1      198.18.200.2   198.18.2.1
//	        |      |                                  |      |
//	   edge a1    edge a2                        edge b1    edge b2
//	198.18.1.11  198.18.1.12                  198.18.2.11  198.18.2.12
//
// Every edge announces the anycast address 203.0.113.10/32 (AS 65001) to
// its region's router over eBGP with BFD. A router puts both of its edges'
// paths in the kernel (ECMP), prefers its own region (local-pref 200 over
// 100 for paths from the WAN), honours GRACEFUL_SHUTDOWN (local-pref 0)
// and fails over to another region when its own edges withdraw. Region n
// also has an L2 VIP 203.0.113.(20+n) on the LAN and an L3 VIP
// 203.0.113.(30+n) announced as a /32, each bound to a sharing tag
// (vip-a, vip3-a, ...).
//
// With Options.Geo (make lab turns it on) location is distributed (the
// geo section, user-facing model): a registration lives on the edge that
// took it and on its region partner, every edge finds it, and the
// region's tag home-a, home-b, ... decides who serves it while its home is
// down or restarting. Without it each edge keeps its own registrations.
//
// IPv6 runs alongside on every segment (hosts in fd00:198:18::/48, region
// n's LAN fd00:198:18:n::/64, edge an at ::1n, the router at ::1): every
// edge also announces 2001:db8:a::10/128, on a separate IPv6 BGP session
// with its own BFD session (see birdTmpl for why not one session for both
// families), and serves SIP on it; region n's VIPs have IPv6 twins,
// 2001:db8:a::(20+n) (moved by unsolicited neighbour advertisements) and
// 2001:db8:a::(30+n) (a /128), under the same tags.
//
// Everything a lab creates carries its prefix (namespaces "anylab-ra",
// "anylab-a1", ...; the bridges live in "anylab-sw", so the root namespace
// is never touched). The state file in the run directory records the
// prefix and every process with its PID and start time, so that Down,
// from any process, stops exactly what Up started and removes every
// namespace.
package lab
