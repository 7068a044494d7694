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
//
// The anycast prefixes themselves, and their policy, are the bgp
// section's prefixes; this section decides when they are announced and
// may change their policy per region.
type Config struct {
	// Regions change the prefixes' policy on the nodes of a region, for
	// example a higher MED or a prepend in a backup region.
	Regions []RegionPolicy `yaml:"regions"`
	// RequiredCaps are the cluster capabilities that must be synced before
	// the node announces. Default: every capability registered on the
	// node (those that need no sync count as synced at once).
	RequiredCaps []string `yaml:"required_caps"`
	// HoldDown is how long the node must stay healthy after a failure
	// before it announces again. Default 3 s: longer than a heartbeat
	// blip or a listener restart, short next to a real outage, so a
	// flapping node does not make routers recompute paths every second.
	HoldDown time.Duration `yaml:"hold_down"`
	// StartHoldDown is how long a freshly started node must have been
	// healthy, without a break, before its first announcement. Default
	// 1 s: the first healthy reading of a process can be a passing one
	// (a cluster view before every link is in, a listener that dies right
	// after binding), and a second is nothing next to the time a start
	// and a sync take.
	StartHoldDown time.Duration `yaml:"start_hold_down"`
	// RestartWindow is how long a start that did not end in a clean stop
	// (a crash, a kill, an OOM) counts against the next start: a node
	// that restarts n times within it (n >= 1) holds its first
	// announcement for hold_down x 2^(n-1), capped at max_hold_down, so
	// a crash-looping node does not make the routers add and drop its
	// paths at every restart. A clean stop (SIGTERM) clears the count.
	// Default 5 min. Needs the state directory (cluster.state_dir):
	// without one every start counts as the first.
	RestartWindow time.Duration `yaml:"restart_window"`
	// MaxHoldDown caps the restart hold-down. Default 60 s.
	MaxHoldDown time.Duration `yaml:"max_hold_down"`
	// PollInterval is how often the readiness inputs are read. Default
	// 100 ms: a failure withdraws the paths within that, far inside the
	// 1 s budget.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ShutdownTimeout bounds the wait for in-flight transactions after the
	// withdrawal on SIGTERM. Default 10 s: transactions answer in
	// milliseconds in practice; keep it below the service manager's stop
	// timeout.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Drain configures `edgectl drain`.
	Drain DrainConfig `yaml:"drain"`
}

// RegionPolicy is the policy of the anycast prefixes on the nodes of one
// region.
type RegionPolicy struct {
	// Region is the cluster region (cluster.region) it applies to.
	// Required, unique.
	Region string `yaml:"region"`
	// Prefixes limits the policy to these prefixes. Default: all.
	Prefixes []string `yaml:"prefixes"`
	// MED replaces the prefix's MED when not zero.
	MED uint32 `yaml:"med"`
	// Communities are added to the prefix's.
	Communities []bgp.Community `yaml:"communities"`
	// Prepend replaces the prefix's prepend when not zero, 1..8 (eBGP
	// only).
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
	DefaultStartHoldDown   = time.Second
	DefaultRestartWindow   = 5 * time.Minute
	DefaultMaxHoldDown     = 60 * time.Second
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
	regions := map[string]bool{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if r.Region == "" {
			return bad(key+".region", "required")
		}
		if regions[r.Region] {
			return bad(key+".region", "duplicate region %q", r.Region)
		}
		regions[r.Region] = true
		for j, p := range r.Prefixes {
			if pfx, err := netip.ParsePrefix(p); err != nil || pfx != pfx.Masked() {
				return bad(fmt.Sprintf("%s.prefixes[%d]", key, j), "not a prefix such as 203.0.113.10/32: %q", p)
			}
		}
		if r.Prepend < 0 || r.Prepend > bgp.MaxPrepend {
			return bad(key+".prepend", "must be 0..%d, got %d", bgp.MaxPrepend, r.Prepend)
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
	if c.StartHoldDown == 0 {
		c.StartHoldDown = DefaultStartHoldDown
	}
	if c.RestartWindow == 0 {
		c.RestartWindow = DefaultRestartWindow
	}
	if c.MaxHoldDown == 0 {
		c.MaxHoldDown = DefaultMaxHoldDown
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"hold_down", c.HoldDown}, {"start_hold_down", c.StartHoldDown}, {"restart_window", c.RestartWindow}, {"max_hold_down", c.MaxHoldDown}} {
		if d.v < 0 {
			return bad(d.key, "must not be negative, got %v", d.v)
		}
	}
	if c.MaxHoldDown < c.HoldDown {
		return bad("max_hold_down", "must be at least hold_down (%v), got %v", c.HoldDown, c.MaxHoldDown)
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

// FirstHoldDown is the hold-down of a start that follows the given number
// of unclean starts within the restart window: start_hold_down when there
// is none, else hold_down x 2^(restarts-1), capped at max_hold_down (and
// never below start_hold_down). Call it on a validated config.
func (c Config) FirstHoldDown(restarts int) time.Duration {
	if restarts <= 0 {
		return c.StartHoldDown
	}
	d := c.HoldDown
	for i := 1; i < restarts && d < c.MaxHoldDown; i++ {
		d *= 2
	}
	return max(min(d, c.MaxHoldDown), c.StartHoldDown)
}

// Apply returns base (the bgp section's prefixes) with the policy of
// region. Call it on a validated config.
func (c *Config) Apply(region string, base []bgp.Advertisement) []bgp.Advertisement {
	out := make([]bgp.Advertisement, len(base))
	for i, a := range base {
		a.Communities = slices.Clone(a.Communities)
		for _, r := range c.Regions {
			if r.Region != region || region == "" {
				continue
			}
			if len(r.Prefixes) > 0 && !slices.Contains(r.Prefixes, a.Prefix.String()) {
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
		out[i] = a
	}
	return out
}

// CheckPrefixes checks the region policies against the announced
// prefixes: each prefix a policy names must be one of them. Errors are
// *FieldError.
func (c *Config) CheckPrefixes(base []bgp.Advertisement) error {
	for i, r := range c.Regions {
		for j, p := range r.Prefixes {
			if !slices.ContainsFunc(base, func(a bgp.Advertisement) bool { return a.Prefix.String() == p }) {
				return bad(fmt.Sprintf("regions[%d].prefixes[%d]", i, j), "%s is not one of the bgp prefixes", p)
			}
		}
	}
	return nil
}

// HasPrepend reports whether a region policy, or the drain, prepends: not
// allowed with iBGP peers (the daemon checks it against the bgp section).
func (c Config) HasPrepend() bool {
	if c.Drain.Prepend > 0 {
		return true
	}
	for _, r := range c.Regions {
		if r.Prepend > 0 {
			return true
		}
	}
	return false
}
