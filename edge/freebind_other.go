//go:build !linux

package edge

import "syscall"

// freebind is Linux-only (IP_FREEBIND); elsewhere an address must be on the
// box before the node can listen on it.
func freebind(_, _ string, _ syscall.RawConn) error { return nil }
