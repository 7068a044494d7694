//go:build linux

package vip

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNewNetns runs the test body on a locked thread inside a fresh network
// namespace, so that the real netlink router changes nothing on the host.
func inNewNetns(t *testing.T, body func()) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
			runtime.UnlockOSThread()
			return
		}
		defer ns.Close()
		defer func() {
			// Back to the original namespace, or let the thread die.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		body()
	}()
	<-done
}

func TestLinuxRouter(t *testing.T) {
	inNewNetns(t, func() {
		lo, _ := netlink.LinkByName("lo")
		must(t, netlink.LinkSetUp(lo))
		must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v0"}, PeerName: "v1"}))
		v0, _ := netlink.LinkByName("v0")
		v1, _ := netlink.LinkByName("v1")
		must(t, netlink.LinkSetUp(v0))
		must(t, netlink.LinkSetUp(v1))
		// An address that is no VIP: Set must never touch it.
		own, _ := netlink.ParseAddr("198.18.0.11/24")
		must(t, netlink.AddrAdd(v0, own))
		// A VIP left behind by a crash.
		stray, _ := netlink.ParseAddr("203.0.113.31/32")
		must(t, netlink.AddrAdd(lo, stray))

		vips, err := Parse([]Config{
			{Tag: "a", Address: "203.0.113.21/32", Interface: "v0"},
			{Tag: "a", Address: "2001:db8::21/128", Interface: "v0"},
			{Tag: "b", Address: "203.0.113.31/32", Mode: ModeL3},
		}, nil)
		must(t, err)
		var sent atomic.Int32
		r, err := NewLinux(vips, WithAnnounce(Announce{Count: 3, Interval: 20 * time.Millisecond}),
			WithAnnounced(func(VIP) { sent.Add(1) }))
		must(t, err)
		defer r.Close()
		capture := listenAll(t, v1.Attrs().Index)
		defer unix.Close(capture)

		// Reconcile on start: nothing owned, the stray VIP goes.
		must(t, r.Set(nil))
		wantAddrs(t, lo, "127.0.0.1")
		wantAddrs(t, v0, "198.18.0.11")

		must(t, r.Set(vips))
		wantAddrs(t, lo, "127.0.0.1", "203.0.113.31")
		wantAddrs(t, v0, "198.18.0.11", "203.0.113.21", "2001:db8::21")
		arps, nas := countAnnouncements(t, capture, v0.Attrs().HardwareAddr, 3, 3)
		if arps != 3 || nas != 3 {
			t.Errorf("%d gratuitous ARPs and %d unsolicited NAs seen on the peer, want 3 and 3", arps, nas)
		}

		// Idempotent: nothing new is added or announced.
		must(t, r.Set(vips))
		wantAddrs(t, v0, "198.18.0.11", "203.0.113.21", "2001:db8::21")
		if arps, nas := countAnnouncements(t, capture, nil, 1, 1); arps+nas != 0 {
			t.Errorf("a repeated Set announced again: %d ARPs, %d NAs", arps, nas)
		}
		if n := sent.Load(); n != 6 {
			t.Errorf("%d announcements reported sent, want 6", n)
		}

		// Losing tag a: its VIPs go, the rest stays.
		must(t, r.Set(vips[2:]))
		wantAddrs(t, v0, "198.18.0.11")
		wantAddrs(t, lo, "127.0.0.1", "203.0.113.31")
		must(t, r.Set(nil))
		wantAddrs(t, lo, "127.0.0.1")
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantAddrs(t *testing.T, l netlink.Link, want ...string) {
	t.Helper()
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	must(t, err)
	var got []string
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() || a.IP.Equal(net.IPv6loopback) {
			continue
		}
		if a.IP.To4() == nil && a.Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s is tentative (DAD): not usable at once", a.IP)
		}
		got = append(got, a.IP.String())
	}
	if len(got) != len(want) {
		t.Fatalf("%s has %v, want %v", l.Attrs().Name, got, want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Fatalf("%s has %v, want %v", l.Attrs().Name, got, want)
		}
	}
}

func listenAll(t *testing.T, ifindex int) int {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	must(t, err)
	must(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}))
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	return fd
}

// countAnnouncements reads frames for up to a second, until it has seen
// wantARP gratuitous ARPs for 203.0.113.21 and wantNA unsolicited NAs for
// 2001:db8::21 (from mac, when given).
func countAnnouncements(t *testing.T, fd int, mac net.HardwareAddr, wantARP, wantNA int) (arps, nas int) {
	garp := GratuitousARP(mac, netip.MustParseAddr("203.0.113.21"))
	na := UnsolicitedNA(mac, netip.MustParseAddr("2001:db8::21"))
	buf := make([]byte, 2048)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && (arps < wantARP || nas < wantNA) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:n]
		switch {
		case len(f) >= len(garp) && bytes.Equal(f[12:14], garp[12:14]) && bytes.Equal(f[14+24:14+28], garp[14+24:14+28]):
			if mac == nil || bytes.Equal(f[:len(garp)], garp) {
				arps++
			}
		case len(f) >= len(na) && bytes.Equal(f[12:14], na[12:14]) && len(f) > 54 && f[54] == 136 && bytes.Equal(f[54+8:54+24], na[54+8:54+24]):
			if mac == nil || bytes.Equal(f[:len(na)], na) {
				nas++
			}
		}
	}
	return arps, nas
}
