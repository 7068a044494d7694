// Package vip moves virtual IP addresses with their sharing tags.
//
// Each VIP is bound to a cluster sharing tag. The tag's active owner adds
// the VIP to its interface; a node that loses the tag removes it; on start
// a node removes every configured VIP it does not own (a VIP left behind
// by a crash). The cluster elects one owner per tag and fences a node that
// loses its quorum, so a VIP is on at most one healthy node.
//
// Two modes:
//
//   - l2: the VIP goes on the LAN interface and the new owner announces
//     it: a few gratuitous ARP requests (IPv4) or unsolicited neighbour
//     advertisements with the override flag (IPv6, ICMPv6 type 136 to
//     ff02::1), sent on a raw AF_PACKET socket (by default 3, 100 ms
//     apart), so that the router and the hosts of the LAN update their
//     caches at once instead of when the old entry expires.
//   - l3: the VIP goes on the loopback and only its owner announces it as
//     a /32 or /128 over BGP (the Mover hands these advertisements to the
//     announcement controller). This needs no shared LAN: the routers
//     follow the BGP path.
//
// The Mover turns tag ownership into the desired set of VIPs and hands it
// to a Router, a declarative interface in the manner of tailscale's
// router.Set: Set(owned) makes exactly the owned VIPs present and removes
// the others. NewLinux is the netlink implementation (AddrReplace is
// idempotent, so Set can be repeated at will); Recorder is the fake for
// tests.
//
// # Host settings
//
// A node that shares addresses with others needs, on Linux:
//
//	net.ipv4.conf.all.arp_ignore = 1    # answer ARP only for addresses of the receiving interface:
//	                                    # an l3 VIP (on lo) or the anycast address is never claimed on the LAN
//	net.ipv4.conf.all.arp_announce = 2  # source ARP requests from the interface's own address,
//	                                    # never from a VIP that may move away
//	net.ipv4.conf.all.rp_filter = 0     # (or 2, loose) replies leave from the anycast address or a VIP,
//	net.ipv4.conf.default.rp_filter = 0 # which strict reverse-path filtering would drop
//	net.ipv4.ip_nonlocal_bind = 1       # SIP listens on every VIP before owning it (edged sets
//	                                    # IP_FREEBIND on its sockets, which does the same per socket)
//
// and, for IPv6 VIPs, addresses are added with IFA_F_NODAD so that they
// are usable at once. The lab (package lab) sets all of these in every
// edge's namespace.
package vip
