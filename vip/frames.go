package vip

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Ethernet types.
const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86DD
)

// GratuitousARP builds a gratuitous ARP request for ip from mac: an
// Ethernet broadcast whose sender and target protocol addresses are both
// ip (RFC 5227 §3 "ARP Announcement"). Hosts that have ip in their cache
// replace its hardware address with mac.
func GratuitousARP(mac net.HardwareAddr, ip netip.Addr) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // protocol: IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	ip4 := ip.As4()
	copy(a[8:14], mac)
	copy(a[14:18], ip4[:])
	// target hardware address: zero
	copy(a[24:28], ip4[:])
	return f
}

// allNodesMAC is the Ethernet address of ff02::1.
var allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}

var allNodes = netip.MustParseAddr("ff02::1")

// UnsolicitedNA builds an unsolicited neighbour advertisement for ip from
// mac (RFC 4861 §7.2.6): to all nodes, hop limit 255, the override flag
// set (solicited and router clear), with the target link-layer address
// option, so that every neighbour replaces its entry for ip.
func UnsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	const icmpLen = 24 + 8
	f := make([]byte, 14+40+icmpLen)
	copy(f[0:6], allNodesMAC)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	h := f[14:54]
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:6], icmpLen)
	h[6] = 58 // ICMPv6
	h[7] = 255
	src, dst := ip.As16(), allNodes.As16()
	copy(h[8:24], src[:])
	copy(h[24:40], dst[:])
	m := f[54:]
	m[0] = 136                                // neighbour advertisement
	binary.BigEndian.PutUint32(m[4:8], 1<<29) // O (override)
	copy(m[8:24], src[:])                     // target
	m[24], m[25] = 2, 1                       // target link-layer address, 8 bytes
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:4], icmp6Checksum(src, dst, m))
	return f
}

// icmp6Checksum is the ICMPv6 checksum over the pseudo-header and msg
// (whose checksum field is zero).
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var pl [8]byte
	binary.BigEndian.PutUint32(pl[0:4], uint32(len(msg)))
	pl[7] = 58
	add(pl[:])
	add(msg)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// announcement returns the frame announcing ip from mac.
func announcement(mac net.HardwareAddr, ip netip.Addr) []byte {
	if ip.Is4() {
		return GratuitousARP(mac, ip)
	}
	return UnsolicitedNA(mac, ip)
}
