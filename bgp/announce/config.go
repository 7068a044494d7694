package announce

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/anyedge/anyedge/bgp"
)

// Config configures announcements and drain. The daemon's YAML `announce:`
// section maps onto it field by field. Zero values take the defaults
// documented on each field; Validate fills them in.
type Config struct {
	// Prefixes are the anycast prefixes the node announces when healthy,
	// each with its policy and per-region overrides. Required (at least
	// one) for the node to announce anything but VIPs.
	Prefixes []PrefixConfig `yaml:"prefixes"`
	// RequiredCaps are the cluster capabilities that must be synced before
	// the node announces. Default: every capability registered on the
	// node (those that need no sync count as synced at once).
	RequiredCaps []string `yaml:"required_caps"`
	// HoldDown is how long the node must stay healthy after a failure
	// before it announces again. Default 3 s: longer than a heartbeat
	// blip or a listener restart, short next to a real outage, so a
	// flapping node does not make routers recompute paths every second.
	HoldDown time.Duration `yaml:"hold_down"`
	// PollInterval is how often the readiness inputs are read. Default
	// 100 ms: a failure withdraws the paths within that, far inside the
	// 1 s budget.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ShutdownTimeout bounds the wait for in-flight transactions after the
	// withdrawal on SIGTERM. Default 10 s: a non-INVITE transaction lasts
	// at most 32 s (Timer F) but answers in milliseconds in practice; keep
	// it below the service manager's stop timeout.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Drain configures `edgectl drain`.
	Drain DrainConfig `yaml:"drain"`
}

// PrefixConfig is one anycast prefix and its policy.
type PrefixConfig struct {
	// Prefix is the announced prefix, for example 203.0.113.10/32.
	// Required, unique, with no host bits set.
	Prefix string `yaml:"prefix"`
	// MED is the MULTI_EXIT_DISC. Default 0 (not sent).
	MED uint32 `yaml:"med"`
	// Communities are standard communities ("65000:100" or well-known
	// names) sent with the prefix.
	Communities []bgp.Community `yaml:"communities"`
	// Prepend adds the node's ASN this many more times (eBGP only), 0..8.
	Prepend int `yaml:"prepend"`
	// Regions override the policy on the nodes of one region: a region's
	// MED and prepend replace the prefix's when not zero, its communities
	// are added to the prefix's. A region that is not listed uses the
	// prefix's policy.
	Regions []RegionPolicy `yaml:"regions"`
}

// RegionPolicy is the policy of a prefix on the nodes of one region.
type RegionPolicy struct {
	// Region is the cluster region (cluster.region) it applies to.
	// Required, unique within the prefix.
	Region string `yaml:"region"`
	// MED replaces the prefix's MED when not zero.
	MED uint32 `yaml:"med"`
	// Communities are added to the prefix's.
	Communities []bgp.Community `yaml:"communities"`
	// Prepend replaces the prefix's prepend when not zero, 0..8.
	Prepend int `yaml:"prepend"`
}

// DrainConfig configures the drain sequence.
type DrainConfig struct {
	// Prepend is added to each prefix's AS-path prepend while the drain
	// shifts traffic away (with GRACEFUL_SHUTDOWN), capped at 8, for
	// routers that do not honour RFC 8326. eBGP only. Default 0: the
	// community alone moves traffic at routers that honour it.
	Prepend int `yaml:"prepend"`
	// Quiet is how long the node must start no new transaction before the
	// paths are withdrawn. Default 2 s: the routers have applied the
	// GRACEFUL_SHUTDOWN paths well within that, and a steady call rate of
	// one call every two seconds still counts as traffic.
	Quiet time.Duration `yaml:"quiet"`
	// ShiftTimeout bounds the wait for the traffic to leave; the paths are
	// withdrawn after it anyway. Default 30 s.
	ShiftTimeout time.Duration `yaml:"shift_timeout"`
	// FinishTimeout bounds the wait for in-flight transactions after the
	// withdrawal; the sharing tags are handed over after it anyway.
	// Default 35 s: longer than an INVITE transaction's Timer B (32 s).
	FinishTimeout time.Duration `yaml:"finish_timeout"`
}

// Defaults.
const (
	DefaultHoldDown        = 3 * time.Second
	DefaultPollInterval    = 100 * time.Millisecond
	DefaultShutdownTimeout = 10 * time.Second
	DefaultQuiet           = 2 * time.Second
	DefaultShiftTimeout    = 30 * time.Second
	DefaultFinishTimeout   = 35 * time.Second
)

// FieldError names the bad key of a config, relative to the section.
type FieldError struct {
	Key string
	Err string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// Validate checks the config and fills defaults. Errors are *FieldError.
func (c *Config) Validate() error {
	seen := map[netip.Prefix]bool{}
	for i := range c.Prefixes {
		p := &c.Prefixes[i]
		key := fmt.Sprintf("prefixes[%d]", i)
		a, err := p.advertisement("")
		if err != nil {
			fe := err.(*FieldError)
			return bad(key+"."+fe.Key, "%s", fe.Err)
		}
		if seen[a.Prefix] {
			return bad(key+".prefix", "duplicate prefix %s", a.Prefix)
		}
		seen[a.Prefix] = true
		regions := map[string]bool{}
		for j, r := range p.Regions {
			rk := fmt.Sprintf("%s.regions[%d]", key, j)
			if r.Region == "" {
				return bad(rk+".region", "required")
			}
			if regions[r.Region] {
				return bad(rk+".region", "duplicate region %q", r.Region)
			}
			regions[r.Region] = true
			if _, err := p.advertisement(r.Region); err != nil {
				fe := err.(*FieldError)
				return bad(rk+"."+fe.Key, "%s", fe.Err)
			}
		}
	}
	for i, name := range c.RequiredCaps {
		if name == "" {
			return bad(fmt.Sprintf("required_caps[%d]", i), "empty capability name")
		}
	}
	if c.HoldDown == 0 {
		c.HoldDown = DefaultHoldDown
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.PollInterval < 10*time.Millisecond || c.PollInterval > 500*time.Millisecond {
		return bad("poll_interval", "must be 10ms..500ms (withdrawals must stay well under 1 s), got %v", c.PollInterval)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	d := &c.Drain
	if d.Prepend < 0 || d.Prepend > bgp.MaxPrepend {
		return bad("drain.prepend", "must be 0..%d, got %d", bgp.MaxPrepend, d.Prepend)
	}
	if d.Quiet == 0 {
		d.Quiet = DefaultQuiet
	}
	if d.ShiftTimeout == 0 {
		d.ShiftTimeout = DefaultShiftTimeout
	}
	if d.FinishTimeout == 0 {
		d.FinishTimeout = DefaultFinishTimeout
	}
	if d.Quiet > d.ShiftTimeout {
		return bad("drain.quiet", "must not exceed drain.shift_timeout (%v), got %v", d.ShiftTimeout, d.Quiet)
	}
	return nil
}

// Advertisements returns the anycast prefixes with the policy of region,
// in config order. Call it on a validated config.
func (c *Config) Advertisements(region string) []bgp.Advertisement {
	out := make([]bgp.Advertisement, 0, len(c.Prefixes))
	for _, p := range c.Prefixes {
		if a, err := p.advertisement(region); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// HasPrepend reports whether any policy, or the drain, prepends: not
// allowed with iBGP peers (the daemon checks it against the bgp section).
func (c Config) HasPrepend() bool {
	if c.Drain.Prepend > 0 {
		return true
	}
	for _, p := range c.Prefixes {
		if p.Prepend > 0 {
			return true
		}
		for _, r := range p.Regions {
			if r.Prepend > 0 {
				return true
			}
		}
	}
	return false
}

// advertisement is p with the policy of region. Errors are *FieldError
// relative to p (or to the region entry).
func (p PrefixConfig) advertisement(region string) (bgp.Advertisement, error) {
	var a bgp.Advertisement
	pfx, err := netip.ParsePrefix(p.Prefix)
	if err != nil {
		return a, bad("prefix", "required, a prefix such as 203.0.113.10/32: %q", p.Prefix)
	}
	a.Prefix = pfx
	a.MED, a.Prepend = p.MED, p.Prepend
	a.Communities = slices.Clone(p.Communities)
	for _, r := range p.Regions {
		if r.Region != region || region == "" {
			continue
		}
		if r.MED != 0 {
			a.MED = r.MED
		}
		if r.Prepend != 0 {
			a.Prepend = r.Prepend
		}
		a.Communities = append(a.Communities, r.Communities...)
	}
	if err := a.Validate(); err != nil {
		if fe, ok := err.(*bgp.FieldError); ok {
			return a, bad(fe.Key, "%s", fe.Err)
		}
		return a, bad("prefix", "%v", err)
	}
	return a, nil
}
