package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/anyedge/anyedge/bfd"
)

// Config configures the node's BGP speaker. The daemon's YAML `bgp:`
// section maps onto it field by field (yaml tags). Zero values take the
// defaults documented on each field; Validate fills them in.
//
// The speaker only dials out: it never listens on port 179, so a node
// cannot be made to peer with anything but its configured routers.
type Config struct {
	// ASN is the node's autonomous system number. Required; 23456
	// (AS_TRANS) is refused.
	ASN uint32 `yaml:"asn"`
	// RouterID is the BGP identifier, an IPv4 address. Required: it must
	// be unique among the routers' peers, so it is not guessed.
	RouterID string `yaml:"router_id"`
	// Peers are the routers to announce to.
	Peers []PeerConfig `yaml:"peers"`
	// Prefixes are the prefixes the node announces when healthy, with
	// their per-prefix policy. Advertisements turns them into the argument
	// of Speaker.Set.
	Prefixes []PrefixConfig `yaml:"prefixes"`
}

// PeerConfig is one router.
type PeerConfig struct {
	// Address is the router's address. Required, unique.
	Address string `yaml:"address"`
	// ASN is the router's AS. Required. Equal to the node's ASN makes an
	// iBGP session.
	ASN uint32 `yaml:"asn"`
	// Port is the router's BGP port. Default 179.
	Port uint16 `yaml:"port"`
	// LocalAddress is the source address of the session (and of BFD).
	// Default: chosen by the kernel's routing table.
	LocalAddress string `yaml:"local_address"`
	// Password turns on TCP-MD5 (RFC 2385) with this key, at most 80
	// bytes. Default: none.
	Password string `yaml:"password"`
	// Multihop is the TTL of eBGP packets when the router is more than one
	// hop away; 0 (default) keeps the single-hop TTL of 1.
	Multihop uint8 `yaml:"multihop"`
	// HoldTime is the proposed hold time; the session uses the smaller of
	// both ends' proposals. Default 9 s: a dead router (or node, seen from
	// the router) that BFD does not catch is dropped within 9 s rather
	// than the customary 90. Whole seconds, 3 s to 65535 s.
	HoldTime time.Duration `yaml:"hold_time"`
	// Keepalive is the keepalive interval. Default hold_time/3 (3 s).
	// Whole seconds, at least 1 s, below hold_time.
	Keepalive time.Duration `yaml:"keepalive"`
	// ConnectRetry is the wait between connection attempts. Default 1 s
	// (GoBGP's default is 120 s): a router that restarts is peered with
	// again at once. Whole seconds, at least 1 s.
	ConnectRetry time.Duration `yaml:"connect_retry"`
	// IdleHold is how long the session stays idle after an administrative
	// reset (for example on BFD down) before reconnecting. Default 1 s
	// (GoBGP's default is 30 s). Whole seconds, at least 1 s. GoBGP v3
	// waits a fixed 5 s after other session failures.
	IdleHold time.Duration `yaml:"idle_hold"`
	// Families are the address families of the session: ipv4-unicast,
	// ipv6-unicast. Default: the family of Address.
	Families []string `yaml:"families"`
	// BFD runs a BFD session with the router (single hop only).
	BFD BFDConfig `yaml:"bfd"`
}

// BFDConfig configures BFD with one router. See bfd.Config for the timers.
type BFDConfig struct {
	// Enabled turns BFD on. Default off. The router must run BFD too.
	Enabled bool `yaml:"enabled"`
	// MinTx is the desired transmit interval. Default 300 ms.
	MinTx time.Duration `yaml:"min_tx"`
	// MinRx is the required receive interval. Default 300 ms.
	MinRx time.Duration `yaml:"min_rx"`
	// Multiplier is the detect multiplier. Default 3: a dead peer is
	// detected within 900 ms.
	Multiplier uint8 `yaml:"multiplier"`
}

// Config returns the timers as a bfd.Config.
func (c BFDConfig) Config() bfd.Config {
	return bfd.Config{MinTx: c.MinTx, MinRx: c.MinRx, Multiplier: c.Multiplier}
}

// PrefixConfig is one announced prefix and its policy.
type PrefixConfig struct {
	// Prefix is the announced prefix, for example 203.0.113.10/32.
	// Required, unique, with no host bits set.
	Prefix string `yaml:"prefix"`
	// NextHop overrides the next hop. Default: the session's own address.
	NextHop string `yaml:"next_hop"`
	// MED is the MULTI_EXIT_DISC. Default 0, which is not sent (routers
	// treat a missing MED as 0).
	MED uint32 `yaml:"med"`
	// LocalPref is the LOCAL_PREF for iBGP routers. Default 0: not sent
	// (GoBGP sends 100 on iBGP); eBGP routers ignore it.
	LocalPref uint32 `yaml:"local_pref"`
	// Communities are standard communities, "65535:0" or well-known names
	// (graceful_shutdown, no_export, no_advertise, blackhole).
	Communities []Community `yaml:"communities"`
	// Prepend adds the node's ASN this many more times to the AS path, to
	// make this node a backup for the prefix. 0..8; eBGP only.
	Prepend int `yaml:"prepend"`
}

// Families.
const (
	IPv4Unicast = "ipv4-unicast"
	IPv6Unicast = "ipv6-unicast"
)

// Defaults.
const (
	DefaultPort         = 179
	DefaultHoldTime     = 9 * time.Second
	DefaultConnectRetry = time.Second
	DefaultIdleHold     = time.Second
	// MaxPrepend bounds Prepend: more only makes AS paths long.
	MaxPrepend = 8
)

// asTrans is AS_TRANS (RFC 6793), never a real AS.
const asTrans = 23456

// FieldError names the bad key of a config.
type FieldError struct {
	Key string
	Err string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// Validate checks the config and fills defaults. Errors are *FieldError
// with the key relative to the bgp section (for example
// "peers[1].hold_time").
func (c *Config) Validate() error {
	if c.ASN == 0 || c.ASN == asTrans {
		return bad("asn", "required, 1..4294967295 and not 23456 (AS_TRANS)")
	}
	if c.RouterID == "" {
		return bad("router_id", "required, an IPv4 address unique among the routers' peers")
	}
	if id, err := netip.ParseAddr(c.RouterID); err != nil || !id.Is4() || id.IsUnspecified() {
		return bad("router_id", "not an IPv4 address: %q", c.RouterID)
	}
	seen := map[netip.Addr]bool{}
	ibgp := false
	for i := range c.Peers {
		p := &c.Peers[i]
		if err := p.validate(fmt.Sprintf("peers[%d]", i)); err != nil {
			return err
		}
		a := netip.MustParseAddr(p.Address)
		if seen[a] {
			return bad(fmt.Sprintf("peers[%d].address", i), "duplicate peer %s", a)
		}
		seen[a] = true
		ibgp = ibgp || p.ASN == c.ASN
	}
	prefixes := map[netip.Prefix]bool{}
	for i := range c.Prefixes {
		key := fmt.Sprintf("prefixes[%d]", i)
		a, err := c.Prefixes[i].advertisement()
		if err != nil {
			return &FieldError{Key: key + "." + err.(*FieldError).Key, Err: err.(*FieldError).Err}
		}
		if prefixes[a.Prefix] {
			return bad(key+".prefix", "duplicate prefix %s", a.Prefix)
		}
		prefixes[a.Prefix] = true
		if a.Prepend > 0 && ibgp {
			return bad(key+".prepend", "not with iBGP peers: the router would see its own AS and drop the path")
		}
	}
	return nil
}

func (p *PeerConfig) validate(key string) error {
	a, err := netip.ParseAddr(p.Address)
	if err != nil || a.IsUnspecified() || a.Zone() != "" {
		return bad(key+".address", "required, an IP address: %q", p.Address)
	}
	if a.Is4In6() {
		a = a.Unmap()
		p.Address = a.String()
	}
	if p.ASN == 0 || p.ASN == asTrans {
		return bad(key+".asn", "required, 1..4294967295 and not 23456 (AS_TRANS)")
	}
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if p.LocalAddress != "" {
		l, err := netip.ParseAddr(p.LocalAddress)
		if err != nil || l.Unmap().Is4() != a.Is4() || l.IsUnspecified() {
			return bad(key+".local_address", "not an address of the family of %s: %q", a, p.LocalAddress)
		}
	}
	if len(p.Password) > 80 {
		return bad(key+".password", "at most 80 bytes (TCP-MD5 key length)")
	}
	if p.HoldTime == 0 {
		p.HoldTime = DefaultHoldTime
	}
	if err := wholeSeconds(key+".hold_time", p.HoldTime, 3*time.Second, 65535*time.Second); err != nil {
		return err
	}
	if p.Keepalive == 0 {
		p.Keepalive = (p.HoldTime / 3).Truncate(time.Second)
	}
	if err := wholeSeconds(key+".keepalive", p.Keepalive, time.Second, p.HoldTime-time.Second); err != nil {
		return err
	}
	if p.ConnectRetry == 0 {
		p.ConnectRetry = DefaultConnectRetry
	}
	if err := wholeSeconds(key+".connect_retry", p.ConnectRetry, time.Second, time.Hour); err != nil {
		return err
	}
	if p.IdleHold == 0 {
		p.IdleHold = DefaultIdleHold
	}
	if err := wholeSeconds(key+".idle_hold", p.IdleHold, time.Second, time.Hour); err != nil {
		return err
	}
	if len(p.Families) == 0 {
		if a.Is4() {
			p.Families = []string{IPv4Unicast}
		} else {
			p.Families = []string{IPv6Unicast}
		}
	}
	for i, f := range p.Families {
		if f != IPv4Unicast && f != IPv6Unicast {
			return bad(fmt.Sprintf("%s.families[%d]", key, i), "must be %s or %s, not %q", IPv4Unicast, IPv6Unicast, f)
		}
		if slices.Index(p.Families, f) != i {
			return bad(fmt.Sprintf("%s.families[%d]", key, i), "duplicate family %s", f)
		}
	}
	if p.BFD.Enabled {
		if p.Multihop > 0 {
			return bad(key+".bfd.enabled", "BFD is single-hop only (RFC 5881): not with multihop")
		}
		bc := p.BFD.Config()
		if err := bc.Validate(); err != nil {
			fe := err.(*bfd.FieldError)
			return bad(key+".bfd."+fe.Key, "%s", fe.Err)
		}
		p.BFD.MinTx, p.BFD.MinRx, p.BFD.Multiplier = bc.MinTx, bc.MinRx, bc.Multiplier
	}
	return nil
}

func wholeSeconds(key string, d, lo, hi time.Duration) error {
	if d%time.Second != 0 || d < lo || d > hi {
		return bad(key, "must be whole seconds, %v..%v, got %v", lo, hi, d)
	}
	return nil
}

// Advertisements returns the configured prefixes as advertisements, in
// config order. Call it on a validated config.
func (c *Config) Advertisements() []Advertisement {
	out := make([]Advertisement, 0, len(c.Prefixes))
	for _, p := range c.Prefixes {
		if a, err := p.advertisement(); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// advertisement parses p. Errors are *FieldError relative to p.
func (p PrefixConfig) advertisement() (Advertisement, error) {
	var a Advertisement
	pfx, err := netip.ParsePrefix(p.Prefix)
	if err != nil {
		return a, bad("prefix", "required, a prefix such as 203.0.113.10/32: %q", p.Prefix)
	}
	a.Prefix = pfx
	if p.NextHop != "" {
		if a.NextHop, err = netip.ParseAddr(p.NextHop); err != nil {
			return a, bad("next_hop", "not an address: %q", p.NextHop)
		}
	}
	a.MED, a.LocalPref, a.Prepend = p.MED, p.LocalPref, p.Prepend
	a.Communities = slices.Clone(p.Communities)
	if err := a.Validate(); err != nil {
		return a, err
	}
	return a, nil
}
