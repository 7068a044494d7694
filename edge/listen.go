package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/proxy"
)

// socket is one bound listener.
type socket struct {
	cfg Listener
	ps  *proxy.Socket
	pc  net.PacketConn // udp
	ln  net.Listener   // tcp, tls (TLS-wrapped)
	ap  netip.AddrPort // bound address
}

func (s *socket) close() error {
	if s.pc != nil {
		return s.pc.Close()
	}
	if s.ln != nil {
		return s.ln.Close()
	}
	return nil
}

// listen binds l (with IP_FREEBIND on Linux, see freebind).
func listen(ctx context.Context, l Listener) (*socket, error) {
	want := netip.MustParseAddrPort(l.Addr)
	fam := "4"
	if want.Addr().Is6() && !want.Addr().Is4In6() {
		fam = "6"
	}
	lc := net.ListenConfig{Control: freebind}
	s := &socket{cfg: l}
	var local net.Addr
	switch l.Transport {
	case "udp":
		pc, err := lc.ListenPacket(ctx, "udp"+fam, l.Addr)
		if err != nil {
			return nil, err
		}
		s.pc, local = pc, pc.LocalAddr()
	case "tcp", "tls":
		ln, err := lc.Listen(ctx, "tcp"+fam, l.Addr)
		if err != nil {
			return nil, err
		}
		local = ln.Addr()
		if l.Transport == "tls" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				_ = ln.Close()
				return nil, err
			}
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		}
		s.ln = ln
	}
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil {
		_ = s.close()
		return nil, fmt.Errorf("bound address %s: %w", local, err)
	}
	s.ap = ap
	host, port := ap.Addr().String(), int(ap.Port())
	if l.Advertise != "" {
		h, p, _ := net.SplitHostPort(l.Advertise)
		host = h
		if n, _ := strconv.Atoi(p); n != 0 {
			port = n
		}
	}
	ip := net.IP(ap.Addr().AsSlice())
	s.ps = &proxy.Socket{
		Name:      l.Transport + ":" + ap.String(),
		Transport: l.Transport,
		Host:      host,
		Port:      port,
		Laddr:     sip.Addr{IP: ip, Port: int(ap.Port()), Hostname: ap.Addr().String()},
	}
	return s, nil
}
