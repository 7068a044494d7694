package cps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Message types of the "cps" capability.
//
// ONLY APPEND TO THIS LIST! The numeric values are part of the protocol.
const (
	// MsgCounters carries one node's changed counters and rate changes
	// for one interval (the body Flush returns).
	MsgCounters wire.MsgType = 1
)

// CapName is the capability name the Service registers.
const CapName = "cps"

// Body format of MsgCounters (network byte order; uv = unsigned varint):
//
//	u8   format (1)
//	u32  slot length in ms: frames from a node with another slot are refused
//	u64  sender's current slot (cluster time / slot)
//	u64  sender's raw clock at sending, unix ns (clock alignment)
//	u16  rate changes, each:
//	       str16 limit name, u64 rate (float64 bits), u64 version time, u32 version node
//	u16  limits, each:
//	       str16 limit name
//	       u8    P: sub-slots of the profiles in this section (0: none)
//	       u32   counters, each:
//	               str16 key ("" for a global limit)
//	               uv    demand: offered calls per slot × 16, as of the frame's slot
//	               uv    slots, each:
//	                       uv age×2 + 1 if a profile follows (age = current slot - slot)
//	                       uv accepted calls
//	                       [P-1]u8 profile of a closed slot: the share of its calls
//	                               accepted by the end of each sub-slot, ×255
//
// Only counters that changed since the previous frame are listed, and of
// each only the slots that may have changed: the one open at the last
// frame (to its final count, with its profile) and the newer ones.
//
// A snapshot record is u32 origin node, u8 flags (1: origin up), and a body
// as above describing the donor's view of the origin's counts.
const (
	format1 uint8 = 1

	// maxBody bounds one frame's body; counters that do not fit wait for
	// the next interval.
	maxBody = 256 << 10
	// snapChunk is the target size of a snapshot record.
	snapChunk = 32 << 10
	// maxSkew refuses frames whose sender's clock is off by more than
	// this: its slots would not line up with anyone's.
	maxSkew = 10 * time.Second
	// demScale is the fixed-point scale of demand on the wire.
	demScale = 16
	maxCount = 1 << 31
)

// Errors returned by Apply and ApplySnapshot. Every refused body is
// counted in Stats (BadFrames or SkewedFrames) and changes nothing.
var (
	ErrMalformed = errors.New("cps: malformed update")
	ErrSlot      = errors.New("cps: sender uses another slot length")
	ErrSkew      = errors.New("cps: sender's clock is too far off")
)

func putUvarint(w *wire.Writer, v uint64) { w.B = binary.AppendUvarint(w.B, v) }

func getUvarint(r *wire.Reader) uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Err, r.B = ErrMalformed, nil
		return 0
	}
	r.B = r.B[n:]
	return v
}

// getStr16 reads a str16 without copying.
func getStr16(r *wire.Reader) []byte {
	n := int(r.U16())
	if r.Err != nil {
		return nil
	}
	if n > len(r.B) {
		r.Err, r.B = wire.ErrShort, nil
		return nil
	}
	b := r.B[:n:n]
	r.B = r.B[n:]
	return b
}

func (l *Limiter) writeHeader(w *wire.Writer, k int64, raw time.Time) {
	w.U8(format1)
	w.U32(uint32(l.slotNs / int64(time.Millisecond)))
	w.U64(uint64(k))
	w.I64(raw.UnixNano())
}

func writeRate(w *wire.Writer, lim *limit) {
	w.String(lim.name)
	w.U64(math.Float64bits(lim.rate))
	w.I64(lim.ver.ts)
	w.U32(lim.ver.node)
}

func encDemand(d float64) uint64 { return uint64(min(d*demScale+0.5, 1<<40)) }

// slotSource gives a slot's count and, for a closed slot, its profile.
type slotSource func(j int64) (uint32, *profile)

// writeSlots writes the non-zero slots in [from, k].
func writeSlots(w *wire.Writer, get slotSource, from, k int64) {
	n := 0
	for j := from; j <= k; j++ {
		if v, _ := get(j); v != 0 {
			n++
		}
	}
	putUvarint(w, uint64(n))
	for j := from; j <= k; j++ {
		v, p := get(j)
		if v == 0 {
			continue
		}
		if j == k {
			p = nil
		}
		age := uint64(k-j) << 1
		if p != nil {
			age |= 1
		}
		putUvarint(w, age)
		putUvarint(w, uint64(v))
		if p != nil {
			w.B = append(w.B, p[:]...)
		}
	}
}

func (c *counter) ownSlots(j int64) (uint32, *profile) { return c.acc.at(j), c.profileOf(j) }

func (p *peerCounts) slots(j int64) (uint32, *profile) {
	v := p.acc.at(j)
	if v == 0 || p.known == nil || !p.known[p.acc.idx(j)] {
		return v, nil
	}
	return v, &p.prof[p.acc.idx(j)]
}

// profSubSlots is a limit's profile resolution on the wire.
func (lim *limit) profSubSlots() uint8 {
	if lim.global != nil {
		return subSlots
	}
	return 0
}

// Flush returns the body of a MsgCounters frame for every peer, or nil
// when none is due. Call it every Config.Interval/5 (FlushTick): a frame
// is due once per Interval, with nothing but its header when nothing
// changed (the peers learn that this node's view is fresh: see
// Limiter.stalled), and early, at most
// every FlushTick, when a global limit's demand on this node has moved by
// a factor of two or more since it was last sent (a burst starting or
// ending): the peers then re-share the capacity within a few ms instead
// of an interval. Flush publishes this node's demand estimates (see
// refresh) and expires idle keys.
func (l *Limiter) Flush() []byte { return l.flush(false) }

// FlushNow is Flush without waiting for the interval: after SetRate, to
// send the change at once.
func (l *Limiter) FlushNow() []byte { return l.flush(true) }

func (l *Limiter) flush(now bool) []byte {
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k, f, ns := l.instant(t)
	l.awake(t.UnixNano(), ns)
	if !now && ns-l.lastFlush < int64(l.cfg.Interval)*9/10 && !l.sharpChange(k, f) {
		return nil
	}
	l.lastFlush = ns
	l.expire(k)
	w := wire.Writer{B: make([]byte, 0, 128)}
	l.writeHeader(&w, k, t)
	nr := 0
	for _, lim := range l.limits {
		if lim.rateDirty {
			nr++
		}
	}
	w.U16(uint16(nr))
	for _, lim := range l.limits {
		if lim.rateDirty {
			writeRate(&w, lim)
			lim.rateDirty = false
		}
	}
	nlAt := len(w.B)
	w.U16(0)
	nl := 0
	for _, lim := range l.limits {
		if len(lim.dirty) == 0 {
			continue
		}
		start := len(w.B)
		w.String(lim.name)
		w.U8(lim.profSubSlots())
		cntAt := len(w.B)
		w.U32(0)
		cnt, keep, i := 0, 0, 0
		for ; i < len(lim.dirty) && len(w.B) < maxBody; i++ {
			c := lim.dirty[i]
			if c.gone || !(c.dirty || c.final) {
				c.queued = false
				continue
			}
			if !c.dirty && c.sentTo == k {
				// Its slot is still open: the final count is not due yet.
				lim.dirty[keep] = c
				keep++
				continue
			}
			c.roll(k)
			c.pub[1], c.pub[0] = c.pub[0], demand{c.demandNow(k, f), k}
			c.pubAt = ns
			c.stale = true
			w.String(c.key)
			putUvarint(&w, encDemand(c.pub[0].v))
			from := max(c.sentTo, k-int64(lim.w)+1)
			writeSlots(&w, c.ownSlots, from, k)
			c.sentTo, c.dirty, c.final = k, false, c.acc.at(k) > 0
			cnt++
			if c.final {
				// Stays queued: its final count (and profile) goes out
				// with the first flush after the slot closes.
				lim.dirty[keep] = c
				keep++
			} else {
				c.queued = false
			}
		}
		n := copy(lim.dirty[keep:], lim.dirty[i:])
		clear(lim.dirty[keep+n:])
		lim.dirty = lim.dirty[:keep+n]
		if cnt == 0 {
			w.B = w.B[:start]
			continue
		}
		binary.BigEndian.PutUint32(w.B[cntAt:], uint32(cnt))
		nl++
	}
	if nr == 0 && nl == 0 && len(l.limits) == 0 {
		return nil
	}
	binary.BigEndian.PutUint16(w.B[nlAt:], uint16(nl))
	l.stats.FramesFlushed++
	l.stats.BytesFlushed += uint64(len(w.B))
	return w.B
}

// FlushTick is how often the caller should call Flush, as a fraction of
// the interval.
func (c *Config) FlushTick() time.Duration { return max(c.Interval/5, time.Millisecond) }

// sharpChange reports whether a global limit's own demand moved by a
// factor of two or more since it was published, by at least 2% of the
// limit's per-slot budget (so that the noise of a quiet node does not
// count).
func (l *Limiter) sharpChange(k int64, f float64) bool {
	for _, lim := range l.limits {
		c := lim.global
		if c == nil || !c.dirty {
			continue
		}
		c.roll(k)
		d, p := c.demandNow(k, f), c.pub[0].at(k)
		if math.Abs(d-p) >= 0.02*lim.bud/float64(lim.w) && (d >= 2*p || p >= 2*d) {
			return true
		}
	}
	return false
}

func (l *Limiter) expire(k int64) {
	for _, lim := range l.limits {
		if lim.keys != nil {
			l.stats.KeysExpired += uint64(lim.keys.expire(k))
		}
	}
}

type rateRec struct {
	name []byte
	rate float64
	ver  version
}

type ctrRec struct {
	lim      *limit
	key      []byte
	dem      float64
	from, to int // slots[from:to]
}

type slotRec struct {
	j    int64
	v    uint32
	prof *profile // nil: none (points into the body)
}

type scratch struct {
	rates []rateRec
	ctrs  []ctrRec
	slots []slotRec
}

// parse decodes a body into l.scratch without changing any state.
func (l *Limiter) parse(body []byte, k int64) (slot, sent int64, err error) {
	sc := &l.scratch
	sc.rates, sc.ctrs, sc.slots = sc.rates[:0], sc.ctrs[:0], sc.slots[:0]
	r := wire.Reader{B: body}
	if f := r.U8(); r.Err == nil && f != format1 {
		return 0, 0, fmt.Errorf("%w: format %d", ErrMalformed, f)
	}
	ms := r.U32()
	slot = int64(r.U64())
	sent = r.I64()
	if r.Err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrMalformed, r.Err)
	}
	if int64(ms)*int64(time.Millisecond) != l.slotNs {
		return 0, 0, fmt.Errorf("%w: %d ms, ours %d ms", ErrSlot, ms, l.slotNs/int64(time.Millisecond))
	}
	if d := slot - k; d > int64(maxSkew)/l.slotNs || -d > int64(maxSkew)/l.slotNs {
		return 0, 0, fmt.Errorf("%w: its slot %d, ours %d", ErrSkew, slot, k)
	}
	nr := int(r.U16())
	for i := 0; i < nr && r.Err == nil; i++ {
		rr := rateRec{name: getStr16(&r)}
		rr.rate = math.Float64frombits(r.U64())
		rr.ver = version{ts: r.I64(), node: r.U32()}
		if r.Err == nil && (!(rr.rate > 0) || rr.rate > 1e9) {
			return 0, 0, fmt.Errorf("%w: rate %v", ErrMalformed, rr.rate)
		}
		sc.rates = append(sc.rates, rr)
	}
	nl := int(r.U16())
	for i := 0; i < nl && r.Err == nil; i++ {
		lim := l.byName[string(getStr16(&r))]
		w := MaxSlotsPerWindow
		if lim != nil {
			w = lim.w
		}
		ps := int(r.U8())
		if ps == 1 || ps > 64 {
			return 0, 0, fmt.Errorf("%w: %d sub-slots", ErrMalformed, ps)
		}
		nc := r.Count(4)
		for c := 0; c < nc && r.Err == nil; c++ {
			cr := ctrRec{lim: lim, key: getStr16(&r)}
			if lim != nil && (lim.keys == nil) != (len(cr.key) == 0) {
				return 0, 0, fmt.Errorf("%w: key %q for limit %q", ErrMalformed, cr.key, lim.name)
			}
			cr.dem = float64(getUvarint(&r)) / demScale
			ns := getUvarint(&r)
			if ns > uint64(w)+1 {
				return 0, 0, fmt.Errorf("%w: %d slots", ErrMalformed, ns)
			}
			cr.from = len(sc.slots)
			for s := 0; s < int(ns) && r.Err == nil; s++ {
				age, v := getUvarint(&r), getUvarint(&r)
				hasProf := age&1 != 0
				age >>= 1
				if age > uint64(w) || v >= maxCount || (hasProf && ps == 0) {
					return 0, 0, fmt.Errorf("%w: slot age %d count %d", ErrMalformed, age, v)
				}
				sr := slotRec{j: slot - int64(age), v: uint32(v)}
				if hasProf {
					b := r.B
					if len(b) < ps-1 {
						return 0, 0, fmt.Errorf("%w: short profile", ErrMalformed)
					}
					r.B = b[ps-1:]
					for x := 1; x < ps-1; x++ {
						if b[x] < b[x-1] {
							return 0, 0, fmt.Errorf("%w: profile not cumulative", ErrMalformed)
						}
					}
					if ps == subSlots {
						sr.prof = (*profile)(b[:subSlots-1])
					}
				}
				sc.slots = append(sc.slots, sr)
			}
			cr.to = len(sc.slots)
			sc.ctrs = append(sc.ctrs, cr)
		}
	}
	if r.Err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrMalformed, r.Err)
	}
	if len(r.B) != 0 {
		return 0, 0, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.B))
	}
	return slot, sent, nil
}

// ErrType is returned by Handle for a message type this version does not
// know.
var ErrType = errors.New("cps: unknown message type")

// Handle takes a live message of the capability: MsgCounters goes to
// Apply; an unknown type is refused and counted as a bad frame.
func (l *Limiter) Handle(from uint32, typ wire.MsgType, body []byte) error {
	if typ == MsgCounters {
		return l.Apply(from, body)
	}
	l.mu.Lock()
	l.stats.BadFrames++
	l.mu.Unlock()
	return fmt.Errorf("%w %d", ErrType, typ)
}

// Apply merges a peer's MsgCounters body. A malformed body changes
// nothing, is counted, and returns an error wrapping ErrMalformed, ErrSlot
// or ErrSkew. It never panics, whatever the bytes.
func (l *Limiter) Apply(from uint32, body []byte) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if from == l.self || from == 0 {
		return nil
	}
	n := l.nodes[from]
	if n == nil || !n.member {
		// Heard from before membership said so: it is alive.
		n = l.node(from)
		n.up = true
	}
	k, _, ns := l.instant(now)
	l.awake(now.UnixNano(), ns)
	sent, err := l.applyBody(n, body, k)
	if err == nil {
		// When it was sent, on our cluster clock (as applyBody reckons
		// it): how fresh our view of n is.
		at := sent + l.corr
		if n.offAt != 0 {
			at -= n.off + n.rtt/2
		}
		n.heard = max(n.heard, at)
		l.sample(n, sent, now.UnixNano())
	}
	return err
}

// applyBody merges a parsed body as node n's counts (n nil: rates only).
func (l *Limiter) applyBody(n *node, body []byte, k int64) (sent int64, err error) {
	slot, sent, err := l.parse(body, k)
	if err != nil {
		if errors.Is(err, ErrSkew) {
			l.stats.SkewedFrames++
		} else {
			l.stats.BadFrames++
		}
		return 0, err
	}
	l.stats.FramesApplied++
	l.stats.BytesApplied += uint64(len(body))
	// When it was sent, on our cluster clock.
	sentAt := sent + l.corr
	if n != nil && n.offAt != 0 {
		sentAt -= n.off + n.rtt/2
	}
	if n != nil {
		n.cur = max(n.cur, slot)
	}
	sc := &l.scratch
	changed := false
	for _, rr := range sc.rates {
		lim := l.byName[string(rr.name)]
		if lim == nil {
			l.stats.UnknownLimits++
			continue
		}
		if rr.ver.newer(lim.ver) && rr.rate*lim.secs >= 1 {
			lim.rate, lim.ver = rr.rate, rr.ver
			changed = true
		}
	}
	for _, cr := range sc.ctrs {
		lim := cr.lim
		if lim == nil {
			l.stats.UnknownLimits++
			continue
		}
		if n == nil {
			continue
		}
		c := lim.global
		if c == nil {
			c = lim.keys.getBytes(cr.key, k)
		}
		p := c.peer(n)
		if slot >= p.dem.slot {
			p.demPrev, p.dem, p.demAt = p.dem, demand{cr.dem, slot}, sentAt
		}
		for _, s := range sc.slots[cr.from:cr.to] {
			p.merge(s.j, s.v, s.prof)
		}
		c.stale = true
	}
	if changed {
		l.bump()
	}
	return sent, nil
}

// Snapshot returns this node's view of the current windows as records for
// a joining node: its own counts and rate versions, and every peer's
// reported counts.
func (l *Limiter) Snapshot() [][]byte {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.slotOf(now)
	var out [][]byte
	// Own counts, with every rate changed at run time.
	out = l.snapOrigin(out, l.self, true, now, k, true, func(lim *limit, c *counter) (slotSource, float64, bool) {
		c.roll(k)
		return c.ownSlots, c.pub[0].at(k), !c.acc.empty(k)
	})
	for _, n := range l.nodes {
		if n.forgotten {
			continue
		}
		out = l.snapOrigin(out, n.id, n.up, now, k, false, func(lim *limit, c *counter) (slotSource, float64, bool) {
			for _, p := range c.peers {
				if p.n == n {
					return p.slots, p.dem.at(k), !p.acc.empty(k) || p.dem.at(k) > 0
				}
			}
			return nil, 0, false
		})
	}
	return out
}

// snapOrigin appends the records of one origin node's counts.
func (l *Limiter) snapOrigin(out [][]byte, origin uint32, up bool, now time.Time, k int64, rates bool,
	get func(*limit, *counter) (slotSource, float64, bool)) [][]byte {
	var w wire.Writer
	var nlAt, nl, cntAt, cnt int
	var cur *limit
	begin := func() {
		w = wire.Writer{B: make([]byte, 0, 256)}
		w.U32(origin)
		flags := uint8(0)
		if up {
			flags = 1
		}
		w.U8(flags)
		l.writeHeader(&w, k, now)
		if rates {
			var rs []*limit
			for _, lim := range l.limits {
				if lim.ver.ts != 0 {
					rs = append(rs, lim)
				}
			}
			w.U16(uint16(len(rs)))
			for _, lim := range rs {
				writeRate(&w, lim)
			}
			rates = false
		} else {
			w.U16(0)
		}
		nlAt, nl, cur = len(w.B), 0, nil
		w.U16(0)
	}
	endLimit := func() {
		if cur != nil {
			binary.BigEndian.PutUint32(w.B[cntAt:], uint32(cnt))
			cur = nil
		}
	}
	end := func() {
		endLimit()
		binary.BigEndian.PutUint16(w.B[nlAt:], uint16(nl))
		out = append(out, w.B)
	}
	begin()
	found := rates // a record with rate changes is worth sending alone
	for _, lim := range l.limits {
		each := func(c *counter) {
			r, dem, ok := get(lim, c)
			if !ok {
				return
			}
			if len(w.B) >= snapChunk {
				end()
				begin()
			}
			if cur != lim {
				endLimit()
				w.String(lim.name)
				w.U8(lim.profSubSlots())
				cntAt, cnt, cur = len(w.B), 0, lim
				w.U32(0)
				nl++
			}
			w.String(c.key)
			putUvarint(&w, encDemand(dem))
			writeSlots(&w, r, k-int64(lim.w), k)
			cnt++
			found = true
		}
		if lim.global != nil {
			each(lim.global)
		} else {
			lim.keys.each(each)
		}
	}
	if found {
		end()
	}
	return out
}

// ApplySnapshot merges one snapshot record from a donor. Like Apply it
// refuses (and counts) malformed records, and never panics.
func (l *Limiter) ApplySnapshot(from uint32, rec []byte) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := wire.Reader{B: rec}
	origin := r.U32()
	flags := r.U8()
	if r.Err != nil || origin == 0 {
		l.stats.BadFrames++
		return fmt.Errorf("%w: snapshot record header", ErrMalformed)
	}
	k := l.slotOf(now)
	var n *node
	if origin != l.self {
		// (Our own counts from a previous life are skipped: this process
		// counts afresh. Rate changes in the record still apply.)
		n = l.nodes[origin]
		if n == nil {
			n = l.node(origin)
			n.up = flags&1 != 0
		}
	}
	_, err := l.applyBody(n, r.B, k)
	return err
}
