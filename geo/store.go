package geo

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// store holds what this node knows: the bindings of its region (its own,
// homed here, and its partners' replicas; every region's with
// replicate_contacts_cross_region) and the metadata of every AoR. It is
// sharded by AoR; shard i is also anti-entropy bucket i, so a bucket's
// digest is kept up to date under the shard's lock and Digest costs
// nothing.
//
// Everything about an AoR happens under its shard's lock, in order: the
// registrar's rules (location.Apply), merges from other nodes, expiry,
// and queueing the resulting replication (so a partner sees each AoR's
// changes in the order they were made).
type store struct {
	self   uint32
	grace  int64 // MoveGrace in ns
	shards []shard

	// Counters for metrics: records held, by kind.
	home, replica, bindTombs, metaLive, metaTombs atomic.Int64
}

type shard struct {
	mu   sync.Mutex
	aors map[string]*aorState
	heap schedHeap
	bdig uint64 // XOR of the bucket's binding record hashes
	mdig uint64 // XOR of its metadata record hashes
	// nated counts the shard's NATed binding records, so that the
	// keepalive listing (Service.Bindings) skips shards without any
	// instead of walking every AoR once a second.
	nated int
	_     [24]byte
}

// aorState is everything held about one AoR. Slices stay small: a few
// bindings and a home or two.
type aorState struct {
	aor   string
	binds []brec
	metas []mrec
	sched int64 // time of the live heap entry (0: none)
}

func newStore(self uint32, buckets int, grace int64) *store {
	s := &store{self: self, grace: grace, shards: make([]shard, buckets)}
	for i := range s.shards {
		s.shards[i].aors = map[string]*aorState{}
	}
	return s
}

func (s *store) shard(aor string) *shard { return &s.shards[bucketOf(aor, len(s.shards))] }

// state returns the AoR's state, creating it when create is set.
func (sh *shard) state(aor string, create bool) *aorState {
	st := sh.aors[aor]
	if st == nil && create {
		st = &aorState{aor: aor}
		sh.aors[aor] = st
	}
	return st
}

// sorted appends the shard's AoRs to out; in a fixed order when ordered, so that
// what is built from them (snapshots, republished metadata) does not
// depend on map order: a simulation seed then replays exactly. Nothing
// else needs an order (every merge is order-free), and sorting was a good
// part of a 1M-binding snapshot's cost, so a real node does not. The
// order is by a hash of the AoR (then the AoR): comparing strings that
// share their first bytes through a pointer each cost more.
func (sh *shard) sorted(out []*aorState, ordered bool) []*aorState {
	if !ordered {
		for _, st := range sh.aors {
			out = append(out, st)
		}
		return out
	}
	type keyed struct {
		h  uint64
		st *aorState
	}
	ks := make([]keyed, 0, len(sh.aors))
	for aor, st := range sh.aors {
		ks = append(ks, keyed{fnvStr(offset64, aor), st})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if a.h != b.h {
			return cmp.Compare(a.h, b.h)
		}
		return strings.Compare(a.st.aor, b.st.aor)
	})
	for i := range ks {
		out = append(out, ks[i].st)
	}
	return out
}

func (st *aorState) findBind(home uint32, key string) int {
	for i := range st.binds {
		if st.binds[i].home == home && st.binds[i].key == key {
			return i
		}
	}
	return -1
}

func (st *aorState) findMeta(home uint32) int {
	for i := range st.metas {
		if st.metas[i].home == home {
			return i
		}
	}
	return -1
}

func (st *aorState) meta(home uint32) *mrec {
	if i := st.findMeta(home); i >= 0 {
		return &st.metas[i]
	}
	return nil
}

// stamp is the version time of a write by this node at now: never before
// any version this node wrote for the AoR, so its own writes stay ordered
// even if the clock steps back.
func (st *aorState) stamp(self uint32, now int64) int64 {
	t := now
	for i := range st.binds {
		if r := &st.binds[i]; r.ver.Node == self && r.ver.T >= t {
			t = r.ver.T + 1
		}
	}
	for i := range st.metas {
		if m := &st.metas[i]; m.ver.Node == self && m.ver.T >= t {
			t = m.ver.T + 1
		}
	}
	return t
}

// counters

func (s *store) count(r *brec, d int64) {
	switch {
	case r.dead:
		s.bindTombs.Add(d)
	case r.home == s.self:
		s.home.Add(d)
	default:
		s.replica.Add(d)
	}
}

func (s *store) countMeta(m *mrec, d int64) {
	if m.dead {
		s.metaTombs.Add(d)
	} else {
		s.metaLive.Add(d)
	}
}

// setBind stores r at index i (-1: append), keeping digest and counters.
func (s *store) setBind(sh *shard, st *aorState, i int, r brec) {
	r.h = r.hash(st.aor)
	if i < 0 {
		old := st.binds
		st.binds = append(st.binds, r)
		if cap(old) > 0 && len(old) == cap(old) {
			// Moved: what stays behind (a slot of a recAlloc slab) must not
			// keep the records' strings alive.
			clear(old)
		}
	} else {
		old := &st.binds[i]
		sh.bdig ^= old.h
		s.count(old, -1)
		if old.nated {
			sh.nated--
		}
		st.binds[i] = r
	}
	sh.bdig ^= r.h
	s.count(&r, 1)
	if r.nated {
		sh.nated++
	}
}

func (s *store) delBind(sh *shard, st *aorState, i int) {
	old := &st.binds[i]
	sh.bdig ^= old.h
	s.count(old, -1)
	if old.nated {
		sh.nated--
	}
	st.binds = slices.Delete(st.binds, i, i+1)
}

func (s *store) setMeta(sh *shard, st *aorState, i int, m mrec) {
	m.h = m.hash(st.aor)
	if i < 0 {
		old := st.metas
		st.metas = append(st.metas, m)
		if cap(old) > 0 && len(old) == cap(old) {
			clear(old) // moved, as in setBind
		}
	} else {
		old := &st.metas[i]
		sh.mdig ^= old.h
		s.countMeta(old, -1)
		st.metas[i] = m
	}
	sh.mdig ^= m.h
	s.countMeta(&m, 1)
}

func (s *store) delMeta(sh *shard, st *aorState, i int) {
	old := &st.metas[i]
	sh.mdig ^= old.h
	s.countMeta(old, -1)
	st.metas = slices.Delete(st.metas, i, i+1)
}

// kill turns a live binding record into a tombstone.
func kill(r brec) brec {
	r.horizon = max(r.horizon, r.exp)
	r.dead, r.enc, r.nated = true, "", false
	return r
}

// mergeBind applies the merge rule to one incoming binding record and
// reports whether anything changed. Newest version wins; for equal
// versions a tombstone beats the live record (both sides then agree); the
// horizon only grows, so the tombstone of a binding outlives every copy of
// it.
func (s *store) mergeBind(sh *shard, st *aorState, in brec, now int64) bool {
	if !in.dead && in.exp <= now {
		in = kill(in)
	}
	i := st.findBind(in.home, in.key)
	if i < 0 {
		if in.dead && in.horizon <= now {
			return false // nothing to remember
		}
		s.setBind(sh, st, -1, in)
		return true
	}
	e := &st.binds[i]
	switch c := in.ver.cmp(e.ver); {
	case c > 0:
		in.horizon = max(in.horizon, e.horizon)
		if in.dead && in.horizon <= now {
			s.delBind(sh, st, i)
		} else {
			s.setBind(sh, st, i, in)
		}
		return true
	case c == 0 && in.dead && !e.dead:
		t := kill(*e)
		t.horizon = max(t.horizon, in.horizon)
		s.setBind(sh, st, i, t)
		return true
	default:
		e.horizon = max(e.horizon, in.horizon)
		return false
	}
}

// mergeMeta is mergeBind for metadata.
func (s *store) mergeMeta(sh *shard, st *aorState, in mrec, now int64) bool {
	if !in.dead && in.expires <= now {
		in.dead = true
	}
	in.horizon = max(in.horizon, in.expires)
	i := st.findMeta(in.home)
	if i < 0 {
		if in.dead && in.horizon <= now {
			return false
		}
		s.setMeta(sh, st, -1, in)
		return true
	}
	e := &st.metas[i]
	switch c := in.ver.cmp(e.ver); {
	case c > 0:
		in.horizon = max(in.horizon, e.horizon)
		if in.dead && in.horizon <= now {
			s.delMeta(sh, st, i)
		} else {
			if in.region == "" {
				in.region = e.region
			}
			s.setMeta(sh, st, i, in)
		}
		return true
	case c == 0 && in.dead && !e.dead:
		t := *e
		t.dead = true
		t.horizon = max(t.horizon, in.horizon)
		s.setMeta(sh, st, i, t)
		return true
	default:
		e.horizon = max(e.horizon, in.horizon)
		return false
	}
}

// supersededBy reports whether a newer registration of the same UA at
// another home (a claim in that home's metadata) makes r stale, and the
// newest such claim's version. The binding stays usable until that
// registration's time plus the move grace.
func (s *store) supersededBy(st *aorState, r *brec) (version, bool) {
	var best version
	found := false
	for i := range st.metas {
		m := &st.metas[i]
		if m.home == r.home {
			continue
		}
		for _, c := range m.claims {
			if c.H != r.ch {
				continue
			}
			v := version{T: c.T, CSeq: c.CSeq, Node: m.home}
			if v.newer(r.ver) && (!found || v.newer(best)) {
				best, found = v, true
			}
		}
	}
	return best, found
}

// usable reports whether a binding record may be returned by a lookup at
// now: live, unexpired, and not superseded for longer than the grace.
func (s *store) usable(st *aorState, r *brec, now int64) bool {
	if r.dead || r.exp <= now {
		return false
	}
	if v, ok := s.supersededBy(st, r); ok && v.T+s.grace <= now {
		return false
	}
	return true
}

// homeMeta computes the metadata entry of home for the AoR from the
// home's binding records: live until the latest expiry of its usable
// bindings, claiming every UA it holds or held (tombstones until their
// horizon) at the version it had it, so that the UA's older bindings at
// other homes are retired (moving home; an unregister at the new home
// retires the old binding too).
func (s *store) homeMeta(st *aorState, home uint32, region string, ver version, now int64) mrec {
	m := mrec{home: home, region: region, ver: ver, dead: true}
	if old := st.meta(home); old != nil {
		m.horizon = old.horizon
	}
	for i := range st.binds {
		r := &st.binds[i]
		if r.home != home {
			continue
		}
		if s.usable(st, r, now) {
			m.dead = false
			m.expires = max(m.expires, r.exp)
		}
		m.horizon = max(m.horizon, r.horizon)
		m.claims = append(m.claims, claim{H: r.ch, T: r.cver.T, CSeq: r.cver.CSeq})
	}
	// One claim per UA: the newest dominates the older ones.
	slices.SortFunc(m.claims, func(a, b claim) int {
		if a.H != b.H {
			return cmp.Compare(a.H, b.H)
		}
		return version{T: b.T, CSeq: b.CSeq}.cmp(version{T: a.T, CSeq: a.CSeq})
	})
	m.claims = slices.CompactFunc(m.claims, func(a, b claim) bool { return a.H == b.H })
	if len(m.claims) > maxClaims {
		m.claims = m.claims[:maxClaims]
	}
	m.horizon = max(m.horizon, m.expires)
	return m
}

// sweep expires, purges and retires what is due in one AoR at now. It
// returns the tombstones of the bindings it retired because their UA moved
// home (expiry needs no message: every node expires at the same time).
func (s *store) sweep(sh *shard, st *aorState, now int64) (retired []brec) {
	for i := 0; i < len(st.binds); {
		r := &st.binds[i]
		switch {
		case r.dead && r.horizon <= now:
			s.delBind(sh, st, i)
			continue
		case !r.dead && r.exp <= now:
			if max(r.horizon, r.exp) <= now {
				s.delBind(sh, st, i)
				continue
			}
			s.setBind(sh, st, i, kill(*r))
		case !r.dead:
			if v, ok := s.supersededBy(st, r); ok && v.T+s.grace <= now {
				// Moved home: every node of the region retires it at the
				// same version, so they agree without a message.
				t := kill(*r)
				t.ver = v
				s.setBind(sh, st, i, t)
				retired = append(retired, t)
			}
		}
		i++
	}
	for i := 0; i < len(st.metas); {
		m := &st.metas[i]
		switch {
		case m.dead && m.horizon <= now:
			s.delMeta(sh, st, i)
			continue
		case !m.dead && m.expires <= now:
			if m.horizon <= now {
				s.delMeta(sh, st, i)
				continue
			}
			t := *m
			t.dead = true
			s.setMeta(sh, st, i, t)
		}
		i++
	}
	return retired
}

// next is the earliest time something about the AoR changes by itself: an
// expiry, a horizon, or a superseded binding's grace running out.
func (s *store) next(st *aorState) int64 {
	var at int64
	upd := func(t int64) {
		if t > 0 && (at == 0 || t < at) {
			at = t
		}
	}
	for i := range st.binds {
		r := &st.binds[i]
		if r.dead {
			upd(r.horizon)
			continue
		}
		upd(r.exp)
		if v, ok := s.supersededBy(st, r); ok {
			upd(v.T + s.grace)
		}
	}
	for i := range st.metas {
		m := &st.metas[i]
		if m.dead {
			upd(m.horizon)
		} else {
			upd(m.expires)
		}
	}
	return at
}

// reschedule deletes an empty AoR, else makes sure its heap entry fires no
// later than its next change (the lazy-deletion scheme of location.Memory:
// a stale entry is skipped when popped).
func (s *store) reschedule(sh *shard, st *aorState) {
	if len(st.binds) == 0 && len(st.metas) == 0 {
		delete(sh.aors, st.aor)
		return
	}
	at := s.next(st)
	if at == 0 || (st.sched != 0 && st.sched <= at) {
		return
	}
	st.sched = at
	sh.heap.push(schedEntry{at: at, aor: st.aor})
	if len(sh.heap) > 2*len(sh.aors)+64 {
		h := sh.heap[:0]
		for _, e := range sh.aors {
			if e.sched != 0 {
				h = append(h, schedEntry{at: e.sched, aor: e.aor})
			}
		}
		clear(sh.heap[len(h):])
		h.init()
		sh.heap = h
	}
}

// due pops the AoRs of a shard whose next change is at or before now.
func (sh *shard) due(now int64, fn func(st *aorState)) {
	for len(sh.heap) > 0 && sh.heap[0].at <= now {
		top := sh.heap.pop()
		st := sh.aors[top.aor]
		if st == nil || st.sched != top.at {
			continue
		}
		st.sched = 0
		fn(st)
	}
}

// schedHeap is a min-heap of AoRs by next change.
type schedHeap []schedEntry

type schedEntry struct {
	at  int64
	aor string
}

func (h *schedHeap) push(e schedEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

func (h *schedHeap) pop() schedEntry {
	old := *h
	n := len(old) - 1
	top := old[0]
	old[0] = old[n]
	old[n] = schedEntry{}
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
	return top
}

func (h schedHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h schedHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			c = r
		}
		if h[i].at <= h[c].at {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

func (h schedHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}
