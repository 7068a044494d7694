package cluster

import (
	"errors"

	"fmt"
	"github.com/anyedge/anyedge/cluster/core"
	"net"
	"time"
)

// Config configures one cluster node. The daemon's YAML `cluster:` section
// maps onto it field by field (yaml tags). Zero values take the defaults
// documented on each field; Validate fills them in.
type Config struct {
	// NodeID identifies this node cluster-wide. Required, 1..2^32-1, unique:
	// a second node claiming an id that is in use is refused.
	NodeID uint32 `yaml:"node_id"`
	// Region names the node's region (for example "eu-west"). Required.
	Region string `yaml:"region"`
	// Listen is the TCP address the cluster protocol listens on.
	// Default "127.0.0.1:5600".
	Listen string `yaml:"listen"`
	// Advertise is the address other nodes dial to reach this node.
	// Default: Listen.
	Advertise string `yaml:"advertise"`
	// SIPAddr is the node's own SIP address (host:port), spread to the
	// cluster with the node's metadata so that others can relay to it.
	SIPAddr string `yaml:"sip_addr"`
	// Priority ranks the node for sharing-tag ownership (higher wins).
	// Default 100.
	Priority int `yaml:"priority"`
	// Seed marks a seed node: with no synced donor in sight after
	// SeedSyncDelay it declares its capabilities synced. Non-seed nodes wait
	// for a donor forever.
	Seed bool `yaml:"seed"`
	// Join lists cluster addresses to contact at start. One is enough: the
	// rest of the cluster is learnt from the topology.
	Join []string `yaml:"join"`
	// Key is the shared cluster key used for the HMAC-SHA256
	// challenge-response on every link. Required, at least 16 bytes.
	Key string `yaml:"key"`
	// TLS turns on mutual TLS for cluster links when CertFile is set.
	TLS TLSConfig `yaml:"tls"`
	// Profile picks the heartbeat timers for links inside the region:
	// "lan" (default) or "wan". Links to other regions always use WAN.
	Profile string `yaml:"profile"`
	// LAN timers: ping every 100 ms, a link is dead after 400 ms of silence,
	// so a dead peer is detected within 500 ms (OpenSIPS: 4 to 8 s).
	LAN Timers `yaml:"lan"`
	// WAN timers: ping every 1 s, dead after 5 s, to ride out WAN jitter
	// without reconnecting. A WAN link silent for the fence lease (1.3 s
	// with the default timers; docs/CLUSTER.md) is withdrawn from the
	// topology before that, so WAN links ping at most every lease/4
	// (325 ms) whatever ping_interval says.
	WAN Timers `yaml:"wan"`
	// SeedSyncDelay is how long a seed node looks for a donor before it
	// declares itself synced. Default 3 s.
	SeedSyncDelay time.Duration `yaml:"seed_sync_delay"`
	// AntiEntropyInterval is the period of digest exchanges with a random
	// synced peer. Partition heals trigger one at once. Default 30 s.
	AntiEntropyInterval time.Duration `yaml:"anti_entropy_interval"`
	// AntiEntropyBytes bounds the records one anti-entropy round sends
	// to a peer; a larger divergence (a long partition) is repaired in
	// further rounds 250 ms apart, so that neither node's loop stalls
	// past the heartbeat dead time. Default 4 MiB.
	AntiEntropyBytes int `yaml:"anti_entropy_bytes"`
	// SyncChunkBytes bounds one snapshot chunk. Default 64 KiB.
	SyncChunkBytes int `yaml:"sync_chunk_bytes"`
	// SyncWindow is how many chunks a donor sends ahead of acks. Default 16.
	SyncWindow int `yaml:"sync_window"`
	// SyncTimeout aborts a sync (and tries another donor) when no chunk
	// arrives for this long. Default 5 s.
	SyncTimeout time.Duration `yaml:"sync_timeout"`
	// StateDir, when set, keeps the known members across restarts, so a
	// node restarted while cut off still knows it is in a minority and
	// does not claim sharing tags. Default: none.
	StateDir string `yaml:"state_dir"`
	// Drained starts the node drained (not eligible for sharing tags). The
	// daemon sets it from its persisted drain flag, so a drained node that
	// restarts never holds a tag, not even for a moment. Not a config key.
	Drained bool `yaml:"-"`
	// Tags are the sharing tags this node knows about.
	Tags []TagConfig `yaml:"tags"`
}

// TLSConfig holds mutual-TLS material for cluster links.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Timers are heartbeat timers for one link profile.
type Timers struct {
	PingInterval time.Duration `yaml:"ping_interval"`
	DeadAfter    time.Duration `yaml:"dead_after"`
}

// TagConfig declares a sharing tag: exactly one active owner among the
// eligible nodes.
type TagConfig struct {
	Name string `yaml:"name"`
	// Region makes every node of that region eligible.
	Region string `yaml:"region"`
	// Nodes makes the listed node ids eligible (in addition to Region).
	Nodes []uint32 `yaml:"nodes"`
	// Priorities overrides node priorities for this tag.
	Priorities map[uint32]int `yaml:"priorities"`
}

// LANTimers and WANTimers are the default heartbeat profiles.
var (
	LANTimers = Timers{PingInterval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond}
	WANTimers = Timers{PingInterval: time.Second, DeadAfter: 5 * time.Second}
)

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
// with the key relative to the cluster section (for example "node_id").
func (c *Config) Validate() error {
	if c.NodeID == 0 {
		return bad("node_id", "required, must be 1..4294967295")
	}
	if c.Region == "" {
		return bad("region", "required")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:5600"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "not host:port: %v", err)
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		return bad("advertise", "not host:port: %v", err)
	}
	for i, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad(fmt.Sprintf("join[%d]", i), "not host:port: %v", err)
		}
	}
	if c.Priority == 0 {
		c.Priority = 100
	}
	if len(c.Key) < 16 {
		return bad("key", "required, at least 16 bytes")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return bad("tls", "cert_file and key_file go together")
	}
	if c.TLS.CertFile != "" && c.TLS.CAFile == "" {
		return bad("tls.ca_file", "required with TLS: peers are verified (mutual TLS)")
	}
	switch c.Profile {
	case "":
		c.Profile = "lan"
	case "lan", "wan":
	default:
		return bad("profile", "must be lan or wan, not %q", c.Profile)
	}
	if err := fillTimers(&c.LAN, LANTimers, "lan"); err != nil {
		return err
	}
	if err := fillTimers(&c.WAN, WANTimers, "wan"); err != nil {
		return err
	}
	if c.SeedSyncDelay == 0 {
		c.SeedSyncDelay = 3 * time.Second
	}
	if c.AntiEntropyInterval == 0 {
		c.AntiEntropyInterval = 30 * time.Second
	}
	if c.SyncChunkBytes == 0 {
		c.SyncChunkBytes = 64 << 10
	}
	if c.AntiEntropyBytes == 0 {
		c.AntiEntropyBytes = 4 << 20
	}
	if c.AntiEntropyBytes < c.SyncChunkBytes || c.AntiEntropyBytes > 1<<30 {
		return bad("anti_entropy_bytes", "must be sync_chunk_bytes..1073741824")
	}
	if c.SyncChunkBytes < 1024 || c.SyncChunkBytes > 512<<10 {
		return bad("sync_chunk_bytes", "must be 1024..524288")
	}
	if c.SyncWindow == 0 {
		c.SyncWindow = 16
	}
	if c.SyncWindow < 1 || c.SyncWindow > 1024 {
		return bad("sync_window", "must be 1..1024")
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = 5 * time.Second
	}
	seen := map[string]bool{}
	for i, t := range c.Tags {
		key := fmt.Sprintf("tags[%d]", i)
		if t.Name == "" {
			return bad(key+".name", "required")
		}
		if seen[t.Name] {
			return bad(key+".name", "duplicate tag %q", t.Name)
		}
		seen[t.Name] = true
		if t.Region == "" && len(t.Nodes) == 0 {
			return bad(key, "needs a region or a node list")
		}
	}
	return nil
}

func fillTimers(t *Timers, def Timers, key string) error {
	if t.PingInterval == 0 {
		t.PingInterval = def.PingInterval
	}
	if t.DeadAfter == 0 {
		t.DeadAfter = def.DeadAfter
	}
	if t.DeadAfter < 2*t.PingInterval {
		return bad(key+".dead_after", "must be at least twice ping_interval")
	}
	return nil
}

// Errors the admin API maps to HTTP statuses.
var (
	ErrNotRunning  = errors.New("cluster: node not running")
	ErrUnknownNode = core.ErrUnknownNode
	ErrUnknownTag  = core.ErrUnknownTag
)

var errNotRunning = ErrNotRunning
