package geo

import (
	"fmt"
	"strings"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

// Defaults. Each is explained on the Config field it fills.
const (
	DefaultTagPrefix     = "home-"
	DefaultBuckets       = 4096
	DefaultAckTimeout    = 50 * time.Millisecond
	DefaultMoveGrace     = time.Second
	DefaultSweepInterval = time.Second
	DefaultMaxFrameBytes = 256 << 10
	DefaultBatchDelay    = time.Millisecond
)

// Config configures the distributed user location. The daemon's YAML
// `geo:` section maps onto it (yaml tags). Zero values take the defaults
// documented on each field; Validate fills them in. Every node of the
// cluster must use the same TagPrefix, ReplicateContactsCrossRegion and
// Buckets.
type Config struct {
	// TagPrefix names each region's HA sharing tag: the tag of region R is
	// TagPrefix+R (default "home-", so "home-eu-west"). The owner of that
	// tag serves the bindings of a home node of R that is down. Every node
	// must declare the tag of every region in `cluster.tags`, with
	// `region: R` (see CheckClusterTags): a node of another region computes
	// the owner to relay to.
	TagPrefix string `yaml:"tag_prefix"`
	// ReplicateContactsCrossRegion sends full bindings to every node of
	// every region, not only to the home's region (default false: only the
	// small AoR→home metadata crosses regions). With it, a node may serve a
	// binding itself when the home's whole region is down.
	ReplicateContactsCrossRegion bool `yaml:"replicate_contacts_cross_region"`
	// Buckets is the number of anti-entropy digest buckets (and of lock
	// shards). Default 4096: with a million bindings a differing bucket
	// ships about 250 records. Under load, replication in flight makes
	// some buckets differ at any instant; with 256 buckets a periodic
	// round then shipped a sixth of all records each way, enough to stall
	// a busy home for hundreds of ms. 16..65536.
	Buckets int `yaml:"buckets"`
	// AckTimeout bounds how long Save waits for an HA partner to confirm
	// it holds the change. Past it, Save returns anyway and the REGISTER
	// is answered with the binding on the home only (counted as a
	// degraded ack). Default 50 ms: a partner on the LAN answers in well
	// under a millisecond, so only a partner that is dying or cut off
	// hits it. 1 ms..10 s.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MoveGrace is how long the old home keeps a binding after the UA
	// registered at another node (moving home), so that every node has
	// learnt the new home before the old one stops answering. Default
	// 1 s: metadata reaches every node in a few milliseconds (tens over a
	// WAN). 0..1 min.
	MoveGrace time.Duration `yaml:"move_grace"`
	// SweepInterval is how often expired bindings, tombstones and
	// metadata are purged from memory. Lookups never return an expired
	// entry, whatever this is. Default 1 s.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// MaxFrameBytes bounds one replication frame; a burst of changes is
	// split. Default 256 KiB (the cluster's frame limit is 1 MiB).
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// BatchDelay is group commit: while a batch of changes waits for the
	// partner's ack, new changes accumulate and leave together when that
	// ack arrives, or after at most BatchDelay. An idle node sends at
	// once. Default 1 ms (the replication-lag budget is 5 ms at p99).
	// 100µs..10ms.
	BatchDelay time.Duration `yaml:"batch_delay"`
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

// Validate checks the config and fills defaults. Errors are
// *cluster.FieldError naming the key within the geo section (for example
// "buckets").
func (c *Config) Validate() error {
	if c.TagPrefix == "" {
		c.TagPrefix = DefaultTagPrefix
	}
	if len(c.TagPrefix) > 32 {
		return bad("tag_prefix", "at most 32 bytes")
	}
	if c.Buckets == 0 {
		c.Buckets = DefaultBuckets
	}
	if c.Buckets < 16 || c.Buckets > 65536 {
		return bad("buckets", "must be 16..65536, not %d", c.Buckets)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.AckTimeout < time.Millisecond || c.AckTimeout > 10*time.Second {
		return bad("ack_timeout", "must be 1ms..10s, not %v", c.AckTimeout)
	}
	if c.MoveGrace == 0 {
		c.MoveGrace = DefaultMoveGrace
	}
	if c.MoveGrace < 0 || c.MoveGrace > time.Minute {
		return bad("move_grace", "must be 0..1m, not %v", c.MoveGrace)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.SweepInterval < 10*time.Millisecond || c.SweepInterval > time.Minute {
		return bad("sweep_interval", "must be 10ms..1m, not %v", c.SweepInterval)
	}
	if c.BatchDelay == 0 {
		c.BatchDelay = DefaultBatchDelay
	}
	if c.BatchDelay < 100*time.Microsecond || c.BatchDelay > 10*time.Millisecond {
		return bad("batch_delay", "must be 100µs..10ms, not %v", c.BatchDelay)
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.MaxFrameBytes < 4<<10 || c.MaxFrameBytes > 768<<10 {
		return bad("max_frame_bytes", "must be 4096..786432, not %d", c.MaxFrameBytes)
	}
	return nil
}

// TagFor is the HA sharing tag of a region.
func (c *Config) TagFor(region string) string { return c.TagPrefix + region }

// CheckClusterTags checks the cluster section against geo's needs: the
// sharing tag of the node's own region must be declared with `region:` set
// to that region (every node of the region is eligible: its owner serves a
// dead home's bindings), and every tag named TagPrefix+R must have
// `region: R`. The tags of the other regions cannot be checked from one
// node's file: every node must declare every region's tag (a node without
// it cannot find who serves a dead home of that region). The daemon calls
// it when it validates the config; errors name the cluster key.
func CheckClusterTags(c *Config, cc *cluster.Config) error {
	own := false
	for i, t := range cc.Tags {
		r, ok := strings.CutPrefix(t.Name, c.TagPrefix)
		if !ok {
			continue
		}
		if t.Region != r {
			return &cluster.FieldError{Key: fmt.Sprintf("tags[%d].region", i), Err: fmt.Sprintf("tag %q is geo's HA tag of region %s: it needs region: %s", t.Name, r, r)}
		}
		own = own || r == cc.Region
	}
	if !own {
		return &cluster.FieldError{Key: "tags", Err: fmt.Sprintf("missing geo's HA tag of this region: {name: %s, region: %s} (geo.tag_prefix + region)", c.TagFor(cc.Region), cc.Region)}
	}
	return nil
}
