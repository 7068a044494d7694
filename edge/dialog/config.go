package dialog

import (
	"fmt"
	"strings"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

// Defaults. Each is explained on the Config field it fills.
const (
	DefaultEarlyTimeout   = 180 * time.Second
	DefaultTimeout        = 12 * time.Hour
	DefaultLinger         = 32 * time.Second
	DefaultMaxDialogs     = 200_000
	DefaultMaxForks       = 16
	DefaultBuckets        = 64
	DefaultMaxFrameBytes  = 256 << 10
	DefaultFlushInterval  = time.Millisecond
	DefaultMaxPendingRecs = 65536
)

// Config configures call (dialog) state. The daemon's YAML `dialog:`
// section maps onto it. Zero values take the defaults documented on each
// field; Validate fills them in. The nodes of a region must agree on the
// timeouts (replicas expire on their own, at the same absolute time) and on
// Buckets.
type Config struct {
	// EarlyTimeout ends a call that got no final answer this long after
	// its INVITE or its last provisional response (RFC 3261 Timer C is
	// "more than 3 minutes"). Default 180 s. 1 s..1 h.
	EarlyTimeout time.Duration `yaml:"early_timeout"`
	// Timeout ends a confirmed dialog with no in-dialog request for this
	// long: a call whose BYE was lost must not hold a slot forever.
	// Default 12 h (Kamailio's dialog default_timeout, 43200 s). A call
	// that sends re-INVITEs or UPDATEs (session timers) stays. 1 min..7 d.
	Timeout time.Duration `yaml:"timeout"`
	// Linger keeps a terminated dialog this long so that late
	// retransmissions (a BYE's, a 2xx's) still find it, as RFC 3261's
	// 64*T1 = 32 s of Timer J/K. Default 32 s. 1 s..10 min.
	Linger time.Duration `yaml:"linger"`
	// MaxDialogs bounds the calls held (own and replicas of the region
	// partners). A new call past it is forwarded untracked (and counted);
	// a replica past it is dropped (and counted). Default 200000: about
	// 180 MB at ~900 bytes per call (BenchmarkMemoryPerCall). 1..100000000.
	MaxDialogs int `yaml:"max_dialogs"`
	// MaxForks bounds the early dialogs (distinct To tags) of one call.
	// Default 16.
	MaxForks int `yaml:"max_forks"`
	// MaxCallsPerUser is the number of active (early or confirmed) calls
	// one authenticated user may have at once, counting the calls held by
	// the region partners; the next new INVITE gets 486 Busy Here.
	// Default 0: no limit. Calls of unauthenticated callers are never
	// limited.
	MaxCallsPerUser int `yaml:"max_calls_per_user"`
	// PerUser overrides MaxCallsPerUser for named users (the digest user
	// name); 0 there means no limit for that user.
	PerUser map[string]int `yaml:"per_user"`
	// Buckets is the number of anti-entropy digest buckets. Default 64.
	// 1..4096.
	Buckets int `yaml:"buckets"`
	// FlushInterval is how long changes wait to be sent together to the
	// partners in one frame. Default 1 ms. 100µs..100ms.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// MaxFrameBytes bounds one replication frame. Default 256 KiB.
	MaxFrameBytes int `yaml:"max_frame_bytes"`
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	var c Config
	_ = c.Validate()
	return c
}

func bad(key, format string, a ...any) error {
	return &cluster.FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// Validate fills defaults and checks ranges. Errors are
// *cluster.FieldError naming the key relative to the section.
func (c *Config) Validate() error {
	dur := func(key string, v *time.Duration, def, lo, hi time.Duration) error {
		if *v == 0 {
			*v = def
		}
		if *v < lo || *v > hi {
			return bad(key, "%s is out of range %s..%s", *v, lo, hi)
		}
		return nil
	}
	if err := dur("early_timeout", &c.EarlyTimeout, DefaultEarlyTimeout, time.Second, time.Hour); err != nil {
		return err
	}
	if err := dur("timeout", &c.Timeout, DefaultTimeout, time.Minute, 7*24*time.Hour); err != nil {
		return err
	}
	if err := dur("linger", &c.Linger, DefaultLinger, time.Second, 10*time.Minute); err != nil {
		return err
	}
	if err := dur("flush_interval", &c.FlushInterval, DefaultFlushInterval, 100*time.Microsecond, 100*time.Millisecond); err != nil {
		return err
	}
	num := func(key string, v *int, def, lo, hi int) error {
		if *v == 0 {
			*v = def
		}
		if *v < lo || *v > hi {
			return bad(key, "%d is out of range %d..%d", *v, lo, hi)
		}
		return nil
	}
	if err := num("max_dialogs", &c.MaxDialogs, DefaultMaxDialogs, 1, 100_000_000); err != nil {
		return err
	}
	if err := num("max_forks", &c.MaxForks, DefaultMaxForks, 1, 1024); err != nil {
		return err
	}
	if err := num("buckets", &c.Buckets, DefaultBuckets, 1, 4096); err != nil {
		return err
	}
	if err := num("max_frame_bytes", &c.MaxFrameBytes, DefaultMaxFrameBytes, 4096, 1<<20-1024); err != nil {
		return err
	}
	if c.MaxCallsPerUser < 0 {
		return bad("max_calls_per_user", "%d is negative (0 means no limit)", c.MaxCallsPerUser)
	}
	for u, n := range c.PerUser {
		if strings.TrimSpace(u) == "" {
			return bad("per_user", "empty user name")
		}
		if n < 0 {
			return bad("per_user."+u, "%d is negative (0 means no limit)", n)
		}
	}
	return nil
}

// limitFor is the concurrent-call limit of user (0: none).
func (c *Config) limitFor(user string) int {
	if n, ok := c.PerUser[user]; ok {
		return n
	}
	return c.MaxCallsPerUser
}
