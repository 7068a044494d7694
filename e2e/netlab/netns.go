//go:build linux

package netlab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// inNS runs fn on an OS thread that has entered the host's network
// namespace. Sockets created by fn belong to that namespace for their whole
// life, whatever thread uses them later; so fn should only create sockets
// and return them.
//
// The thread goes back to its original namespace afterwards. If it cannot,
// the goroutine exits still locked and the runtime throws the thread away,
// so that no other goroutine ever runs in the wrong namespace.
func (h *Host) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back := false
		defer func() {
			if back {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			back = true
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(netnsDir+"/"+h.NS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			back = true
			errc <- fmt.Errorf("open netns %s: %w", h.NS, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			back = true
			errc <- fmt.Errorf("setns %s: %w", h.NS, err)
			return
		}
		err = fn()
		back = unix.Setns(orig, unix.CLONE_NEWNET) == nil
		errc <- err
	}()
	return <-errc
}

// DialContext dials from inside the host's namespace. Use an address
// literal: name resolution would run on other threads.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the host's namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.inNS(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// Ping sends one ICMP echo request from the host to dst and waits for the
// reply until ctx ends. It returns the round-trip time. (No ping binary is
// needed: it uses a raw socket created inside the namespace.)
func (h *Host) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("ping %s: IPv4 only", dst)
	}
	var pc net.PacketConn
	if err := h.inNS(func() error {
		var err error
		pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, err
	}
	defer pc.Close()
	if dl, ok := ctx.Deadline(); ok {
		pc.SetDeadline(dl)
	} else {
		pc.SetDeadline(time.Now().Add(time.Second))
	}
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	const seq = 1
	msg := make([]byte, 8+16)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], "netlab-ping-0123")
	binary.BigEndian.PutUint16(msg[2:], checksum(msg))

	start := time.Now()
	if _, err := pc.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s from %s: %w", dst, h.Name, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return 0, fmt.Errorf("ping %s from %s: no reply: %w", dst, h.Name, err)
		}
		// Go strips the IPv4 header from ip4 raw reads.
		if n < 8 || buf[0] != 0 || binary.BigEndian.Uint16(buf[4:]) != id || binary.BigEndian.Uint16(buf[6:]) != seq {
			continue
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(dst.AsSlice()) {
			continue
		}
		return time.Since(start), nil
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
