package cps

import "math"

// subSlots is how finely a global limit's nodes record when, within a
// slot, calls were accepted. When the oldest slot of a sliding window
// slides out, its calls leave the window in the order they came in (to a
// tenth of a slot) rather than all at once or spread evenly: after a burst
// that filled a slot's first 10 ms, the capacity comes back 10 ms into the
// next window, not 100 ms. Peers send the profile of each closed slot.
const subSlots = 10

// ring holds one count per slot for the newest len(v) slots.
type ring struct {
	v    []uint32
	head int64 // newest slot held: v[j mod len] is slot j for head-len < j <= head
}

func newRing(n int) ring { return ring{v: make([]uint32, n)} }

func (r *ring) idx(j int64) int {
	n := int64(len(r.v))
	return int(((j % n) + n) % n)
}

func (r *ring) holds(j int64) bool { return j <= r.head && j > r.head-int64(len(r.v)) }

func (r *ring) at(j int64) uint32 {
	if !r.holds(j) {
		return 0
	}
	return r.v[r.idx(j)]
}

// advance makes k the newest slot, zeroing the slots it passes and
// calling clearFn (if set) with their indexes.
func (r *ring) advance(k int64, clearFn func(i int)) {
	if k <= r.head {
		return
	}
	from := max(r.head+1, k-int64(len(r.v))+1)
	for j := from; j <= k; j++ {
		i := r.idx(j)
		r.v[i] = 0
		if clearFn != nil {
			clearFn(i)
		}
	}
	r.head = k
}

func (r *ring) empty(k int64) bool {
	if r.head <= k-int64(len(r.v)) {
		return true
	}
	for _, v := range r.v {
		if v != 0 {
			return false
		}
	}
	return true
}

// demand is a published demand estimate: offered calls per slot, as of
// slot.
type demand struct {
	v    float64
	slot int64
}

// demandGrace is how many slots a published demand holds at full value
// without a fresh report: one slot of clock skew plus one of flush and
// network delay. After it the estimate halves every slot, and is gone
// after demandMaxAge, so a peer that went quiet stops holding capacity.
const (
	demandGrace  = 2
	demandMaxAge = 8
)

func (d demand) at(k int64) float64 {
	gap := k - d.slot
	switch {
	case gap <= demandGrace:
		return d.v
	case gap > demandMaxAge:
		return 0
	}
	return d.v * math.Ldexp(1, -int(gap-demandGrace))
}

// profile is the shape of a closed slot: cum[i] is the share of its calls
// accepted in its first (i+1)/subSlots, scaled to 255.
type profile [subSlots - 1]uint8

// peerCounts is one peer's reported counts for one counter.
type peerCounts struct {
	n       *node
	acc     ring
	dem     demand // the last published demand
	demPrev demand // the one before
	demAt   int64  // when dem was sent, in our cluster time (ns)
	// prof[i] is the profile of the slot at ring index i, valid when
	// known[i] (global limits only).
	prof  []profile
	known []bool

	// Cached by refresh for the current slot.
	cRep  float64 // reported count of the current slot
	cUp   bool    // up and in the limit's scope: its demand counts
	cPred bool    // and its current slot is not final: predict it
	cW    float64 // its weight, set by view
}

// weight is a peer's demand as it uses it itself (see counter.weight):
// the last published estimate once settle has passed since it was sent,
// the one before until then.
func (p *peerCounts) weight(k, now, settle int64) float64 {
	if now-p.demAt >= settle {
		return p.dem.at(k)
	}
	return p.demPrev.at(k)
}

func (p *peerCounts) merge(j int64, v uint32, prof *profile) {
	if j > p.acc.head {
		p.acc.advance(j, p.forget)
	}
	if !p.acc.holds(j) {
		return
	}
	i := p.acc.idx(j)
	if v > p.acc.v[i] {
		p.acc.v[i] = v
	}
	if prof != nil && p.prof != nil {
		p.prof[i], p.known[i] = *prof, true
	}
}

func (p *peerCounts) forget(i int) {
	if p.known != nil {
		p.known[i] = false
	}
}

// left returns how many of slot j's calls were accepted after fraction
// i/subSlots of it.
func (p *peerCounts) left(j int64, i int) float64 {
	a := float64(p.acc.at(j))
	if a == 0 || i == 0 {
		return a
	}
	if i >= subSlots {
		return 0
	}
	if x := p.acc.idx(j); p.known != nil && p.known[x] {
		return a * (1 - float64(p.prof[x][i-1])/255)
	}
	return a * (1 - float64(i)/subSlots)
}

// counter is one limit's state for one key (or the only state of a global
// limit): this node's exact counts, the peers' reported counts, and the
// cached platform-wide view for the current slot.
type counter struct {
	key string

	acc     ring     // own accepted calls per slot
	sub     []uint32 // own accepted calls per sub-slot, subSlots per ring entry (global limits)
	off     uint32   // own offered calls in slot offAt
	offPrev uint32   // own offered calls in slot offAt-1
	offAt   int64
	offSub  *subRing  // own offered calls per sub-slot (global limits)
	pub     [2]demand // the last two published demands, newest first
	pubAt   int64     // cluster time of pub[0], ns
	sentTo  int64     // the slot open at the last flush that included this counter
	dither  float64   // free fraction of a call that admits one (see Check)
	dirty   bool      // changed since the last flush
	final   bool      // the slot sentTo had calls: its final count is due
	queued  bool      // on the limit's dirty list

	peers []*peerCounts

	// Cache for slot cSlot, valid while cEpoch == limiter epoch and !stale.
	cSlot   int64
	cEpoch  uint64
	stale   bool
	fixed   float64 // window slots between the oldest and the current, with predictions
	repFix  float64 // the same, reported counts only
	oldest  float64 // the oldest slot of a sliding window (it slides out as the slot goes by)
	rem     []float64
	rho     float64 // allocation factor, last computed
	rhoPrev float64 // allocation factor at the end of the slot before

	// LRU (keyed limits).
	prev, next *counter
	used       int64 // slot of the last call or report
	gone       bool  // evicted
}

// newCounter makes a counter whose rings hold n slots: a window and the
// slot sliding out of it.
func newCounter(key string, n int, profiled bool) *counter {
	c := &counter{key: key, acc: newRing(n), stale: true, dither: 0.5}
	if profiled {
		c.sub = make([]uint32, n*subSlots)
		c.rem = make([]float64, subSlots+1)
		c.offSub = &subRing{}
	}
	return c
}

// roll moves the own state to slot k.
func (c *counter) roll(k int64) {
	if k > c.acc.head {
		c.acc.advance(k, c.clearSub)
	}
	if k > c.offAt {
		if k == c.offAt+1 {
			c.offPrev = c.off
		} else {
			c.offPrev = 0
		}
		c.off, c.offAt = 0, k
	}
}

func (c *counter) clearSub(i int) {
	if c.sub != nil {
		clear(c.sub[i*subSlots : (i+1)*subSlots])
	}
}

// count records an accepted call at fraction f of slot k (after roll).
func (c *counter) count(k int64, f float64) {
	i := c.acc.idx(k)
	c.acc.v[i]++
	if c.sub != nil {
		c.sub[i*subSlots+min(int(f*subSlots), subSlots-1)]++
	}
}

// profileOf returns the profile of own slot j.
func (c *counter) profileOf(j int64) *profile {
	if c.sub == nil || !c.acc.holds(j) {
		return nil
	}
	i := c.acc.idx(j)
	total := c.acc.v[i]
	if total == 0 {
		return nil
	}
	var p profile
	cum := uint32(0)
	for s := range subSlots - 1 {
		cum += c.sub[i*subSlots+s]
		p[s] = uint8((uint64(cum)*255 + uint64(total)/2) / uint64(total))
	}
	return &p
}

// left returns how many of own slot j's calls came after fraction
// i/subSlots of it.
func (c *counter) left(j int64, i int) float64 {
	a := c.acc.at(j)
	if a == 0 || i == 0 {
		return float64(a)
	}
	if i >= subSlots {
		return 0
	}
	if c.sub == nil {
		return float64(a) * (1 - float64(i)/subSlots)
	}
	x := c.acc.idx(j)
	before := uint32(0)
	for s := range i {
		before += c.sub[x*subSlots+s]
	}
	return float64(a - before)
}

// demandSpan is how many sub-slots (a tenth of a slot each) the demand
// estimate of a global limit looks back: short, so that a node whose
// burst ends stops holding capacity within a few tens of ms.
//
// A node offered few calls (under demandLowCalls in the sub-slot ring's
// two slots, and under demandBurstCalls in the short span: under about
// 100 calls/s with 100 ms slots) is estimated over the whole ring
// instead. Over 30 ms its count is mostly 0 or 1, so the short estimate
// jumps between nothing and several times its rate, and its peers held
// capacity for it that it never used: at 150 CPS over 9 nodes that alone
// cost 4 points of the limit.
const (
	demandSpan       = 3
	demandLowCalls   = 20
	demandBurstCalls = 3
)

// subRing counts calls per sub-slot for the last len(v) sub-slots.
type subRing struct {
	v    [2 * subSlots]uint32
	head int64 // newest sub-slot (slot×subSlots + i)
}

func (r *subRing) add(s int64) {
	n := int64(len(r.v))
	if s > r.head {
		for j := max(r.head+1, s-n+1); j <= s; j++ {
			r.v[j%n] = 0
		}
		r.head = s
	}
	if s > r.head-n {
		r.v[s%n]++
	}
}

// sum returns the calls in the last span sub-slots up to sub-slot
// instant x, the current partial one included.
func (r *subRing) sum(x float64, span int) int {
	s := int64(x)
	n := int64(len(r.v))
	sum := 0
	for j := s - int64(span) + 1; j <= s; j++ {
		if j <= r.head && j > r.head-n {
			sum += int(r.v[j%n])
		}
	}
	return sum
}

// rate returns the calls per slot over the last span sub-slots before
// sub-slot instant x (fractional), the current partial one included.
func (r *subRing) rate(x float64, span int) float64 {
	s := int64(x)
	sum := float64(r.sum(x, span))
	covered := float64(span-1) + (x - float64(s))
	return sum / max(covered, 0.5) * subSlots
}

// demandNow is the own demand estimate at fraction f of slot k: the
// calls offered per slot over the recent past (the last demandSpan
// sub-slots for global limits, or two slots for a node offered few
// calls; the last slot's length for keyed ones). It follows a burst up or
// down within a slot.
func (c *counter) demandNow(k int64, f float64) float64 {
	if r := c.offSub; r != nil {
		x := float64(k*subSlots) + f*subSlots
		if r.sum(x, len(r.v)) < demandLowCalls && r.sum(x, demandSpan) < demandBurstCalls {
			return r.rate(x, len(r.v))
		}
		return r.rate(x, demandSpan)
	}
	return float64(c.off) + (1-f)*float64(c.offPrev)
}

// offer records an offered call at fraction f of slot k (after roll).
func (c *counter) offer(k int64, f float64) {
	c.off++
	if c.offSub != nil {
		c.offSub.add(k*subSlots + int64(min(int(f*subSlots), subSlots-1)))
	}
}

// weight is the own demand as the peers know it: the last published
// estimate once it has had time to reach them (settle), the one before
// until then. Every node switches to a node's new estimate at the same
// instant (see peerCounts.weight), so they all share the free capacity
// by the same weights: a node never takes more than the others hold for
// it, nor less.
func (c *counter) weight(k, now, settle int64) float64 {
	if now-c.pubAt >= settle {
		return c.pub[0].at(k)
	}
	return c.pub[1].at(k)
}

func (c *counter) peer(n *node) *peerCounts {
	for _, p := range c.peers {
		if p.n == n {
			return p
		}
	}
	w := len(c.acc.v)
	p := &peerCounts{n: n, acc: newRing(w)}
	if c.sub != nil {
		p.prof, p.known = make([]profile, w), make([]bool, w)
	}
	c.peers = append(c.peers, p)
	return p
}

// windowStart returns the first slot of the window that slot k belongs to.
func (l *limit) windowStart(k int64) int64 {
	w := int64(l.w)
	if l.algo == Taildrop {
		return floorDiv(k, w) * w
	}
	return k - w + 1
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// refresh recomputes the cached part of counter c's platform-wide view for
// slot k; view completes it for the current instant. Together they are
// the heart of the limiter:
//
//   - A sliding window of W slots at instant t (a fraction f into slot k)
//     counts slots k-W+1..k in full and, of the oldest slot k-W, the calls
//     accepted in its last (1-f): capacity comes back as the calls that
//     used it leave the window (to a tenth of a slot for global limits,
//     evenly over the slot for keyed ones). Taildrop counts the fixed
//     window holding k.
//   - Completed slots count each node's reported count; a peer that has
//     not reported the end of a slot yet (delay) counts at least its
//     predicted use of it.
//   - The free capacity F is the budget minus those, and it is shared by
//     demand: a peer with published demand d is held d·ρ on top of what it
//     reported for slot k, ρ = F / (sum of all demands), but no more than
//     it can take before its next frame. This node's own weight is its
//     demand as the peers know it, so every node holds for the others what
//     they hold for themselves, and simultaneous bursts cannot take the
//     same capacity twice. A node whose demand the peers do not know yet
//     (new traffic) may only use what they are predicted to leave (ρ
//     capped at 1).
func (l *Limiter) refresh(lim *limit, c *counter, k int64) {
	if c.cSlot != k {
		if c.cSlot == k-1 {
			c.rhoPrev = c.rho
		}
		c.cSlot = k
	}
	c.cEpoch, c.stale = l.epoch, false
	lo := lim.windowStart(k)
	var fixed, rep float64
	for j := lo; j < k; j++ {
		fixed += float64(c.acc.at(j))
	}
	rep = fixed
	sliding := lim.algo != Taildrop
	old := lo - 1
	if c.rem != nil {
		for i := range c.rem {
			c.rem[i] = 0
			if sliding {
				c.rem[i] = c.left(old, i)
			}
		}
	}
	oldest := 0.0
	if sliding {
		oldest = float64(c.acc.at(old))
	}
	for _, p := range c.peers {
		p.cRep, p.cUp, p.cPred = 0, false, false
		if !lim.counts(p.n) {
			continue
		}
		d, last := 0.0, 0.0
		if p.n.up {
			d = p.dem.at(k)
			p.cUp = true
		} else {
			// Down: it takes no more calls, but may have taken some after
			// its last frame, an interval's worth of its demand at most.
			// They stay in the window like the reported ones.
			last = p.dem.at(p.n.cur) * l.reserve
		}
		// A slot the peer has not finished yet: it cannot have taken
		// more than its share of it, nor, in the slot of its last frame,
		// more than an interval's worth of its demand after that frame
		// (it sends one every interval).
		pred := d * min(c.rhoPrev, 1)
		for j := lo; j < k; j++ {
			a := float64(p.acc.at(j))
			rep += a
			switch {
			case j == p.n.cur && last > 0:
				a += last
			case j < p.n.cur || pred <= a:
			case j == p.n.cur:
				a = min(pred, a+d*l.reserve)
			default:
				a = pred
			}
			fixed += a
		}
		if sliding {
			oldest += float64(p.acc.at(old))
			if c.rem != nil {
				for i := range c.rem {
					c.rem[i] += p.left(old, i)
				}
			}
		}
		p.cRep = float64(p.acc.at(k))
		p.cPred = p.cUp && k >= p.n.cur
	}
	c.fixed, c.repFix, c.oldest = fixed, rep, oldest
}

// view returns the window count of counter c at instant f (the fraction
// of slot k gone by): with predictions (for the verdict) and reported
// only (for RED), own current slot included. The caller holds l.mu.
func (l *Limiter) view(lim *limit, c *counter, k int64, f float64, now int64) (pred, rep float64) {
	c.roll(k)
	if c.cSlot != k || c.cEpoch != l.epoch || c.stale {
		l.refresh(lim, c, k)
	}
	var old float64
	if c.rem != nil {
		x := f * subSlots
		i := min(int(x), subSlots-1)
		old = c.rem[i] + (c.rem[i+1]-c.rem[i])*(x-float64(i))
	} else {
		old = (1 - f) * c.oldest
	}
	used := c.fixed + old
	rho := 0.0
	// Every node's weight changes at the same instant on every node:
	// when its new estimate has had time to reach everyone.
	ownW := c.weight(k, now, l.settle)
	sum := ownW
	for _, p := range c.peers {
		p.cW = 0
		if p.cUp {
			p.cW = p.weight(k, now, l.settle)
			sum += p.cW
		}
	}
	if sum > 0 {
		rho = max(lim.budget()-used, 0) / sum
		if ownW == 0 {
			rho = min(rho, 1)
		}
	}
	c.rho = rho
	own := float64(c.acc.at(k))
	cur, repCur := own, own
	for _, p := range c.peers {
		// A peer is held its share of the free capacity, but no more
		// than it can take before its next frame (an interval's worth of
		// its demand on top of what it reported): holding more would
		// keep idle what it cannot use in time.
		a := p.cRep
		if p.cPred {
			a = max(a, min(p.cW*rho, p.cRep+p.cW*l.reserve))
		}
		cur += a
		repCur += p.cRep
	}
	return used + cur, c.repFix + old + repCur
}
