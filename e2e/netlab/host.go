//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"sync"
	"time"
)

// Host is a network namespace with one interface per bridge it is attached
// to.
type Host struct {
	Name string // the lab's name for it
	NS   string // the namespace name

	lab *Lab

	mu     sync.Mutex // guards ifaces only; taken inside lab.mu, never around it
	ifaces []*Iface

	httpMu sync.Mutex
	httpc  *http.Client
}

// Iface is one interface of a host: a veth whose peer is a port of a
// bridge.
type Iface struct {
	Name   string // inside the host namespace
	Peer   string // the bridge port, inside the switch namespace
	Bridge *Bridge
	Prefix netip.Prefix // address and mask, for example 198.18.0.11/24

	host *Host
}

// Addr is the address of the host's first interface.
func (h *Host) Addr() netip.Addr {
	ifs := h.Ifaces()
	if len(ifs) == 0 {
		return netip.Addr{}
	}
	return ifs[0].Prefix.Addr()
}

// Addrs lists the addresses of all the host's interfaces.
func (h *Host) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, i := range h.Ifaces() {
		out = append(out, i.Prefix.Addr())
	}
	return out
}

// Ifaces lists the host's interfaces.
func (h *Host) Ifaces() []*Iface {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Iface(nil), h.ifaces...)
}

// Exec returns a command that runs name inside the host's namespace.
func (h *Host) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Run runs a short command inside the host's namespace and returns its
// combined output.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := h.Exec(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", name, h.Name, err, out)
	}
	return out, nil
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the host (for
// routers between bridges).
func (h *Host) EnableForwarding() error {
	return run("ip", "netns", "exec", h.NS, "sysctl", "-q", "-w",
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
}

// AddRoute adds a static route to dst (CIDR, or "default") via gateway.
func (h *Host) AddRoute(dst, via string) error {
	return run("ip", "-n", h.NS, "route", "add", dst, "via", via)
}

// LinkDown sets every interface of the host down.
func (h *Host) LinkDown() error {
	var errs []error
	for _, i := range h.Ifaces() {
		errs = append(errs, i.Down())
	}
	return errors.Join(errs...)
}

// LinkUp sets every interface of the host up.
func (h *Host) LinkUp() error {
	var errs []error
	for _, i := range h.Ifaces() {
		errs = append(errs, i.Up())
	}
	return errors.Join(errs...)
}

// Down sets the interface down (the bridge sees carrier loss).
func (i *Iface) Down() error {
	return run("ip", "-n", i.host.NS, "link", "set", i.Name, "down")
}

// Up sets the interface up again.
func (i *Iface) Up() error {
	return run("ip", "-n", i.host.NS, "link", "set", i.Name, "up")
}

// HTTPClient returns a client whose connections are made from inside the
// host's namespace (see DialContext). Requests time out after 2 s.
func (h *Host) HTTPClient() *http.Client {
	h.httpMu.Lock()
	defer h.httpMu.Unlock()
	if h.httpc == nil {
		h.httpc = &http.Client{
			Timeout: 2 * time.Second,
			Transport: &http.Transport{
				DialContext:         h.DialContext,
				MaxIdleConnsPerHost: 4,
				IdleConnTimeout:     30 * time.Second,
				DisableCompression:  true,
			},
		}
	}
	return h.httpc
}

func (h *Host) closeIdle() {
	h.httpMu.Lock()
	defer h.httpMu.Unlock()
	if h.httpc != nil {
		h.httpc.CloseIdleConnections()
	}
}
