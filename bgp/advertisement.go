package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Advertisement is one announced prefix and its path attributes.
type Advertisement struct {
	// Prefix is the announced prefix, with no host bits set.
	Prefix netip.Prefix
	// NextHop is the next hop; the zero Addr means the session's own
	// address (next-hop-self), which is what an anycast node wants.
	NextHop netip.Addr
	// MED is the MULTI_EXIT_DISC; 0 is not sent.
	MED uint32
	// LocalPref is the LOCAL_PREF for iBGP routers; 0 is not sent.
	LocalPref uint32
	// Communities are standard communities. Order and duplicates do not
	// matter: Set normalises them.
	Communities []Community
	// Prepend adds the local ASN this many extra times to the AS path
	// (eBGP only), 0..MaxPrepend.
	Prepend int
}

// Validate checks a. Errors are *FieldError whose keys match PrefixConfig.
func (a Advertisement) Validate() error {
	if !a.Prefix.IsValid() {
		return bad("prefix", "required")
	}
	if a.Prefix.Addr().Zone() != "" || a.Prefix.Addr().Is4In6() {
		return bad("prefix", "%s: use a plain IPv4 or IPv6 prefix", a.Prefix)
	}
	if a.Prefix != a.Prefix.Masked() {
		return bad("prefix", "%s has host bits set (did you mean %s?)", a.Prefix, a.Prefix.Masked())
	}
	if a.NextHop.IsValid() && (a.NextHop.Is4() != a.Prefix.Addr().Is4() || a.NextHop.IsUnspecified() || a.NextHop.Zone() != "") {
		return bad("next_hop", "%s: must be an address of the prefix's family", a.NextHop)
	}
	if a.Prepend < 0 || a.Prepend > MaxPrepend {
		return bad("prepend", "must be 0..%d, got %d", MaxPrepend, a.Prepend)
	}
	return nil
}

// normalize returns a copy of a with sorted, de-duplicated communities.
func (a Advertisement) normalize() Advertisement {
	if len(a.Communities) == 0 {
		a.Communities = nil
		return a
	}
	c := slices.Clone(a.Communities)
	slices.Sort(c)
	a.Communities = slices.Compact(c)
	return a
}

// Equal reports whether a and b announce the same path. Community order
// does not matter.
func (a Advertisement) Equal(b Advertisement) bool {
	a, b = a.normalize(), b.normalize()
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.MED == b.MED &&
		a.LocalPref == b.LocalPref && a.Prepend == b.Prepend && slices.Equal(a.Communities, b.Communities)
}

func (a Advertisement) String() string {
	var b strings.Builder
	b.WriteString(a.Prefix.String())
	if a.NextHop.IsValid() {
		fmt.Fprintf(&b, " next-hop %s", a.NextHop)
	}
	if a.MED != 0 {
		fmt.Fprintf(&b, " med %d", a.MED)
	}
	if a.LocalPref != 0 {
		fmt.Fprintf(&b, " local-pref %d", a.LocalPref)
	}
	if len(a.Communities) > 0 {
		fmt.Fprintf(&b, " communities %s", communitiesString(a.Communities))
	}
	if a.Prepend != 0 {
		fmt.Fprintf(&b, " prepend %d", a.Prepend)
	}
	return b.String()
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// WithGracefulShutdown returns advs with the GRACEFUL_SHUTDOWN community
// added (RFC 8326): routers that honour it lower the paths' preference to
// 0, so that traffic moves to other nodes before the paths are withdrawn.
// This is the first step of a drain.
func WithGracefulShutdown(advs ...Advertisement) []Advertisement {
	out := make([]Advertisement, len(advs))
	for i, a := range advs {
		a.Communities = append(slices.Clone(a.Communities), GracefulShutdown)
		out[i] = a.normalize()
	}
	return out
}

// Community is a standard BGP community (RFC 1997): the high 16 bits are
// an AS, the low 16 a value. In YAML and text it is written "65535:0", as
// a plain integer, or as a well-known name.
type Community uint32

// Well-known communities.
const (
	// GracefulShutdown asks routers to lower the path's preference before
	// it is withdrawn (RFC 8326).
	GracefulShutdown Community = 0xFFFF0000
	// Blackhole asks for traffic to the prefix to be dropped (RFC 7999).
	Blackhole   Community = 0xFFFF029A
	NoExport    Community = 0xFFFFFF01
	NoAdvertise Community = 0xFFFFFF02
)

var wellKnown = map[string]Community{
	"graceful_shutdown": GracefulShutdown,
	"blackhole":         Blackhole,
	"no_export":         NoExport,
	"no_advertise":      NoAdvertise,
}

// ParseCommunity parses "AS:value" (each 0..65535), a 32-bit integer, or a
// well-known name (graceful_shutdown, blackhole, no_export,
// no_advertise).
func ParseCommunity(s string) (Community, error) {
	s = strings.TrimSpace(s)
	if c, ok := wellKnown[strings.ToLower(s)]; ok {
		return c, nil
	}
	if hi, lo, ok := strings.Cut(s, ":"); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("community %q: want AS:value, each 0..65535", s)
		}
		return Community(h<<16 | l), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("community %q: want AS:value, a 32-bit integer or a well-known name", s)
	}
	return Community(v), nil
}

// MustParseCommunity is ParseCommunity for constants; it panics on error.
func MustParseCommunity(s string) Community {
	c, err := ParseCommunity(s)
	if err != nil {
		panic(err)
	}
	return c
}

func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// MarshalText writes "AS:value".
func (c Community) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText accepts what ParseCommunity does.
func (c *Community) UnmarshalText(b []byte) error {
	v, err := ParseCommunity(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// UnmarshalYAML accepts a scalar in any form ParseCommunity does.
func (c *Community) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("community: want a scalar such as \"65535:0\"")
	}
	return c.UnmarshalText([]byte(n.Value))
}

func communitiesString(cs []Community) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, " ")
}
