//go:build !linux

package bfd

import (
	"errors"
	"net/netip"
)

// errUnsupported: the sockets need Linux's IP_RECVTTL and friends.
var errUnsupported = errors.New("bfd: not supported on this system (Linux only)")

func listenRx(netip.AddrPort) (rxConn, error) { return nil, errUnsupported }

func dialTx(netip.AddrPort, netip.AddrPort) (txConn, error) { return nil, errUnsupported }

func isAddrInUse(error) bool { return false }
