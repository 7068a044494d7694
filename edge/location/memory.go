package location

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// numShards spreads AoRs over independent locks so that concurrent
// REGISTERs for different users rarely contend, and bounds the work one
// reaper pass does under a lock to about 1/256 of what is due.
const numShards = 256

// DefaultResolution is how often Run reaps expired bindings. A binding can
// outlive its expiry in storage by up to this much, never in Lookup.
const DefaultResolution = time.Second

// Memory is the single-node Store: bindings in RAM, sharded by AoR hash,
// with a per-shard expiry heap. Each AoR is one blob (see record.go) in the
// shard's off-heap arena; the Go heap holds only the shard's index, slot
// table and heap, all pointer-free.
//
// Hooks (OnChange, OnExpire) run inside the AoR's shard lock, in the order
// the changes were made, so a replication layer sees each AoR's history in
// order. They must be quick (enqueue, count) and must not call the Memory.
type Memory struct {
	shards [numShards]shard
	seed   maphash.Seed
	intern interner
	n      atomic.Int64 // stored bindings, for Len
	aors   atomic.Int64 // stored AoRs
	stats  memStats

	clock      func() time.Time
	resolution time.Duration
	onExpire   func(Binding)
	onChange   func(aor string, bindings []Binding)
	log        *slog.Logger
}

// shard is a lock with the AoRs under it. An AoR has a slot for as long as
// it has bindings: slots[slot] is its blob (0: the slot is free), and the
// slot number, unlike the blob, never moves, so heap entries name it.
type shard struct {
	mu        sync.Mutex
	idx       index
	slots     []ref // slot → blob; slots[0] unused
	freeSlots []uint32
	heap      expiryHeap
	ar        *arena // separate object: the Memory's cleanup unmaps it
	scratch   []byte // records being built, reused under mu
}

type memStats struct {
	visited atomic.Uint64
	expired atomic.Uint64
}

// MemoryStats is a snapshot of the store's counters, for metrics.
type MemoryStats struct {
	Bindings    int    // stored bindings (including expired not yet reaped)
	AoRs        int    // AoRs with at least one stored binding
	HeapEntries int    // live and stale expiry entries (O(shards) to count)
	Visited     uint64 // heap entries the reaper popped, ever
	Expired     uint64 // bindings removed because they expired, ever
	// ArenaBytes is the off-heap memory carved for blobs: in use plus the
	// free lists. It does not shrink (freed blocks are reused, not
	// returned to the OS), so it is the arena's high-water mark in RSS.
	ArenaBytes int64
	// ArenaInUse is the part of ArenaBytes in live blobs.
	ArenaInUse int64
	// LargeBytes is blobs too large for the arena's classes (kilobytes of
	// Path), kept on the Go heap instead.
	LargeBytes int64
}

// Option configures a Memory.
type Option func(*Memory)

// WithClock sets the time source (default time.Now). Tests inject a fake.
func WithClock(now func() time.Time) Option { return func(m *Memory) { m.clock = now } }

// WithResolution sets how often Run reaps (default DefaultResolution).
func WithResolution(d time.Duration) Option { return func(m *Memory) { m.resolution = d } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(m *Memory) { m.log = l } }

// OnExpire registers a hook called for every binding removed because it
// expired (by the reaper, or dropped by a Save that found it expired).
func OnExpire(fn func(Binding)) Option { return func(m *Memory) { m.onExpire = fn } }

// OnChange registers a hook called after every change to an AoR (Save,
// Remove, expiry) with the AoR and all its bindings now stored (empty: the
// AoR is gone). The slice is the hook's to keep. The replication layer
// uses it to stream changes.
func OnChange(fn func(aor string, bindings []Binding)) Option {
	return func(m *Memory) { m.onChange = fn }
}

// NewMemory returns an empty in-memory store. Its arena is unmapped when
// the Memory is garbage collected.
func NewMemory(opts ...Option) *Memory {
	m := &Memory{
		seed:       maphash.MakeSeed(),
		clock:      time.Now,
		resolution: DefaultResolution,
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(m)
	}
	if m.resolution <= 0 {
		m.resolution = DefaultResolution
	}
	arenas := make([]*arena, numShards)
	for i := range m.shards {
		arenas[i] = new(arena)
		m.shards[i].ar = arenas[i]
		m.shards[i].slots = make([]ref, 1)
	}
	runtime.AddCleanup(m, func(as []*arena) {
		for _, a := range as {
			a.unmap()
		}
	}, arenas)
	return m
}

var _ Store = (*Memory)(nil)

// locate hashes aor to its shard and the hash the shard's index keeps.
func (m *Memory) locate(aor string) (*shard, uint32) {
	h := maphash.String(m.seed, aor)
	return &m.shards[h%numShards], uint32(h >> 32)
}

// find returns the slot of aor (0: not stored).
func (sh *shard) find(h uint32, aor string) uint32 {
	x := &sh.idx
	if len(x.ents) == 0 {
		return 0
	}
	mask := uint32(len(x.ents) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := x.ents[i]
		if e.slot == 0 {
			return 0
		}
		if e.h == h && string(blobAoR(sh.blob(e.slot))) == aor {
			return e.slot
		}
	}
}

// blob is the arena bytes of a live slot's blob: valid under the lock,
// until the slot changes.
func (sh *shard) blob(slot uint32) []byte {
	b := sh.ar.bytes(sh.slots[slot])
	return b[:blobLen(b)]
}

// snapshot copies a live slot's blob into Go memory, for decoding.
func (sh *shard) snapshot(slot uint32) string { return string(sh.blob(slot)) }

// put replaces the blob of slot (0: a new AoR) with aor and count records
// (payload), then keeps the heap invariant; sched is the time of the AoR's
// live heap entry (0: none). count 0 deletes the AoR. On an error nothing
// changed.
func (m *Memory) put(sh *shard, slot, h uint32, aor string, sched int64, count int, payload []byte) error {
	if count == 0 {
		if slot != 0 {
			sh.ar.release(sh.slots[slot])
			sh.slots[slot] = 0
			sh.freeSlots = append(sh.freeSlots, slot)
			sh.idx.remove(h, slot)
			m.aors.Add(-1)
		}
		return nil
	}
	if len(aor) > maxField {
		return ErrInvalid
	}
	size := hdrSize + len(aor) + len(payload)
	r, b, err := sh.ar.alloc(size)
	if err != nil {
		return err
	}
	if slot == 0 {
		if k := len(sh.freeSlots); k > 0 {
			slot = sh.freeSlots[k-1]
			sh.freeSlots = sh.freeSlots[:k-1]
		} else {
			slot = uint32(len(sh.slots))
			sh.slots = append(sh.slots, 0)
		}
		sh.idx.insert(h, slot)
		m.aors.Add(1)
	} else {
		sh.ar.release(sh.slots[slot])
	}
	sh.slots[slot] = r
	le := binary.LittleEndian
	b[1] = 0
	le.PutUint16(b[hAoRLen:], uint16(len(aor)))
	le.PutUint32(b[hSlot:], slot)
	le.PutUint64(b[hSched:], uint64(sched))
	le.PutUint32(b[hCount:], uint32(count))
	le.PutUint32(b[hLen:], uint32(size))
	copy(b[hdrSize+copy(b[hdrSize:], aor):], payload)
	m.reschedule(sh, slot, b[:size])
	return nil
}

// keepScratch returns the shard's scratch buffer for reuse unless one
// huge AoR made it large.
func (sh *shard) keepScratch(b []byte) {
	if cap(b) <= maxBlock {
		sh.scratch = b[:0]
	} else {
		sh.scratch = nil
	}
}

// Save implements Store. req.Now is the registrar's clock (the store's clock
// when zero).
func (m *Memory) Save(ctx context.Context, req *SaveRequest) (*SaveResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req == nil || req.AoR == "" {
		return nil, ErrInvalid
	}
	if req.Now.IsZero() {
		r := *req
		r.Now = m.clock()
		req = &r
	}
	sh, h := m.locate(req.AoR)
	sh.mu.Lock()
	defer sh.mu.Unlock()

	slot := sh.find(h, req.AoR)
	var snap string
	var cur []Binding
	if slot != 0 {
		snap = sh.snapshot(slot)
		cur = decodeAll(snap, req.AoR, &m.intern, nil)
	}
	next, res, err := Apply(cur, req)
	if err != nil {
		return nil, err
	}
	payload := sh.scratch[:0]
	for i := range next {
		if payload, err = appendRec(payload, &next[i], &m.intern); err != nil {
			sh.keepScratch(payload)
			return nil, err
		}
	}
	if slot == 0 && len(next) == 0 {
		sh.keepScratch(payload)
		return res, nil // nothing stored, nothing changed
	}
	var sched int64
	if slot != 0 {
		sched = blobSched(snap)
	}
	err = m.put(sh, slot, h, req.AoR, sched, len(next), payload)
	sh.keepScratch(payload)
	if err != nil {
		return nil, err
	}
	now := req.Now.UnixNano()
	for i := range cur {
		if nanos(cur[i].Expires) <= now {
			m.stats.expired.Add(1)
			if m.onExpire != nil {
				m.onExpire(cur[i])
			}
		}
	}
	m.n.Add(int64(len(next) - len(cur)))
	if m.onChange != nil {
		aor := strings.Clone(req.AoR) // don't pin the caller's buffer
		if snap != "" {
			aor = blobAoR(snap)
		}
		m.onChange(aor, slices.Clone(res.Bindings))
	}
	return res, nil
}

// decodeAll decodes every record of a snapshot for which keep (nil: all)
// says yes.
func decodeAll(snap, aor string, in *interner, keep func(off int) bool) []Binding {
	n := blobCount(snap)
	out := make([]Binding, 0, n)
	off := firstRec(snap)
	for range n {
		if keep == nil || keep(off) {
			out = append(out, decodeRec(snap, off, aor, in))
		}
		off += recSize(snap, off)
	}
	return out
}

// reschedule keeps the heap invariant for a live slot whose blob is b: the
// AoR has a live entry no later than its earliest expiry.
func (m *Memory) reschedule(sh *shard, slot uint32, b []byte) {
	first := int64(0)
	off := firstRec(b)
	for i := range blobCount(b) {
		if e := recExpires(b, off); i == 0 || e < first {
			first = e
		}
		off += recSize(b, off)
	}
	if sched := blobSched(b); sched != 0 && sched <= first {
		return // the live entry fires early enough
	}
	binary.LittleEndian.PutUint64(b[hSched:], uint64(first))
	sh.heap.push(expiryEntry{at: first, slot: slot})
	if len(sh.heap) > 2*sh.idx.n+64 {
		compact(sh)
	}
}

// compact rebuilds a shard's heap from its live entries, dropping stale
// ones. Stale entries come from AoRs that were deleted, or whose earliest
// expiry moved earlier, before their entry fired.
func compact(sh *shard) {
	h := sh.heap[:0]
	for slot, r := range sh.slots {
		if r != 0 {
			h = append(h, expiryEntry{at: blobSched(sh.blob(uint32(slot))), slot: uint32(slot)})
		}
	}
	h.init()
	sh.heap = h
}

// Lookup implements Store: the unexpired bindings of aor, by the store's
// clock, highest q first. Expired bindings are filtered here, so they are
// never returned even if the reaper has not run yet.
func (m *Memory) Lookup(ctx context.Context, aor string) ([]Binding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.clock().UnixNano()
	sh, h := m.locate(aor)
	sh.mu.Lock()
	var snap string
	if slot := sh.find(h, aor); slot != 0 {
		snap = sh.snapshot(slot)
	}
	sh.mu.Unlock()
	if snap == "" {
		return []Binding{}, nil
	}
	out := decodeAll(snap, aor, &m.intern, func(off int) bool { return recExpires(snap, off) > now })
	SortBindings(out)
	return out, nil
}

// Remove implements Store. Removing a binding that is not there is not an
// error: the caller (keepalive failure, home moved) wants it gone.
func (m *Memory) Remove(ctx context.Context, aor, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh, h := m.locate(aor)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot := sh.find(h, aor)
	if slot == 0 {
		return nil
	}
	snap := sh.snapshot(slot)
	var buf [128]byte
	payload := sh.scratch[:0]
	gone := -1 // offset of the removed record
	off := firstRec(snap)
	for range blobCount(snap) {
		size := recSize(snap, off)
		if gone < 0 && keyAt(buf[:0], snap, off) == key {
			gone = off
		} else {
			payload = append(payload, snap[off:off+size]...)
		}
		off += size
	}
	if gone < 0 {
		sh.keepScratch(payload)
		return nil
	}
	err := m.put(sh, slot, h, blobAoR(snap), blobSched(snap), blobCount(snap)-1, payload)
	sh.keepScratch(payload)
	if err != nil {
		return err
	}
	m.n.Add(-1)
	m.changed(blobAoR(snap), snap, func(o int) bool { return o != gone })
	return nil
}

// keyAt is Binding.Key of the record at off without decoding it all.
func keyAt(buf []byte, snap string, off int) string {
	p := off + recFixed
	contact := snap[p : p+int(le16(snap, off+rLens+2*fContact))]
	p += len(contact) + int(le16(snap, off+rLens+2*fCallID))
	inst := snap[p : p+int(le16(snap, off+rLens+2*fInstance))]
	return string(AppendKey(buf, inst, int(int32(le32(snap, off+rRegID))), contact))
}

// changed runs the OnChange hook with the records of snap that keep
// accepts, decoded and sorted.
func (m *Memory) changed(aor, snap string, keep func(off int) bool) {
	if m.onChange == nil {
		return
	}
	bs := decodeAll(snap, aor, &m.intern, keep)
	SortBindings(bs)
	m.onChange(aor, bs)
}

// Len implements Store: stored bindings, including expired ones the reaper
// has not removed yet. O(1).
func (m *Memory) Len() int { return int(m.n.Load()) }

// Stats returns the store's counters.
func (m *Memory) Stats() MemoryStats {
	s := MemoryStats{
		Bindings: m.Len(),
		AoRs:     int(m.aors.Load()),
		Visited:  m.stats.visited.Load(),
		Expired:  m.stats.expired.Load(),
	}
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		s.HeapEntries += len(sh.heap)
		s.ArenaBytes += sh.ar.carved
		s.ArenaInUse += sh.ar.inUse
		s.LargeBytes += sh.ar.lgUse
		sh.mu.Unlock()
	}
	return s
}

// Range calls fn for every AoR with its unexpired bindings, one shard at a
// time, until fn returns false. It is a consistent snapshot per AoR, not
// across AoRs: the replication layer's full sync uses it and relies on
// OnChange for what changes meanwhile. fn runs without locks held.
func (m *Memory) Range(fn func(aor string, bindings []Binding) bool) {
	m.rangeWhere(false, fn)
}

// RangeNATed is Range over the bindings marked NATed only: the keepalive
// scheduler scans every second, and decoding every binding of a large
// store to keep the few NATed ones dominated the CPU of a busy registrar.
func (m *Memory) RangeNATed(fn func(aor string, bindings []Binding) bool) {
	m.rangeWhere(true, fn)
}

func (m *Memory) rangeWhere(natedOnly bool, fn func(aor string, bindings []Binding) bool) {
	var snaps []string
	for i := range m.shards {
		sh := &m.shards[i]
		now := m.clock().UnixNano()
		want := func(b string, off int) bool {
			return recExpires(b, off) > now && (!natedOnly || recNATed(b, off))
		}
		snaps = snaps[:0]
		sh.mu.Lock()
		for slot, r := range sh.slots {
			if r == 0 {
				continue
			}
			b := sh.blob(uint32(slot))
			off := firstRec(b)
			for range blobCount(b) {
				if recExpires(b, off) > now && (!natedOnly || recNATed(b, off)) {
					snaps = append(snaps, string(b)) // copied: decoded after unlocking
					break
				}
				off += recSize(b, off)
			}
		}
		sh.mu.Unlock()
		for _, snap := range snaps {
			aor := blobAoR(snap)
			bs := decodeAll(snap, aor, &m.intern, func(off int) bool { return want(snap, off) })
			SortBindings(bs)
			if !fn(aor, bs) {
				return
			}
		}
	}
}
