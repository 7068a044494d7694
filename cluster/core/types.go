// Package core is the cluster's deterministic state machine: heartbeats and
// RTT, link-state topology and routing, node metadata, capability sync and
// anti-entropy, and sharing-tag ownership.
//
// It has no sockets, goroutines or clock. Time arrives as an argument, input
// through LinkUp, LinkDown, Recv and Send, and the caller drains output with
// Ready and performs it (writes frames, closes links, publishes events). The
// same code runs under the TCP shell (package cluster) and under the
// simulation tests, which drive thousands of randomised partitions in
// seconds.
package core

import (
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// NodeID identifies a node cluster-wide. 0 is not a node.
type NodeID = uint32

// NodeMeta is what a node tells the cluster about itself. It travels in the
// handshake and in every link-state advertisement.
type NodeMeta struct {
	ID          NodeID
	Incarnation uint64 // new on every process start
	Region      string
	ClusterAddr string
	SIPAddr     string
	Priority    int32
	Seed        bool
	Drained     bool
	// Draining: a drain was requested; the node still holds its tags
	// but should get no new work (geo stops relaying to it as a home).
	// Flag bit 2, appended: older nodes ignore it.
	Draining bool
	Synced   []string // capabilities this node is synced for, sorted
}

func (m NodeMeta) syncedFor(capName string) bool {
	_, ok := slices.BinarySearch(m.Synced, capName)
	return ok
}

func (m NodeMeta) encode(w *wire.Writer) {
	w.U32(m.ID)
	w.U64(m.Incarnation)
	w.String(m.Region)
	w.String(m.ClusterAddr)
	w.String(m.SIPAddr)
	w.U32(uint32(m.Priority))
	var flags uint8
	if m.Seed {
		flags |= 1
	}
	if m.Drained {
		flags |= 2
	}
	if m.Draining {
		flags |= 4
	}
	w.U8(flags)
	w.U16(uint16(len(m.Synced)))
	for _, s := range m.Synced {
		w.String(s)
	}
}

func decodeMeta(r *wire.Reader) NodeMeta {
	var m NodeMeta
	m.ID = r.U32()
	m.Incarnation = r.U64()
	m.Region = r.String()
	m.ClusterAddr = r.String()
	m.SIPAddr = r.String()
	m.Priority = int32(r.U32())
	flags := r.U8()
	m.Seed = flags&1 != 0
	m.Drained = flags&2 != 0
	m.Draining = flags&4 != 0
	n := int(r.U16())
	if r.Err == nil && n*2 > len(r.B) {
		r.Err = wire.ErrShort
		return m
	}
	for i := 0; i < n && r.Err == nil; i++ {
		m.Synced = append(m.Synced, r.String())
	}
	slices.Sort(m.Synced)
	return m
}

// EncodeMeta is the handshake encoding of a node's metadata.
func EncodeMeta(m NodeMeta) []byte {
	var w wire.Writer
	m.encode(&w)
	return w.B
}

// DecodeMeta reverses EncodeMeta.
func DecodeMeta(b []byte) (NodeMeta, error) {
	r := wire.Reader{B: b}
	m := decodeMeta(&r)
	return m, r.Err
}

// SyncState is a capability's sync state on this node.
type SyncState uint8

const (
	NotSynced SyncState = iota // needs data, has not looked for a donor
	Pending                    // looking for a synced donor
	Syncing                    // streaming a snapshot from a donor
	Synced                     // has the data; can be a donor
)

func (s SyncState) String() string {
	switch s {
	case NotSynced:
		return "not-synced"
	case Pending:
		return "pending"
	case Syncing:
		return "syncing"
	case Synced:
		return "synced"
	}
	return "unknown"
}

// SnapshotReader streams a capability's records. Next appends records to
// dst until about maxBytes have been added or the data ends; done reports
// the end. Records are opaque to the cluster. A sync stream (Snapshot,
// SnapshotFor) copies one Next's records into its chunks before it calls
// Next again, so such a reader may reuse their memory; Bucket's records
// must stay valid (anti-entropy gathers several calls' into one frame).
type SnapshotReader interface {
	Next(dst [][]byte, maxBytes int) (recs [][]byte, done bool)
}

// Capability is a module's registration: its message handler and,
// optionally, what it takes to sync it and repair it. The core calls these
// from its own goroutine: they must not block.
type Capability struct {
	Name string
	// Handle takes a live message from another node.
	Handle func(from NodeID, typ wire.MsgType, body []byte)
	// NeedsSync makes a starting node fetch a snapshot from a synced donor
	// before it counts as synced for this capability.
	NeedsSync bool
	// Snapshot produces the records for a joining node (donor side).
	Snapshot func() SnapshotReader
	// SnapshotFor, when set, is used instead of Snapshot and is told who
	// asks, so that a donor sends only what that node should hold.
	SnapshotFor func(to NodeMeta) SnapshotReader
	// Donors, when set, restricts donors to the nodes it selects: for data
	// that only some nodes hold, such as a region's bindings. When no
	// selected node is synced after SeedSyncDelay, the node declares itself
	// synced if it is a seed, if no selected node is reachable at all, or
	// if it has the lowest id among the reachable selected nodes (so two
	// partners restarting together don't wait for each other forever).
	Donors func(NodeMeta) bool
	// Apply merges records from a snapshot or an anti-entropy delta. The
	// capability's merge rule makes it idempotent: a record seen twice, or
	// older than what is held, changes nothing. recs, and the records
	// in it, are valid only until Apply returns: a snapshot chunk's
	// memory is reused for the next chunks.
	Apply func(from NodeID, recs [][]byte)
	// Settle (optional) is called when a snapshot ends, before the
	// capability counts as synced and its held updates are handed to
	// Handle: an Apply that hands the records to another goroutine waits
	// here until they are applied. It may block for that long.
	Settle func()
	// Digest (optional, enables anti-entropy) returns one hash per bucket.
	// Every node must use the same bucket count for a capability.
	Digest func() []uint64
	// Bucket streams the records of one digest bucket.
	Bucket func(i int) SnapshotReader
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	EventNodeUp EventKind = iota + 1
	EventNodeDown
	EventTagOwner  // Tag's owner changed (Owner, Active)
	EventSyncState // Cap's sync state changed (State)
	EventRefused   // a link was refused (Node, Reason)
)

// Event is a change others subscribe to.
type Event struct {
	Kind   EventKind
	Node   NodeID
	Tag    string
	Owner  NodeID
	Active bool
	Cap    string
	State  SyncState
	Reason string
}

// Send is a frame to write to a direct neighbour.
type Send struct {
	To    NodeID
	Frame *wire.Frame
}

// Ready is the output accumulated since the last drain.
type Ready struct {
	Sends  []Send
	Close  []NodeID // links declared dead by the heartbeat
	Events []Event
}

// Timers are heartbeat timers for one link profile.
type Timers struct {
	PingInterval time.Duration
	DeadAfter    time.Duration
}

// TagSpec declares a sharing tag.
type TagSpec struct {
	Name       string
	Region     string
	Nodes      []NodeID
	Priorities map[NodeID]int32
}

// Config configures the core. The shell derives it from cluster.Config.
type Config struct {
	Self NodeMeta
	LAN  Timers // links within the region (unless WANOnly)
	WAN  Timers // links to other regions
	// WANOnly uses the WAN timers on every link.
	WANOnly             bool
	SeedSyncDelay       time.Duration
	AntiEntropyInterval time.Duration
	// AntiEntropyBytes bounds the records one anti-entropy round sends
	// (whole buckets, at least one): a large divergence is repaired over
	// several rounds AntiEntropyFollowUp apart, not in one burst that
	// would hold the loop (and the peer's) past the heartbeat dead time.
	AntiEntropyBytes int
	SyncTimeout      time.Duration
	SyncChunkBytes   int
	SyncWindow       int
	// LSARefresh re-floods the node's own LSA (with fresh RTTs) this often.
	LSARefresh time.Duration
	// MaxBuffered bounds live updates held during a sync; past it the
	// buffer is dropped and the sync restarts.
	MaxBuffered int
	// TopologyGrace is how long a node that has no link yet waits before it
	// trusts its (empty) view enough to claim sharing tags.
	TopologyGrace time.Duration
	// FenceMargin is how long an elected node waits, after the tag's
	// holder was lost by heartbeat timeout, before it becomes active (the
	// holder fences itself meanwhile). Default: the slowest profile's
	// PingInterval plus the LAN PingInterval (see Core.FenceMargin).
	FenceMargin time.Duration
	// ProbeTimeout is how long a probed link may stay silent, on top of
	// twice its RTT, before it is declared dead. Default: the LAN DeadAfter
	// less one LAN PingInterval (300 ms), the earliest a heartbeat can
	// declare a cut link dead, which FenceMargin's reasoning relies on.
	ProbeTimeout time.Duration
	// ReleaseTimeout bounds how long an elected node waits for a holder
	// that is still up to release the tag (its release lost, or it does
	// not agree yet). Default 1 s.
	ReleaseTimeout time.Duration
	Tags           []TagSpec
	// Known lists nodes remembered from a previous run (the shell keeps
	// them in its state directory). They start as down, so a node that
	// restarts cut off from everyone still knows it is in a minority and
	// does not claim sharing tags.
	Known []NodeMeta
	// Seed feeds the deterministic random source (anti-entropy peers).
	Seed int64
}

func (c *Config) fill() {
	if c.LAN == (Timers{}) {
		c.LAN = Timers{100 * time.Millisecond, 400 * time.Millisecond}
	}
	if c.WAN == (Timers{}) {
		c.WAN = Timers{time.Second, 5 * time.Second}
	}
	if c.SeedSyncDelay == 0 {
		c.SeedSyncDelay = 3 * time.Second
	}
	if c.AntiEntropyInterval == 0 {
		c.AntiEntropyInterval = 30 * time.Second
	}
	if c.AntiEntropyBytes == 0 {
		c.AntiEntropyBytes = 4 << 20
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = 5 * time.Second
	}
	if c.SyncChunkBytes == 0 {
		c.SyncChunkBytes = 64 << 10
	}
	if c.SyncWindow == 0 {
		c.SyncWindow = 16
	}
	if c.LSARefresh == 0 {
		c.LSARefresh = 10 * time.Second
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = 1 << 20
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = c.LAN.DeadAfter - c.LAN.PingInterval
	}
	if c.ReleaseTimeout == 0 {
		c.ReleaseTimeout = time.Second
	}
	if c.TopologyGrace == 0 {
		c.TopologyGrace = c.SeedSyncDelay
	}
}
