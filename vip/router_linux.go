//go:build linux

package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Linux is the netlink Router. Addresses are added with AddrReplace
// (idempotent), IPv6 ones with IFA_F_NODAD; an l2 VIP that arrives is
// announced on a raw AF_PACKET socket. The netlink and packet sockets are
// opened by NewLinux, in the network namespace of the calling thread, and
// keep working there whatever thread uses them later.
type Linux struct {
	vips     []VIP
	log      *slog.Logger
	announce Announce
	onSent   func(VIP)

	h  *netlink.Handle
	fd int // AF_PACKET, SOCK_RAW

	mu     sync.Mutex // one Set at a time
	wg     sync.WaitGroup
	stop   chan struct{}
	closed bool
}

// LinuxOption sets an optional dependency of the Linux router.
type LinuxOption func(*Linux)

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) LinuxOption { return func(r *Linux) { r.log = l } }

// WithAnnounce sets the gratuitous ARP / NA burst. Default 3 × 100 ms.
func WithAnnounce(a Announce) LinuxOption { return func(r *Linux) { r.announce = a } }

// WithAnnounced calls f after each announcement frame is sent (metrics).
func WithAnnounced(f func(VIP)) LinuxOption { return func(r *Linux) { r.onSent = f } }

// NewLinux opens the netlink and packet sockets for the configured vips.
func NewLinux(vips []VIP, opts ...LinuxOption) (*Linux, error) {
	r := &Linux{vips: vips, log: slog.New(slog.DiscardHandler), stop: make(chan struct{})}
	for _, o := range opts {
		o(r)
	}
	r.announce.defaults()
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	r.h = h
	// Protocol 0: the socket only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("vip: packet socket (needs CAP_NET_RAW): %w", err)
	}
	r.fd = fd
	return r, nil
}

// Set implements Router.
func (r *Linux) Set(owned []VIP) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("vip: router closed")
	}
	want := map[netip.Prefix]bool{}
	for _, v := range owned {
		want[v.Prefix] = true
	}
	var errs []error
	for _, v := range r.vips {
		link, err := r.h.LinkByName(v.Interface)
		if err != nil {
			if want[v.Prefix] {
				errs = append(errs, fmt.Errorf("vip %s: interface %s: %w", v.Prefix, v.Interface, err))
			}
			continue
		}
		present, err := r.present(link, v.Prefix)
		if err != nil {
			errs = append(errs, fmt.Errorf("vip %s: list addresses of %s: %w", v.Prefix, v.Interface, err))
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(v.Prefix)}
		if v.Prefix.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		switch {
		case want[v.Prefix]:
			if err := r.h.AddrReplace(link, addr); err != nil {
				errs = append(errs, fmt.Errorf("vip %s: add to %s: %w", v.Prefix, v.Interface, err))
				continue
			}
			if !present {
				r.log.Info("vip added", "vip", v.Prefix.String(), "interface", v.Interface, "mode", string(v.Mode))
				if v.Mode == ModeL2 {
					r.startAnnounce(v, link)
				}
			}
		case present:
			if err := r.h.AddrDel(link, addr); err != nil {
				errs = append(errs, fmt.Errorf("vip %s: remove from %s: %w", v.Prefix, v.Interface, err))
				continue
			}
			r.log.Info("vip removed", "vip", v.Prefix.String(), "interface", v.Interface)
		}
	}
	return errors.Join(errs...)
}

func (r *Linux) present(link netlink.Link, p netip.Prefix) (bool, error) {
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := r.h.AddrList(link, fam)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == p.Addr() {
			return true, nil
		}
	}
	return false, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// startAnnounce sends the burst in the background: Set does not wait for
// it, the first frame leaves at once.
func (r *Linux) startAnnounce(v VIP, link netlink.Link) {
	attrs := link.Attrs()
	mac := attrs.HardwareAddr
	if len(mac) != 6 {
		r.log.Warn("vip: no Ethernet address to announce from", "vip", v.Prefix.String(), "interface", v.Interface)
		return
	}
	frame := announcement(mac, v.Prefix.Addr())
	proto := uint16(etherTypeARP)
	if v.Prefix.Addr().Is6() {
		proto = etherTypeIPv6
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: attrs.Index, Halen: 6}
	copy(sa.Addr[:], frame[0:6])
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(r.announce.Interval)
		defer t.Stop()
		for i := 0; i < r.announce.Count; i++ {
			if i > 0 {
				select {
				case <-r.stop:
					return
				case <-t.C:
				}
			}
			if err := unix.Sendto(r.fd, frame, 0, sa); err != nil {
				r.log.Warn("vip: announcement not sent", "vip", v.Prefix.String(), "err", err)
				continue
			}
			if r.onSent != nil {
				r.onSent(v)
			}
		}
	}()
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Close implements Router: announcements in progress stop.
func (r *Linux) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	r.wg.Wait()
	r.h.Close()
	return unix.Close(r.fd)
}

var _ Router = (*Linux)(nil)
