package vip

import (
	"fmt"
	"net/netip"
	"time"
)

// Mode is how a VIP reaches the network.
type Mode string

// Modes.
const (
	// ModeL2 puts the VIP on a LAN interface and announces it with
	// gratuitous ARP or unsolicited NA.
	ModeL2 Mode = "l2"
	// ModeL3 puts the VIP on the loopback; its owner announces it over
	// BGP.
	ModeL3 Mode = "l3"
)

// Config is one VIP. The daemon's YAML `vips:` section is a list of them.
type Config struct {
	// Tag is the sharing tag whose active owner holds the VIP. Required;
	// it must be one of cluster.tags.
	Tag string `yaml:"tag"`
	// Address is the VIP with its prefix length: /32 for IPv4 (for example
	// 203.0.113.21/32), /128 for IPv6. Required, unique.
	Address string `yaml:"address"`
	// Mode is l2 or l3. Default l2.
	Mode Mode `yaml:"mode"`
	// Interface carries the VIP: the LAN interface for l2 (required), the
	// loopback for l3 (default "lo").
	Interface string `yaml:"interface"`
}

// VIP is a validated Config.
type VIP struct {
	Tag       string
	Prefix    netip.Prefix
	Mode      Mode
	Interface string
}

func (v VIP) String() string {
	return fmt.Sprintf("%s (%s on %s, tag %s)", v.Prefix, v.Mode, v.Interface, v.Tag)
}

// FieldError names the bad key, relative to the vips section (for
// example "[1].address").
type FieldError struct {
	Key string
	Err string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// Parse validates the vips section, fills defaults and returns the VIPs.
// tags are the configured sharing tags (nil: not checked).
func Parse(list []Config, tags []string) ([]VIP, error) {
	var out []VIP
	seen := map[netip.Addr]bool{}
	for i := range list {
		c := &list[i]
		key := fmt.Sprintf("[%d]", i)
		if c.Tag == "" {
			return nil, bad(key+".tag", "required: the sharing tag whose owner holds the VIP")
		}
		if tags != nil && !contains(tags, c.Tag) {
			return nil, bad(key+".tag", "%q is not one of cluster.tags", c.Tag)
		}
		p, err := netip.ParsePrefix(c.Address)
		if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return nil, bad(key+".address", "want an address with its length, such as 203.0.113.21/32 or 2001:db8::21/128: %q", c.Address)
		}
		if p.Bits() != p.Addr().BitLen() {
			return nil, bad(key+".address", "%s: a VIP is one address: /%d", c.Address, p.Addr().BitLen())
		}
		if a := p.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			return nil, bad(key+".address", "%s cannot be a VIP", a)
		}
		if seen[p.Addr()] {
			return nil, bad(key+".address", "duplicate VIP %s", p.Addr())
		}
		seen[p.Addr()] = true
		switch c.Mode {
		case "":
			c.Mode = ModeL2
		case ModeL2, ModeL3:
		default:
			return nil, bad(key+".mode", "must be l2 or l3, not %q", c.Mode)
		}
		if c.Interface == "" {
			if c.Mode == ModeL2 {
				return nil, bad(key+".interface", "required in l2 mode: the LAN interface that carries the VIP")
			}
			c.Interface = "lo"
		}
		if len(c.Interface) > 15 {
			return nil, bad(key+".interface", "%q: interface names are at most 15 bytes", c.Interface)
		}
		out = append(out, VIP{Tag: c.Tag, Prefix: p, Mode: c.Mode, Interface: c.Interface})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Announce configures the gratuitous ARP / unsolicited NA burst of an l2
// VIP that arrives.
type Announce struct {
	// Count is how many are sent. Default 3: one lost frame does not leave
	// a stale cache.
	Count int
	// Interval is the gap between them. Default 100 ms.
	Interval time.Duration
}

func (a *Announce) defaults() {
	if a.Count <= 0 {
		a.Count = 3
	}
	if a.Interval <= 0 {
		a.Interval = 100 * time.Millisecond
	}
}
