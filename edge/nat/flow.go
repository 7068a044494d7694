// Package nat is anyedge's NAT traversal: where a request for a NATed
// contact really goes (the address its REGISTER came from, over the same
// transport and listener), flow tokens that carry that address through a
// dialog's Record-Route, and keepalives that hold NAT pinholes open and
// remove contacts that stopped answering.
//
// NAT detection itself is the registrar's (registrar.DetectNAT); this
// package acts on the NATed flag and the received address it stores.
package nat

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/anyedge/anyedge/edge/location"
)

// Flow is the network path to a UA: the transport and the remote address
// its packets come from (after NAT).
type Flow struct {
	Transport string // "udp", "tcp", "tls"
	Addr      string // "ip:port"
}

// String encodes f for a URI parameter: "udp~192.0.2.1~5060", with the
// colons of an IPv6 address written as '-'. URI parameters may not hold
// '[' (sipgo reads it as an IPv6 host) and ':' is ambiguous with IPv6.
func (f Flow) String() string {
	host, port, err := net.SplitHostPort(f.Addr)
	if err != nil {
		return ""
	}
	return f.Transport + "~" + strings.ReplaceAll(host, ":", "-") + "~" + port
}

// ErrBadFlow: a flow token that String did not make.
var ErrBadFlow = errors.New("nat: malformed flow token")

// ParseFlow decodes a token made by Flow.String.
func ParseFlow(s string) (Flow, error) {
	parts := strings.Split(s, "~")
	if len(parts) != 3 {
		return Flow{}, ErrBadFlow
	}
	switch parts[0] {
	case "udp", "tcp", "tls":
	default:
		return Flow{}, ErrBadFlow
	}
	ip, err := netip.ParseAddr(strings.ReplaceAll(parts[1], "-", ":"))
	if err != nil {
		return Flow{}, ErrBadFlow
	}
	port, err := strconv.ParseUint(parts[2], 10, 16)
	if err != nil || port == 0 {
		return Flow{}, ErrBadFlow
	}
	return Flow{Transport: parts[0], Addr: netip.AddrPortFrom(ip, uint16(port)).String()}, nil
}

// Route is how a request reaches a registered contact.
type Route struct {
	// Dest is the "ip:port" to send to: the received address when the
	// binding has one, else "" (resolve the Contact URI).
	Dest string
	// Transport is the transport of the REGISTER ("udp" when unknown).
	Transport string
	// Socket is the local listener the REGISTER came in on
	// ("udp:ip:port"); requests leave from it so that they come from the
	// address the NAT pinhole was opened to, and reuse the connection for
	// TCP and TLS. "" when unknown.
	Socket string
}

// RouteFor returns where requests for b go. The Request-URI stays the
// Contact as registered; only the destination changes. The received
// address is used even when the binding is not NATed: then it equals the
// Contact's address for UDP, and for TCP it is the connection to reuse
// (a UA's listening port is usually not reachable, RFC 5626 §5).
func RouteFor(b location.Binding) Route {
	r := Route{Dest: b.Received, Transport: strings.ToLower(b.Transport), Socket: b.Socket}
	if r.Transport == "" {
		r.Transport = "udp"
	}
	return r
}

// FlowOf returns the flow of b, when it has a received address.
func FlowOf(b location.Binding) (Flow, bool) {
	if b.Received == "" {
		return Flow{}, false
	}
	r := RouteFor(b)
	return Flow{Transport: r.Transport, Addr: r.Dest}, true
}
