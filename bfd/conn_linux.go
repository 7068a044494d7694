//go:build linux

package bfd

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// tosCS6 is the DSCP class of network control traffic, which BFD is.
const tosCS6 = 0xc0

// udpRx is the receive socket: bound to local:3784, delivering the TTL
// (hop limit) of each packet as ancillary data.
type udpRx struct {
	c   *net.UDPConn
	v4  bool
	oob []byte
}

func network(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

func listenRx(local netip.AddrPort) (rxConn, error) {
	v4 := local.Addr().Is4()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if v4 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network(local.Addr()), local.String())
	if err != nil {
		return nil, err
	}
	return &udpRx{c: pc.(*net.UDPConn), v4: v4, oob: make([]byte, unix.CmsgSpace(4)*2)}, nil
}

func (u *udpRx) read(b []byte) (int, netip.AddrPort, int, error) {
	n, oobn, _, from, err := u.c.ReadMsgUDPAddrPort(b, u.oob)
	if err != nil {
		return 0, from, 0, err
	}
	ttl := -1 // unknown: refused like any TTL other than 255
	msgs, err := unix.ParseSocketControlMessage(u.oob[:oobn])
	if err == nil {
		for _, m := range msgs {
			if len(m.Data) < 4 {
				continue
			}
			if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL) ||
				(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) {
				ttl = int(int32(binary.NativeEndian.Uint32(m.Data)))
			}
		}
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), ttl, nil
}

func (u *udpRx) localAddr() netip.AddrPort {
	a := u.c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (u *udpRx) Close() error { return u.c.Close() }

// dialTx opens the sending socket of one session: bound to local (a source
// port in the RFC 5881 range), connected to the peer, TTL 255, DSCP CS6.
func dialTx(local, peer netip.AddrPort) (txConn, error) {
	v4 := local.Addr().Is4()
	d := net.Dialer{
		LocalAddr: net.UDPAddrFromAddrPort(local),
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if v4 {
					serr = errors.Join(
						unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttlRequired),
						unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, tosCS6))
				} else {
					serr = errors.Join(
						unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttlRequired),
						unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tosCS6))
				}
			})
			return errors.Join(err, serr)
		},
	}
	c, err := d.Dial(network(local.Addr()), peer.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
