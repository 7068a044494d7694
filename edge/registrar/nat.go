package registrar

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// DetectNAT reports whether a UA must be reached through the address its
// request came from (src, "ip:port") rather than the address it advertises:
// the proxy and the keepalive pinger then send to Binding.Received over
// Binding.Socket. It is the test OpenSIPS's nat_uac_test and Kamailio's
// nat_uac_test flags 1, 2, 16 perform, for the Contact and the topmost Via:
//
//   - the host is a private (RFC 1918, fc00::/7), shared (CGNAT
//     100.64.0.0/10) or link-local (169.254.0.0/16, fe80::/10) address; or
//   - the host:port differs from src. A port of 0 means the default, 5060
//     (5061 when the Via says TLS).
//
// A host name can't be compared without DNS and is not taken as a sign of
// NAT. For TCP and TLS the source port is usually ephemeral, so a UA is
// reported as NATed there too: that is the right answer, since requests to
// it must reuse its connection. An unparsable src leaves only the address
// checks.
func DetectNAT(contactHost string, contactPort int, via *sip.ViaHeader, src string) bool {
	source, err := netip.ParseAddrPort(src)
	haveSrc := err == nil
	defPort := 5060
	if via != nil && strings.EqualFold(via.Transport, "TLS") {
		defPort = 5061
	}
	behind := func(host string, port int) bool {
		ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil {
			return false
		}
		ip = ip.Unmap()
		if natted(ip) {
			return true
		}
		if !haveSrc {
			return false
		}
		if port == 0 {
			port = defPort
		}
		return ip != source.Addr().Unmap() || port != int(source.Port())
	}
	if contactHost != "" && behind(contactHost, contactPort) {
		return true
	}
	return via != nil && behind(via.Host, via.Port)
}

var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	linkLocal = netip.MustParsePrefix("169.254.0.0/16")
)

// natted reports addresses that are never reachable from the Internet.
func natted(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLinkLocalUnicast() || cgnat.Contains(ip) || linkLocal.Contains(ip)
}
