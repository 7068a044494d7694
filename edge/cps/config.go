package cps

import (
	"fmt"
	"time"
)

// Algorithm is how a limit turns its window count into a verdict.
type Algorithm string

// Algorithms.
const (
	// Sliding (default) counts the last `window` of aligned slots, the
	// current one included: the limit holds over any window of slots.
	Sliding Algorithm = "sliding"
	// Taildrop counts a fixed window aligned to the wall clock (the count
	// restarts at every window boundary), like OpenSIPS TAILDROP. Cheaper
	// to reason about, but two windows' worth can pass around a boundary.
	Taildrop Algorithm = "taildrop"
	// RED (random early detection) is the sliding window with early drops:
	// the drop probability rises linearly from 0 at 80% of the limit to 1
	// at 100%, which spreads the rejections instead of a hard wall.
	RED Algorithm = "red"
)

// Selector picks what a limit counts per key.
type Selector string

// Selectors.
const (
	// Global (default) is one counter for every new call.
	Global Selector = "global"
	// SourceIP keys the limit by Request.SourceIP.
	SourceIP Selector = "source_ip"
	// FromDomain keys the limit by Request.FromDomain.
	FromDomain Selector = "from_domain"
	// AuthUser keys the limit by Request.AuthUser (authenticated user).
	AuthUser Selector = "auth_user"
)

// PartitionPolicy is what a node does with a limit when part of the
// platform is out of sight (dead, or cut off by a partition). See the
// package doc for the trade-off.
type PartitionPolicy string

// Partition policies.
const (
	// Split (default) scales the limit by the visible share of the nodes
	// in the limit's scope: the platform never exceeds the limit, even
	// when cut in two, but a dead node's share is lost until it comes
	// back or is removed from the cluster (Limiter.Forget).
	Split PartitionPolicy = "split"
	// Full keeps the whole limit on every side: a dead node costs nothing,
	// but k sides of a partition admit up to k times the limit.
	Full PartitionPolicy = "full"
)

// Defaults. Each is explained on the Config field it fills.
const (
	DefaultSlot       = 100 * time.Millisecond
	DefaultInterval   = 50 * time.Millisecond
	DefaultMaxKeys    = 100000
	DefaultKeyIdle    = 60 * time.Second
	DefaultWindow     = time.Second
	DefaultRetryAfter = time.Second
	// MaxLimits bounds the number of limits (Check keeps its scratch
	// space on the stack).
	MaxLimits = 32
	// MaxSlotsPerWindow bounds window/slot (memory per counter).
	MaxSlotsPerWindow = 600
	// MaxNameLen bounds a limit name (it travels in every frame).
	MaxNameLen = 64
)

// Config configures the CPS limiter. The daemon's YAML `cps:` section maps
// onto it (yaml tags). Zero values take the defaults documented on each
// field; Validate fills them in. Every node must use the same slot and the
// same limit definitions (rates may differ only through SetRate, which
// converges cluster-wide).
type Config struct {
	// Slot is the counting granularity. Nodes count calls in slots aligned
	// to the wall clock (slot number = unix time / Slot), so every node's
	// "slot 17412345" is the same 100 ms and counts from different nodes
	// add up over the same window. Default 100 ms: ten slots per second
	// make a sliding 1 s window accurate to a tenth, while the per-counter
	// state stays small. 10 ms..1 s, and it must divide every window.
	Slot time.Duration `yaml:"slot"`
	// Interval is the broadcast period: every Interval a node sends one
	// frame carrying every counter that changed. Default 50 ms, half a
	// slot: a slot's running count reaches the peers at least once while
	// the slot is open and its final count within ~Interval after it
	// closes, so a peer never predicts more than ~2 intervals ahead; that
	// bounds the error a burst can cause to one interval's worth of
	// calls. Shorter costs bandwidth (one frame per node and interval);
	// longer lets bursts overshoot more. 1 ms..Slot.
	Interval time.Duration `yaml:"interval"`
	// PartitionPolicy is "split" (default) or "full"; see PartitionPolicy.
	PartitionPolicy PartitionPolicy `yaml:"partition_policy"`
	// MaxKeys bounds the keys kept per keyed limit (source_ip,
	// from_domain, auth_user). Past it the least recently used key is
	// dropped, so a flood of distinct keys costs bounded memory (about
	// 100 bytes per key plus 4 bytes per slot per node that reported it).
	// Default 100000.
	MaxKeys int `yaml:"max_keys"`
	// KeyIdle drops a key that has seen no call, here or on any peer, for
	// this long. Default 60 s; at least the longest keyed window, so a key
	// never expires while its window still holds calls.
	KeyIdle time.Duration `yaml:"key_idle"`
	// Limits are the named limits ("pipes"). A new call must pass all of
	// the limits that apply to it.
	Limits []LimitConfig `yaml:"limits"`
}

// LimitConfig is one named limit.
type LimitConfig struct {
	// Name identifies the limit in metrics, status and SetRate. Required,
	// unique, 1..64 bytes.
	Name string `yaml:"name"`
	// Rate is the limit in new calls per second, platform-wide (or
	// region-wide, or per key). Required, > 0; fractions are allowed
	// (0.5 with a 10 s window is 5 calls per 10 s).
	Rate float64 `yaml:"rate"`
	// Window is the counting window. The limit admits Rate×Window calls
	// per window. Default 1 s; a multiple of Slot.
	Window time.Duration `yaml:"window"`
	// Algorithm is sliding (default), taildrop or red.
	Algorithm Algorithm `yaml:"algorithm"`
	// Selector is global (default), source_ip, from_domain or auth_user.
	// Keyed limits hold Rate per key; a request with an empty key is not
	// limited by them.
	Selector Selector `yaml:"selector"`
	// Region, when set, makes this a per-region limit: only the nodes of
	// that region count it and are limited by it. Default: every node.
	Region string `yaml:"region"`
	// Response is the SIP answer to a rejected call.
	Response ResponseConfig `yaml:"response"`
}

// ResponseConfig is the SIP answer to a call over a limit.
type ResponseConfig struct {
	// Code is 503 (default, Service Unavailable), 486 (Busy Here) or 480
	// (Temporarily Unavailable).
	Code int `yaml:"code"`
	// RetryAfter is sent as a Retry-After header (whole seconds). Default
	// 1 s for 503 and none for 486 and 480; a negative value sends none.
	RetryAfter time.Duration `yaml:"retry_after"`
}

// FieldError names the bad key of a config, relative to the cps section
// (for example "limits[2].rate").
type FieldError struct {
	Key string
	Err string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// DefaultConfig returns the defaults with no limits.
func DefaultConfig() Config {
	c := Config{}
	_ = c.Validate()
	return c
}

// Validate checks the config and fills defaults. Errors are *FieldError.
func (c *Config) Validate() error {
	if c.Slot == 0 {
		c.Slot = DefaultSlot
	}
	if c.Slot < 10*time.Millisecond || c.Slot > time.Second {
		return bad("slot", "must be 10ms..1s, not %s", c.Slot)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Interval < time.Millisecond || c.Interval > c.Slot {
		return bad("interval", "must be 1ms..slot (%s), not %s", c.Slot, c.Interval)
	}
	switch c.PartitionPolicy {
	case "":
		c.PartitionPolicy = Split
	case Split, Full:
	default:
		return bad("partition_policy", "must be split or full, not %q", c.PartitionPolicy)
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.MaxKeys < 0 {
		return bad("max_keys", "must be positive, not %d", c.MaxKeys)
	}
	if c.KeyIdle == 0 {
		c.KeyIdle = DefaultKeyIdle
	}
	if c.KeyIdle < 0 {
		return bad("key_idle", "must be positive, not %s", c.KeyIdle)
	}
	if len(c.Limits) > MaxLimits {
		return bad("limits", "at most %d limits, not %d", MaxLimits, len(c.Limits))
	}
	seen := map[string]int{}
	for i := range c.Limits {
		if err := c.Limits[i].validate(c, i, seen); err != nil {
			return err
		}
	}
	return nil
}

func (l *LimitConfig) validate(c *Config, i int, seen map[string]int) error {
	key := func(f string) string { return fmt.Sprintf("limits[%d].%s", i, f) }
	if l.Name == "" {
		return bad(key("name"), "required")
	}
	if len(l.Name) > MaxNameLen {
		return bad(key("name"), "at most %d bytes", MaxNameLen)
	}
	if j, dup := seen[l.Name]; dup {
		return bad(key("name"), "%q already used by limits[%d]", l.Name, j)
	}
	seen[l.Name] = i
	if !(l.Rate > 0) || l.Rate > 1e9 {
		return bad(key("rate"), "required, calls per second in (0, 1e9], not %v", l.Rate)
	}
	if l.Window == 0 {
		l.Window = DefaultWindow
	}
	if l.Window < c.Slot || l.Window%c.Slot != 0 {
		return bad(key("window"), "must be a positive multiple of slot (%s), not %s", c.Slot, l.Window)
	}
	if l.Rate*l.Window.Seconds() < 1 {
		return bad(key("rate"), "%v/s over a %s window admits less than one call", l.Rate, l.Window)
	}
	if n := l.Window / c.Slot; n > MaxSlotsPerWindow {
		return bad(key("window"), "at most %d slots per window, not %d", MaxSlotsPerWindow, n)
	}
	switch l.Algorithm {
	case "":
		l.Algorithm = Sliding
	case Sliding, Taildrop, RED:
	default:
		return bad(key("algorithm"), "must be sliding, taildrop or red, not %q", l.Algorithm)
	}
	switch l.Selector {
	case "":
		l.Selector = Global
	case Global:
	case SourceIP, FromDomain, AuthUser:
		if l.Window > c.KeyIdle {
			return bad(key("window"), "longer than key_idle (%s): keys would expire with calls in their window", c.KeyIdle)
		}
	default:
		return bad(key("selector"), "must be global, source_ip, from_domain or auth_user, not %q", l.Selector)
	}
	r := &l.Response
	switch r.Code {
	case 0:
		r.Code = 503
	case 503, 486, 480:
	default:
		return bad(key("response.code"), "must be 503, 486 or 480, not %d", r.Code)
	}
	if r.RetryAfter == 0 && r.Code == 503 {
		r.RetryAfter = DefaultRetryAfter
	}
	if r.RetryAfter > 0 && r.RetryAfter%time.Second != 0 {
		return bad(key("response.retry_after"), "must be whole seconds (Retry-After is delta-seconds), not %s", r.RetryAfter)
	}
	return nil
}
