package geo

import (
	"sync/atomic"
	"unsafe"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/wire"
)

// Capabilities returns the service's two cluster capabilities; register
// both on the node before it starts:
//
//   - geo.meta: AoR→home metadata on every node. Synced from any synced
//     node (the cluster's seed rule applies), repaired by anti-entropy.
//   - geo.bind.<region> (geo.bind with cross-region replication): the
//     full bindings of the region, on every node of the region. Donors are
//     restricted to the region, and a donor sends only what the asking
//     node's region holds.
//
// Both merge with the same rule (newest registration wins, by registration
// time, CSeq, node id), so snapshot records and held updates may be applied
// twice or late.
func (s *Service) Capabilities() []cluster.Capability {
	metaQ := newApplyQueue(func(recs [][]byte) { s.apply(MetaCap, recs) }, applyLanes, s.laneOf)
	bindQ := newApplyQueue(func(recs [][]byte) { s.apply(s.bindCap, recs) }, applyLanes, s.laneOf)
	s.metaQ, s.bindQ = metaQ, bindQ
	meta := cluster.Capability{
		Name:      MetaCap,
		NeedsSync: true,
		Handle: func(from uint32, typ cluster.MsgType, body []byte) {
			metaQ.wait()
			s.handleMeta(from, typ, body)
		},
		Snapshot: func() cluster.SnapshotReader { return s.snapshot(recMeta) },
		Apply:    func(from uint32, recs [][]byte) { s.applyChunk(metaQ, &s.metaSynced, MetaCap, recs) },
		Settle:   metaQ.wait,
		Digest:   func() []uint64 { return s.digest(recMeta) },
		Bucket:   func(i int) cluster.SnapshotReader { return s.reader(recMeta, i, i+1) },
	}
	bind := cluster.Capability{
		Name:      s.bindCap,
		NeedsSync: true,
		Handle: func(from uint32, typ cluster.MsgType, body []byte) {
			bindQ.wait()
			s.handleBind(from, typ, body)
		},
		SnapshotFor: func(to cluster.NodeMeta) cluster.SnapshotReader {
			// Only nodes of this region register this capability's name,
			// so an asker whose meta the donor has not learnt yet (its LSA
			// behind its request, under load) is one of them: an empty
			// snapshot would end its sync with nothing.
			if !s.cfg.ReplicateContactsCrossRegion && to.Region != "" && to.Region != s.region {
				return s.reader(recBind, 0, 0)
			}
			return s.snapshot(recBind)
		},
		Donors: func(m cluster.NodeMeta) bool {
			return s.cfg.ReplicateContactsCrossRegion || m.Region == s.region
		},
		Apply:  func(from uint32, recs [][]byte) { s.applyChunk(bindQ, &s.bindSynced, s.bindCap, recs) },
		Settle: bindQ.wait,
		Digest: func() []uint64 { return s.digest(recBind) },
		Bucket: func(i int) cluster.SnapshotReader { return s.reader(recBind, i, i+1) },
	}
	return []cluster.Capability{meta, bind}
}

func capLabel(name string) string {
	if name == MetaCap {
		return "meta"
	}
	return "bind"
}

func (s *Service) handleBind(from uint32, typ cluster.MsgType, body []byte) {
	switch typ {
	case msgUpdate:
		h, err := decodeFrame(body)
		if err != nil {
			s.m.bad.WithLabelValues("bind").Inc()
			return
		}
		s.m.received.WithLabelValues("bind", "update").Inc()
		s.merge("bind", h.recs)
		s.observeLag("bind", h.stamp)
		if h.batch != 0 {
			s.out.ack(from, h.batch)
		}
	case msgAck:
		r := wire.Reader{B: body}
		id := r.U64()
		if r.Err != nil {
			s.m.bad.WithLabelValues("bind").Inc()
			return
		}
		s.m.received.WithLabelValues("bind", "ack").Inc()
		s.out.acked(id)
	default:
		return // a newer peer's message type
	}
	s.flushInline()
}

func (s *Service) handleMeta(from uint32, typ cluster.MsgType, body []byte) {
	if typ != msgUpdate {
		return
	}
	h, err := decodeFrame(body)
	if err != nil {
		s.m.bad.WithLabelValues("meta").Inc()
		return
	}
	s.m.received.WithLabelValues("meta", "update").Inc()
	s.merge("meta", h.recs)
	s.observeLag("meta", h.stamp)
	s.flushInline()
}

func (s *Service) observeLag(label string, stamp int64) {
	if stamp == 0 {
		return
	}
	if d := s.now() - stamp; d >= 0 {
		s.m.lag.WithLabelValues(label).Observe(float64(d) / 1e9)
	}
}

// applyChunk hands a snapshot's chunk (or an anti-entropy delta that comes
// during the sync) to the capability's queue, and applies what comes once
// it is synced in place. A simulation (inline) applies everything in
// place: its order must not depend on goroutines.
func (s *Service) applyChunk(q *applyQueue, synced *atomic.Bool, capName string, recs [][]byte) {
	if s.inline || synced.Load() {
		q.wait()
		s.apply(capName, recs)
		return
	}
	q.push(recs)
}

// laneOf is the apply lane of a record (applyQueue): its AoR's shard, so
// that the lanes of a queue never wait for each other's shard locks. A
// record too short to name its AoR goes to lane 0, where merge counts it.
func (s *Service) laneOf(rec []byte) int {
	r := sreader{s: unsafe.String(unsafe.SliceData(rec), len(rec))}
	r.u8()
	aor := r.str()
	if r.bad {
		return 0
	}
	return bucketOf(aor, len(s.st.shards))
}

// apply takes snapshot chunks and anti-entropy deltas. Once the capability
// is synced, only anti-entropy calls it: what it changes is a repair.
func (s *Service) apply(capName string, recs [][]byte) {
	synced := s.metaSynced.Load()
	if capName != MetaCap {
		synced = s.bindSynced.Load()
	}
	n := s.merge(capLabel(capName), recs)
	if synced && n > 0 {
		s.m.repairs.WithLabelValues(capLabel(capName)).Add(float64(n))
	}
	s.flushInline()
}

// merge applies records and returns how many changed something.
// Consecutive records of one AoR (a metadata row: the old home dead and
// the new one live) are merged under one hold of its lock, so a lookup
// never sees half of them. A record about this node's own bindings (a
// restored snapshot, a tombstone written on its behalf) makes it
// republish its metadata if that no longer matches.
func (s *Service) merge(label string, recs [][]byte) int {
	now := s.now()
	changed := 0
	var sh *shard
	var st *aorState
	mine := false
	done := func() {
		if sh == nil {
			return
		}
		if mine && s.Synced() {
			out := s.publishHome(sh, st, version{T: st.stamp(s.self, now), Node: s.self}, now, nil, false)
			s.out.add(now, out...)
		}
		s.st.reschedule(sh, st)
		sh.mu.Unlock()
		sh, st, mine = nil, nil, false
	}
	// One copy of the live bindings' encoded bodies (brec.enc, kept as
	// slices of it), and the rest of what is kept from a few blocks
	// (recAlloc): records one by one were most of a sync's apply time.
	// Nothing else is kept of a record's bytes (decode copies what it
	// keeps), so records are read in place. Only the bodies: copying
	// whole records kept each one's header too, about a fifth of the
	// copy (and of a replica's memory).
	total := 0
	for _, raw := range recs {
		total += liveBodyLen(raw)
	}
	buf := make([]byte, 0, total)
	if total >= 16<<10 {
		// A sync's chunk: its copy is fresh memory, and faulting it in a
		// page at a time was a sixth of a new node's apply CPU.
		wire.Prefault(buf[:cap(buf)])
	}
	a := recAlloc{own: s.region, regions: &s.regions}
	for i, raw := range recs {
		a.left = len(recs) - i
		rs := unsafe.String(unsafe.SliceData(raw), len(raw))
		d, err := a.decode(rs)
		if err != nil {
			s.m.bad.WithLabelValues(label).Inc()
			continue
		}
		if d.kind == recBind && !s.cfg.ReplicateContactsCrossRegion && label == "meta" {
			continue // bindings never travel on the metadata capability
		}
		if d.kind == recBind && d.b.enc != "" {
			at := len(buf)
			buf = append(buf, d.b.enc...)
			d.b.enc = unsafe.String(unsafe.SliceData(buf[at:]), len(d.b.enc))
		}
		if st == nil || st.aor != d.aor {
			done()
			sh = s.st.shard(d.aor)
			sh.mu.Lock()
			if st = sh.state(d.aor, false); st == nil {
				// The key outlives the record: don't pin the frame.
				st = a.state(d.aor)
				sh.aors[st.aor] = st
			}
		}
		if d.kind == recBind && cap(st.binds) == 0 {
			st.binds = a.bindSlot()
		} else if d.kind == recMeta && cap(st.metas) == 0 {
			st.metas = a.metaSlot()
		}
		var ok bool
		switch d.kind {
		case recBind:
			ok = s.st.mergeBind(sh, st, d.b, now)
			mine = mine || (ok && d.b.home == s.self)
		case recMeta:
			ok = s.st.mergeMeta(sh, st, d.m, now)
			mine = mine || (ok && d.m.home == s.self)
		}
		if ok {
			changed++
		}
	}
	done()
	return changed
}

func (s *Service) digest(kind uint8) []uint64 {
	d := make([]uint64, len(s.st.shards))
	for i := range s.st.shards {
		sh := &s.st.shards[i]
		sh.mu.Lock()
		if kind == recBind {
			d[i] = sh.bdig
		} else {
			d[i] = sh.mdig
		}
		sh.mu.Unlock()
	}
	return d
}

// snapReader streams the records of shards [next, end) an AoR at a time,
// encoded into one buffer per Next call, so memory stays bounded by about
// maxBytes. Each AoR is encoded under its shard's lock (a lookup or merge
// never sees half of it); the snapshot as a whole is no cut in time, as
// before: changes made after the sync began reach the new node as live
// updates, held until its snapshot ends, and the merge rule makes the
// overlap harmless.
type snapReader struct {
	s      *Service
	kind   uint8
	next   int // next shard to list
	end    int
	cur    int         // shard of states
	states []*aorState // cur's AoRs not yet encoded
	list   []*aorState // states' backing array, reused for every shard
	// reuse makes every Next encode into the same buffer: the records it
	// returned before are dead by then. A snapshot reader may (the cluster
	// copies a Next's records into its chunks before the next call); a
	// bucket reader may not (anti-entropy gathers several calls' records
	// into one frame). Without it, a 1M-binding snapshot wrote about
	// 300 MB of fresh memory, a third of the donor's CPU in page faults.
	reuse bool
	buf   []byte
	// warmed keeps warm's loads from being optimised away (a global
	// would be written by every reader at once).
	warmed int
}

func (s *Service) reader(kind uint8, from, to int) *snapReader {
	if from < 0 || to > len(s.st.shards) || from > to {
		from, to = 0, 0
	}
	return &snapReader{s: s, kind: kind, next: from, end: to}
}

// snapshot is the reader of a whole snapshot, for one sync stream.
func (s *Service) snapshot(kind uint8) *snapReader {
	r := s.reader(kind, 0, len(s.st.shards))
	r.reuse = true
	return r
}

// recOverhead is the cluster's length prefix of each record in a chunk:
// counting it keeps what one Next returns within one chunk (without it,
// every other chunk carried only the few records left over).
const recOverhead = 4

func (r *snapReader) Next(dst [][]byte, maxBytes int) ([][]byte, bool) {
	buf := r.buf[:0]
	if !r.reuse || cap(buf) == 0 {
		buf = make([]byte, 0, maxBytes)
	}
	n := 0
	for {
		if len(r.states) == 0 {
			if r.next >= r.end {
				break
			}
			sh := &r.s.st.shards[r.next]
			sh.mu.Lock()
			r.list = sh.sorted(r.list[:0], r.s.inline)
			r.warmed += warm(r.list, r.kind)
			sh.mu.Unlock()
			r.states, r.cur = r.list, r.next
			r.next++
			continue
		}
		var full bool
		dst, buf, n, full = r.encodeStates(dst, buf, n, maxBytes)
		if full {
			break
		}
	}
	if r.reuse {
		r.buf = buf
	}
	return dst, len(r.states) == 0 && r.next >= r.end
}

// warm reads what encoding states will read, AoR by AoR in tight loops:
// the memory of a million AoRs is scattered, and encoding them one after
// the other waited for each cache miss in turn (about half the donor's
// CPU in a 1M-binding sync). Here the loads of the next AoRs do not wait
// for each other. Called under the shard's lock.
func warm(states []*aorState, kind uint8) int {
	x := 0
	for _, st := range states {
		x += len(st.binds) + len(st.metas) + len(st.aor)
	}
	for _, st := range states {
		if len(st.aor) > 0 {
			x += int(st.aor[0])
		}
		if kind == recBind {
			for j := range st.binds {
				if b := &st.binds[j]; len(b.enc) > 0 {
					x += int(b.enc[0])
				}
			}
		} else {
			for j := range st.metas {
				x += len(st.metas[j].claims)
			}
		}
	}
	return x
}

// encodeStates encodes the current shard's AoRs, whole, while they fit in
// maxBytes (n bytes are already used); the first AoR of a call always
// goes. full reports that the next one did not fit.
func (r *snapReader) encodeStates(dst [][]byte, buf []byte, n, maxBytes int) ([][]byte, []byte, int, bool) {
	sh := &r.s.st.shards[r.cur]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for len(r.states) > 0 {
		st := r.states[0]
		size, count := 0, 0
		if r.kind == recBind {
			for j := range st.binds {
				size += bindSize(st.aor, &st.binds[j])
			}
			count = len(st.binds)
		} else {
			for j := range st.metas {
				size += metaSize(st.aor, &st.metas[j])
			}
			count = len(st.metas)
		}
		need := size + recOverhead*count
		if n > 0 && n+need > maxBytes {
			return dst, buf, n, true
		}
		if size > cap(buf)-len(buf) {
			// Only the first AoR of a call can get here (the buffer holds
			// maxBytes): a bigger one gets a buffer of its own.
			buf = make([]byte, 0, size)
		}
		w := wire.Writer{B: buf}
		for j := 0; j < count; j++ {
			at := len(w.B)
			if r.kind == recBind {
				encodeBind(&w, st.aor, &st.binds[j])
			} else {
				encodeMeta(&w, st.aor, &st.metas[j])
			}
			dst = append(dst, w.B[at:len(w.B):len(w.B)])
		}
		buf = w.B
		n += need
		r.states = r.states[1:]
	}
	return dst, buf, n, false
}
