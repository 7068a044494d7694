package location

import (
	"context"
	"hash/maphash"
	"io"
	"log/slog"
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
// with a per-shard expiry heap. See rec for how a binding is packed.
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

type shard struct {
	mu   sync.Mutex
	aors map[string]*aorEntry
	heap expiryHeap
	_    [24]byte // keep shards on separate cache lines
}

// aorEntry is one AoR's bindings plus the time of its live heap entry
// (0: none). See expiryHeap for the invariant. The map holds pointers so an
// update never reassigns the key: Go overwrites a string key on assignment,
// which would pin the caller's buffer (often a whole SIP message) or keep a
// second copy of the AoR alive in the heap entry.
type aorEntry struct {
	aor   string // the map key, shared with heap entries
	recs  []rec
	sched int64
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

// NewMemory returns an empty in-memory store.
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
	for i := range m.shards {
		m.shards[i].aors = make(map[string]*aorEntry)
	}
	return m
}

var _ Store = (*Memory)(nil)

func (m *Memory) shard(aor string) *shard {
	return &m.shards[maphash.String(m.seed, aor)%numShards]
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
	sh := m.shard(req.AoR)
	sh.mu.Lock()
	defer sh.mu.Unlock()

	e := sh.aors[req.AoR]
	var stored []rec
	if e != nil {
		stored = e.recs
	}
	cur := make([]Binding, 0, len(stored))
	for i := range stored {
		cur = append(cur, stored[i].decode(req.AoR, &m.intern))
	}
	next, res, err := Apply(cur, req)
	if err != nil {
		return nil, err
	}
	recs := make([]rec, len(next))
	for i := range next {
		if recs[i], err = encode(&next[i], &m.intern); err != nil {
			return nil, err
		}
	}
	now := req.Now.UnixNano()
	for i := range stored {
		if stored[i].expires <= now {
			m.stats.expired.Add(1)
			if m.onExpire != nil {
				m.onExpire(cur[i])
			}
		}
	}
	if e == nil {
		if len(recs) == 0 {
			return res, nil // nothing stored, nothing changed
		}
		e = &aorEntry{aor: strings.Clone(req.AoR)} // don't pin the caller's buffer
		sh.aors[e.aor] = e
		m.aors.Add(1)
	}
	m.n.Add(int64(len(recs) - len(stored)))
	e.recs = recs
	m.reschedule(sh, e)
	if m.onChange != nil {
		m.onChange(e.aor, slices.Clone(res.Bindings))
	}
	return res, nil
}

// reschedule deletes the AoR if it has no bindings left, else keeps the
// heap invariant: the AoR has a live entry no later than its earliest
// expiry.
func (m *Memory) reschedule(sh *shard, e *aorEntry) {
	if len(e.recs) == 0 {
		delete(sh.aors, e.aor)
		m.aors.Add(-1)
		return
	}
	first := e.recs[0].expires
	for i := range e.recs {
		first = min(first, e.recs[i].expires)
	}
	if e.sched != 0 && e.sched <= first {
		return // the live entry fires early enough
	}
	e.sched = first
	sh.heap.push(expiryEntry{at: first, aor: e.aor})
	if len(sh.heap) > 2*len(sh.aors)+64 {
		compact(sh)
	}
}

// compact rebuilds a shard's heap from its live entries, dropping stale
// ones. Stale entries come from AoRs that were deleted, or whose earliest
// expiry moved earlier, before their entry fired.
func compact(sh *shard) {
	h := sh.heap[:0]
	for _, e := range sh.aors {
		h = append(h, expiryEntry{at: e.sched, aor: e.aor})
	}
	clear(sh.heap[len(h):])
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
	sh := m.shard(aor)
	sh.mu.Lock()
	var recs []rec
	if e := sh.aors[aor]; e != nil {
		recs = e.recs
	}
	out := make([]Binding, 0, len(recs))
	for i := range recs {
		if recs[i].expires > now {
			out = append(out, recs[i].decode(aor, &m.intern))
		}
	}
	sh.mu.Unlock()
	SortBindings(out)
	return out, nil
}

// Remove implements Store. Removing a binding that is not there is not an
// error: the caller (keepalive failure, home moved) wants it gone.
func (m *Memory) Remove(ctx context.Context, aor, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := m.shard(aor)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.aors[aor]
	if e == nil {
		return nil
	}
	i := slices.IndexFunc(e.recs, func(r rec) bool { return r.key() == key })
	if i < 0 {
		return nil
	}
	e.recs = slices.Delete(e.recs, i, i+1)
	m.n.Add(-1)
	m.reschedule(sh, e)
	m.changed(e.aor, e.recs)
	return nil
}

// changed runs the OnChange hook with the decoded, sorted bindings.
func (m *Memory) changed(aor string, recs []rec) {
	if m.onChange == nil {
		return
	}
	bs := make([]Binding, len(recs))
	for i := range recs {
		bs[i] = recs[i].decode(aor, &m.intern)
	}
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
	for i := range m.shards {
		sh := &m.shards[i]
		now := m.clock().UnixNano()
		type item struct {
			aor string
			bs  []Binding
		}
		sh.mu.Lock()
		var items []item
		if !natedOnly {
			items = make([]item, 0, len(sh.aors))
		}
		for _, e := range sh.aors {
			var bs []Binding
			for j := range e.recs {
				if e.recs[j].expires > now && (!natedOnly || e.recs[j].nated) {
					bs = append(bs, e.recs[j].decode(e.aor, &m.intern))
				}
			}
			if len(bs) > 0 {
				SortBindings(bs)
				items = append(items, item{e.aor, bs})
			}
		}
		sh.mu.Unlock()
		for _, it := range items {
			if !fn(it.aor, it.bs) {
				return
			}
		}
	}
}
