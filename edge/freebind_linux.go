package edge

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// freebind lets a socket bind an address that is not (yet) on any
// interface: a backup node listens on a VIP before keepalive or the
// cluster moves the VIP to it, and takes traffic the moment it arrives.
// SO_REUSEADDR lets a restarted node rebind while old TCP connections
// linger in TIME_WAIT.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1); serr != nil {
			return
		}
		if network == "tcp6" || network == "udp6" {
			// IPV6_FREEBIND exists since Linux 4.15; IP_FREEBIND above
			// already covers IPv6 sockets on older kernels.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		}
		if network == "tcp4" || network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
