package proxy

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Socket is one local listener as the proxy sees it: where a forwarded
// request leaves from and what it puts in Via and Record-Route.
type Socket struct {
	// Name is "transport:ip:port" of the bound address, the format of
	// location.Binding.Socket.
	Name string
	// Transport is "udp", "tcp" or "tls".
	Transport string
	// Host and Port are advertised in Via and Record-Route: the anycast
	// address for a node behind anycast, else the bound address.
	Host string
	Port int
	// Laddr is the bound address. UDP requests are sent from it, so that
	// the NAT pinhole and the callee's view of us match the listener.
	Laddr sip.Addr
}

// IPv6 reports whether the socket is an IPv6 one; a request changing
// address family gets a double Record-Route.
func (s *Socket) IPv6() bool {
	return s.Laddr.IP != nil && s.Laddr.IP.To4() == nil
}

// HostPort is the advertised "host:port".
func (s *Socket) HostPort() string {
	return net.JoinHostPort(strings.Trim(s.Host, "[]"), strconv.Itoa(s.Port))
}

// Via returns a new top Via for a request sent from this socket.
func (s *Socket) Via(branch string) *sip.ViaHeader {
	return &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       sip.NetworkToUpper(s.Transport),
		Host:            s.Host,
		Port:            s.Port,
		Params:          sip.HeaderParams{{K: "branch", V: branch}},
	}
}

// RecordRoute returns our Record-Route URI on this socket, with lr and the
// given extra parameters.
func (s *Socket) RecordRoute(params sip.HeaderParams) *sip.RecordRouteHeader {
	p := sip.HeaderParams{{K: "transport", V: s.Transport}, {K: "lr", V: ""}}
	p = append(p, params...)
	return &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: s.Host, Port: s.Port, UriParams: p}}
}

// Owns reports whether uri names this socket's advertised address (a
// Route, a Record-Route or a Request-URI pointing at us). A missing port
// means 5060 (5061 for sips/tls), a missing transport matches any.
func (s *Socket) Owns(uri *sip.Uri) bool {
	if !strings.EqualFold(strings.Trim(uri.Host, "[]"), strings.Trim(s.Host, "[]")) {
		return false
	}
	port := uri.Port
	if port == 0 {
		port = sip.DefaultPort(s.Transport)
		if uri.IsEncrypted() {
			port = sip.DefaultTlsPort
		}
	}
	if port != s.Port {
		return false
	}
	if tp, ok := uri.UriParams.Get("transport"); ok && tp != "" && !strings.EqualFold(tp, s.Transport) {
		return false
	}
	return true
}
