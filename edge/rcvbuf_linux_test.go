package edge

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestUDPReadBuffer: UDP listeners get the larger receive buffer, as far
// as net.core.rmem_max allows (Linux reports twice what was set).
func TestUDPReadBuffer(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip(err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	f := startServer(t, nil)
	var uc *net.UDPConn
	for _, s := range f.srv.sockets {
		if c, ok := s.pc.(*net.UDPConn); ok {
			uc = c
		}
	}
	if uc == nil {
		t.Fatal("no UDP listener")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if want := 2 * min(udpReadBuffer, rmemMax); got < want {
		t.Fatalf("SO_RCVBUF %d, want %d (rmem_max %d)", got, want, rmemMax)
	}
}
