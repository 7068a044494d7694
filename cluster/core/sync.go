package core

import (
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// capState is one capability's sync state on the receiving side.
type capState struct {
	spec     Capability
	state    SyncState
	since    time.Time // entered the current state
	donor    NodeID
	req      uint64
	nextSeq  uint32
	lastData time.Time
	records  uint64
	attempts int
	avoid    map[NodeID]time.Time // donors that failed recently
	held     []*wire.Frame        // live updates held until the snapshot ends
	repairs  uint64
}

// outStream is a snapshot a donor streams to one node.
type outStream struct {
	id      uint64
	to      NodeID
	capName string
	reader  SnapshotReader
	pend    [][]byte // records read but not sent yet
	recBuf  [][]byte // pend's backing array, reused for every read
	rdDone  bool     // the reader has no more
	sent    uint32   // chunks sent
	acked   uint32   // chunks acknowledged
	done    bool     // last chunk sent
	lastAck time.Time
	// Chunk bodies come from bufs and go back through release once the
	// link has written them: a window's worth of buffers, reused.
	bufs    *wire.BufPool
	release func([]byte)
}

// CapInfo is a capability's sync state.
type CapInfo struct {
	Name     string
	State    SyncState
	Donor    NodeID
	Records  uint64
	Attempts int
	Repairs  uint64
}

// Register adds a capability. Register them all before the first Tick.
func (c *Core) Register(cp Capability) {
	cs := &capState{spec: cp, state: Synced, since: c.now, avoid: map[NodeID]time.Time{}}
	if cp.NeedsSync {
		cs.state = Pending
	}
	c.caps[cp.Name] = cs
	c.capNames = append(c.capNames, cp.Name)
	slices.Sort(c.capNames)
	c.dirtyLSA = true
}

func (c *Core) syncedCaps() []string {
	var out []string
	for _, n := range c.capNames {
		if c.caps[n].state == Synced {
			out = append(out, n)
		}
	}
	return out
}

// Caps returns every capability's state, sorted by name.
func (c *Core) Caps() []CapInfo {
	out := make([]CapInfo, 0, len(c.caps))
	for _, n := range c.capNames {
		cs := c.caps[n]
		out = append(out, CapInfo{Name: n, State: cs.state, Donor: cs.donor, Records: cs.records, Attempts: cs.attempts, Repairs: cs.repairs})
	}
	return out
}

func (c *Core) setState(name string, cs *capState, s SyncState) {
	old := cs.state
	if old == s {
		return
	}
	cs.state, cs.since = s, c.now
	c.event(Event{Kind: EventSyncState, Cap: name, State: s})
	if s == Synced || old == Synced {
		c.dirtyLSA = true // donors are found through the LSA
	}
}

func (cs *capState) buffer(c *Core, f *wire.Frame) {
	if len(cs.held) >= c.cfg.MaxBuffered {
		// Too much to hold: start over; the new snapshot has it all.
		cs.held = nil
		if cs.state == Syncing {
			c.abortSync(f.Cap, cs, true)
		}
		return
	}
	cs.held = append(cs.held, f)
}

// donorFor picks a synced donor: same region first, then the lowest RTT
// (direct links before routed ones), then the lowest id.
func (c *Core) donorFor(name string, cs *capState) NodeID {
	var best NodeID
	var bestKey [3]int64
	for _, id := range c.UpNodes() {
		m := c.lsdb[id].Meta
		if !m.syncedFor(name) || (cs.spec.Donors != nil && !cs.spec.Donors(m)) {
			continue
		}
		if t, ok := cs.avoid[id]; ok && c.now.Sub(t) < 2*c.cfg.SyncTimeout {
			continue
		}
		var key [3]int64
		if m.Region != c.cfg.Self.Region {
			key[0] = 1
		}
		if l, ok := c.links[id]; ok {
			key[1] = int64(l.rtt)
		} else {
			key[1] = int64(time.Hour) * int64(len(c.paths[id]))
		}
		key[2] = int64(id)
		if best == 0 || slices.Compare(key[:], bestKey[:]) < 0 {
			best, bestKey = id, key
		}
	}
	return best
}

func (c *Core) tickSync() {
	for _, name := range c.capNames {
		cs := c.caps[name]
		switch cs.state {
		case Pending:
			if d := c.donorFor(name, cs); d != 0 {
				c.startSync(name, cs, d)
			} else if c.now.Sub(cs.since) >= c.seedDelay(cs) && c.mayDeclareSynced(cs) {
				// The seed rule: nobody to sync from, so this node's
				// (possibly empty) data is the cluster's.
				c.finishSync(name, cs)
			}
		case Syncing:
			if c.now.Sub(cs.lastData) > c.cfg.SyncTimeout {
				c.abortSync(name, cs, true)
			}
		}
	}
	for id, s := range c.streams {
		if c.now.Sub(s.lastAck) > c.cfg.SyncTimeout {
			delete(c.streams, id)
		}
	}
}

// seedDelay is how long a capability stays pending with no donor before
// the seed rule may declare it synced. After a sync was tried, a donor
// existed that holds data this node lacks (a link lost under load mid-sync
// left a node declared synced with 214,127 of 1,000,000 bindings): wait two
// SyncTimeouts more for it, or another, to come back.
func (c *Core) seedDelay(cs *capState) time.Duration {
	if cs.attempts > 0 {
		return c.cfg.SeedSyncDelay + 2*c.cfg.SyncTimeout
	}
	return c.cfg.SeedSyncDelay
}

// mayDeclareSynced is the seed rule, widened for capabilities whose data
// only some nodes hold (Donors).
func (c *Core) mayDeclareSynced(cs *capState) bool {
	if c.cfg.Self.Seed {
		return true
	}
	if cs.spec.Donors == nil {
		return false
	}
	for _, id := range c.UpNodes() {
		if cs.spec.Donors(c.lsdb[id].Meta) && id < c.self {
			return false // a lower-id holder is around: it goes first
		}
	}
	return true
}

func (c *Core) startSync(name string, cs *capState, donor NodeID) {
	c.reqSeq++
	cs.req = uint64(c.self)<<32 | c.reqSeq
	cs.donor, cs.nextSeq, cs.lastData = donor, 0, c.now
	cs.attempts++
	c.setState(name, cs, Syncing)
	var w wire.Writer
	w.U64(cs.req)
	w.String(name)
	c.route(c.sysFrame(wire.MsgSyncRequest, donor, w.B))
}

func (c *Core) abortSync(name string, cs *capState, tell bool) {
	if tell && cs.donor != 0 {
		var w wire.Writer
		w.U64(cs.req)
		c.route(c.sysFrame(wire.MsgSyncAbort, cs.donor, w.B))
		// A donor that stalled or gave up is skipped for a while; one
		// that merely became unreachable (peerGone) may be asked again as
		// soon as it is back, or a flap of the only donor would stall the
		// join for 2×SyncTimeout.
		cs.avoid[cs.donor] = c.now
	}
	cs.donor, cs.req = 0, 0
	c.setState(name, cs, Pending)
}

func (c *Core) finishSync(name string, cs *capState) {
	if cs.spec.Settle != nil {
		cs.spec.Settle()
	}
	held := cs.held
	cs.held = nil
	cs.donor = 0
	c.setState(name, cs, Synced)
	// Live updates that came in during the sync, in arrival order. Those
	// already in the snapshot are no-ops under the capability's merge rule.
	for _, f := range held {
		if cs.spec.Handle != nil {
			cs.spec.Handle(f.Src, f.Type, f.Body)
		}
	}
}

// peerGone drops sync state bound to a node that became unreachable.
func (c *Core) peerGone(id NodeID) {
	for _, name := range c.capNames {
		if cs := c.caps[name]; cs.state == Syncing && cs.donor == id {
			c.abortSync(name, cs, false)
		}
	}
	for sid, s := range c.streams {
		if s.to == id {
			delete(c.streams, sid)
		}
	}
}

func (c *Core) onSync(f *wire.Frame, r *wire.Reader) {
	switch f.Type {
	case wire.MsgSyncRequest:
		req, name := r.U64(), r.String()
		if r.Err != nil {
			return
		}
		cs, ok := c.caps[name]
		if !ok || cs.state != Synced || (cs.spec.Snapshot == nil && cs.spec.SnapshotFor == nil) {
			var w wire.Writer
			w.U64(req)
			c.route(c.sysFrame(wire.MsgSyncAbort, f.Src, w.B))
			return
		}
		var rd SnapshotReader
		if cs.spec.SnapshotFor != nil {
			to, _ := c.Meta(f.Src)
			rd = cs.spec.SnapshotFor(to)
		} else {
			rd = cs.spec.Snapshot()
		}
		s := &outStream{id: req, to: f.Src, capName: name, reader: rd, lastAck: c.now}
		// The window's chunks, plus one being written and one being built.
		s.bufs = wire.NewBufPool(c.cfg.SyncChunkBytes, c.cfg.SyncWindow+2)
		s.release = s.bufs.Put
		c.streams[req] = s
		c.pump(s)
	case wire.MsgSyncAck:
		req, seq := r.U64(), r.U32()
		if s, ok := c.streams[req]; ok && r.Err == nil && s.to == f.Src {
			if seq > s.acked {
				s.acked = seq
			}
			s.lastAck = c.now
			if s.done && s.acked >= s.sent {
				delete(c.streams, req)
				return
			}
			c.pump(s)
		}
	case wire.MsgSyncAbort:
		req := r.U64()
		if r.Err != nil {
			return
		}
		delete(c.streams, req)
		for _, name := range c.capNames {
			if cs := c.caps[name]; cs.state == Syncing && cs.req == req {
				cs.avoid[cs.donor] = c.now // it refused: try another first
				c.abortSync(name, cs, false)
			}
		}
	case wire.MsgSyncChunk:
		c.onChunk(f, r)
	}
}

// chunkOverhead is the frame and chunk header room kept out of
// SyncChunkBytes, so that a default chunk fits the transport's 64 KiB read
// buffer and is never copied into a buffer of its own.
const chunkOverhead = 64

// pump sends chunks while the receiver has window credit. A chunk holds
// whole records and, with their length prefixes, stays within
// SyncChunkBytes (a single larger record goes alone).
func (c *Core) pump(s *outStream) {
	budget := max(c.cfg.SyncChunkBytes-chunkOverhead, 1)
	for !s.done && s.sent-s.acked < uint32(c.cfg.SyncWindow) {
		if len(s.pend) == 0 && !s.rdDone {
			// Refill from the start of recBuf: s.pend[:0] would have
			// lost the capacity already consumed, and Next would grow a
			// new slice for every chunk.
			s.recBuf, s.rdDone = s.reader.Next(s.recBuf[:0], budget)
			s.pend = s.recBuf
		}
		n, size := 0, 0
		for n < len(s.pend) && (n == 0 || size+4+len(s.pend[n]) <= budget) {
			size += 4 + len(s.pend[n])
			n++
		}
		recs := s.pend[:n]
		last := s.rdDone && n == len(s.pend)
		w := wire.Writer{B: s.bufs.Get(17 + size)}
		w.U64(s.id)
		w.U32(s.sent + 1)
		w.Bool(last)
		w.U32(uint32(n))
		for _, rec := range recs {
			w.Bytes(rec)
		}
		s.pend = s.pend[n:]
		s.sent++
		s.done = last
		f := c.sysFrame(wire.MsgSyncChunk, s.to, w.B)
		f.Release = s.release
		if !c.route(f) {
			delete(c.streams, s.id)
			return
		}
	}
}

func (c *Core) onChunk(f *wire.Frame, r *wire.Reader) {
	req, seq, last := r.U64(), r.U32(), r.Bool()
	n := r.Count(4)
	if r.Err != nil {
		return
	}
	var cs *capState
	var name string
	for _, nm := range c.capNames {
		if x := c.caps[nm]; x.state == Syncing && x.req == req {
			cs, name = x, nm
		}
	}
	if cs == nil {
		return // an aborted sync's leftovers
	}
	if seq != cs.nextSeq+1 || f.Src != cs.donor {
		c.abortSync(name, cs, true)
		return
	}
	recs := c.chunkRecs[:0]
	for i := 0; i < n && r.Err == nil; i++ {
		recs = append(recs, r.Bytes())
	}
	if r.Err != nil {
		c.abortSync(name, cs, true)
		return
	}
	cs.nextSeq = seq
	cs.lastData = c.now
	cs.records += uint64(len(recs))
	if cs.spec.Apply != nil && len(recs) > 0 {
		cs.spec.Apply(f.Src, recs)
	}
	clear(recs) // pins no chunk once the sync is over
	c.chunkRecs = recs[:0]
	var w wire.Writer
	w.U64(req)
	w.U32(seq)
	c.route(c.sysFrame(wire.MsgSyncAck, f.Src, w.B))
	if last {
		c.finishSync(name, cs)
	}
}
