package cps

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Request is what a new call is limited by. The SIP layer fills it from
// the initial INVITE: in-dialog requests (a To tag present) must never be
// passed to Check.
type Request struct {
	// SourceIP is the packet source address, without port (source_ip).
	SourceIP string
	// FromDomain is the From URI host, lower case (from_domain).
	FromDomain string
	// AuthUser is the authenticated user, "" when not authenticated
	// (auth_user). Empty keys are not limited by keyed limits.
	AuthUser string
	// Region attributes the call to a region for per-region limits.
	// Default (""): this node's region. Leave it empty unless calls are
	// relayed in from another region's edge.
	Region string
}

func (r *Request) key(s Selector) string {
	switch s {
	case SourceIP:
		return r.SourceIP
	case FromDomain:
		return r.FromDomain
	case AuthUser:
		return r.AuthUser
	}
	return ""
}

// Decision is the verdict on a new call.
type Decision struct {
	// Allowed is true when the call passed every limit.
	Allowed bool
	// Limit names the first limit (in config order) that refused it.
	Limit string
	// Code is the SIP status to answer with: 503, 486 or 480.
	Code int
	// RetryAfter is the Retry-After header value; 0 means no header.
	RetryAfter time.Duration
}

// Option sets an optional dependency of a Limiter.
type Option func(*Limiter)

// WithClock sets the clock (default time.Now). Tests and the simulation
// inject skewed fake clocks.
func WithClock(now func() time.Time) Option { return func(l *Limiter) { l.now = now } }

// WithRand sets the random source of RED, a function returning values in
// [0, 1) (default: a PCG seeded from the clock).
func WithRand(f func() float64) Option { return func(l *Limiter) { l.rnd = f } }

// node is a peer as this node sees it.
type node struct {
	id        uint32
	region    string
	up        bool  // reachable: its demand is predicted
	member    bool  // announced by the cluster (counts in the visible share)
	forgotten bool  // removed from the cluster: ignored entirely
	cur       int64 // newest slot it reported being in

	// Clock offset estimate: the largest (sent - received) over recent
	// frames, i.e. the peer's clock minus ours minus the smallest one-way
	// delay, plus half the link RTT when the cluster knows it.
	off       int64
	offAt     int64 // our raw clock at the last sample (0: no estimate)
	offCur    int64 // largest sample of second offBucket
	offPrev   int64 // largest sample of the second before
	offBucket int64
	rtt       int64

	// heard is when its newest frame was sent, on our cluster clock.
	heard int64
}

// version orders rate changes: newest timestamp wins, node id breaks ties.
type version struct {
	ts   int64
	node uint32
}

func (v version) newer(o version) bool {
	return v.ts > o.ts || (v.ts == o.ts && v.node > o.node)
}

type limit struct {
	idx    int
	name   string
	cfg    LimitConfig
	algo   Algorithm
	sel    Selector
	region string
	w      int     // slots per window
	secs   float64 // window in seconds
	code   int
	retry  time.Duration

	rate      float64
	ver       version
	rateDirty bool
	bud       float64 // rate × window × share, refreshed on every epoch
	share     float64

	global *counter
	keys   *keyTable
	dirty  []*counter

	rejected uint64
}

func (lim *limit) budget() float64 { return lim.bud }

// markDirty notes that c changed, for the next frame: queued once until
// Flush takes it.
func (lim *limit) markDirty(c *counter) {
	if c.dirty {
		return
	}
	c.dirty = true
	if !c.queued {
		c.queued = true
		lim.dirty = append(lim.dirty, c)
	}
}

// counts reports whether n's counts belong to this limit's scope.
func (lim *limit) counts(n *node) bool {
	return !n.forgotten && (lim.region == "" || n.region == "" || n.region == lim.region)
}

// Limiter is the CPS limiter of one node: a pure state machine with no
// goroutines and an injected clock. Calls arrive through Check, peer
// updates through Apply, membership through NodeUp and NodeDown, and the
// caller sends what Flush returns to every peer once per interval. It is
// safe for concurrent use.
type Limiter struct {
	mu     sync.Mutex
	cfg    Config
	now    func() time.Time
	rnd    func() float64
	self   uint32
	region string
	slotNs int64
	slot   int64 // newest slot seen: the clock never runs backwards here
	epoch  uint64
	// corr aligns this node's clock on the cluster's: the mean of every
	// visible node's clock offset from ours (ours counting as 0). Slots
	// are numbered on the corrected clock, so every node's slot j covers
	// the same instant even when the wall clocks disagree.
	corr int64
	// settle is how long a published demand takes to reach every peer
	// (see counter.weight): settleFloor, or more on links with a long RTT.
	settle  int64
	noAlign bool // tests: leave the clock uncorrected
	noStall bool // tests: admit on a stale view after a stall
	// lastFlush is the cluster time of the last frame.
	lastFlush int64
	// reserve is the interval in slots (see view).
	reserve float64
	// lastSeen is the raw clock of the last call into the limiter, and
	// resumed the cluster time it last came back from a stall (see
	// stalled).
	lastSeen, resumed int64

	nodes  map[uint32]*node
	limits []*limit
	byName map[string]*limit

	stats Stats

	scratch scratch // Apply's parse buffers
}

// Stats are the limiter's counters since start.
type Stats struct {
	FramesFlushed uint64 // frames produced by Flush
	BytesFlushed  uint64 // body bytes produced by Flush
	FramesApplied uint64 // peer frames applied
	BytesApplied  uint64 // peer frame bytes applied
	BadFrames     uint64 // frames and snapshot records refused as malformed
	SkewedFrames  uint64 // frames refused because the sender's clock is far off
	// ClockCorrection is what this node adds to its clock to line up with
	// the cluster (the mean of the visible nodes' clocks).
	ClockCorrection time.Duration
	UnknownLimits   uint64 // records for limits this node does not have
	KeysEvicted     uint64 // keys dropped at max_keys
	KeysExpired     uint64 // keys dropped after key_idle
	// Stalls counts the times this node came back from a stall (no call
	// into the limiter for over 100 ms); until it heard from its peers
	// again it refused every new call.
	Stalls uint64
}

// New builds the limiter of node self (in region) from cfg, which it
// validates.
func New(cfg Config, self uint32, region string, opts ...Option) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if self == 0 {
		return nil, errors.New("cps: node id 0")
	}
	l := &Limiter{
		cfg: cfg, now: time.Now, self: self, region: region,
		slotNs: int64(cfg.Slot), nodes: map[uint32]*node{}, byName: map[string]*limit{},
		reserve: float64(cfg.Interval) / float64(cfg.Slot),
	}
	for _, o := range opts {
		o(l)
	}
	if l.rnd == nil {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(self)))
		l.rnd = r.Float64
	}
	for i, lc := range cfg.Limits {
		lim := newLimit(cfg, i, lc)
		l.limits = append(l.limits, lim)
		l.byName[lc.Name] = lim
	}
	l.align()
	l.bump()
	return l, nil
}

// slotOf returns the slot of now, never older than one already seen.
func (l *Limiter) slotOf(now time.Time) int64 {
	k := floorDiv(now.UnixNano()+l.corr, l.slotNs)
	if k < l.slot {
		return l.slot
	}
	l.slot = k
	return k
}

// instant returns the slot of now, the fraction of it gone by, and the
// cluster time in ns.
func (l *Limiter) instant(now time.Time) (int64, float64, int64) {
	ns := now.UnixNano() + l.corr
	k := floorDiv(ns, l.slotNs)
	if k < l.slot {
		return l.slot, 0, ns
	}
	l.slot = k
	return k, float64(ns-k*l.slotNs) / float64(l.slotNs), ns
}

// bump invalidates every cached view and recomputes the budgets: called
// on any change of membership or rates.
func (l *Limiter) bump() {
	l.epoch++
	for _, lim := range l.limits {
		lim.share = 1
		if l.cfg.PartitionPolicy == Split {
			known, seen := 0, 0
			if lim.region == "" || lim.region == l.region {
				known, seen = 1, 1
			}
			for _, n := range l.nodes {
				if !n.member || n.forgotten || (lim.region != "" && n.region != lim.region) {
					continue
				}
				known++
				if n.up {
					seen++
				}
			}
			if known > 0 {
				lim.share = float64(seen) / float64(known)
			}
		}
		lim.bud = lim.rate * lim.secs * lim.share
	}
}

// eps absorbs float rounding in the budget comparison.
const eps = 1e-9

// Check decides on one new call: it passes if every applicable limit has
// room for it in the platform-wide window. Passing calls are counted in
// every applicable limit; a refused call is counted as demand in a limit
// only when no other limit refused it. Allocation-free for global limits.
func (l *Limiter) Check(req Request) Decision {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k, f, ns := l.instant(now)
	l.awake(now.UnixNano(), ns)
	stale := l.stalled(ns)
	region := req.Region
	if region == "" {
		region = l.region
	}
	var cs [MaxLimits]*counter
	var refused [MaxLimits]bool
	first, nref := -1, 0
	for i, lim := range l.limits {
		if lim.region != "" && lim.region != region {
			continue
		}
		c := lim.global
		if c == nil {
			key := req.key(lim.sel)
			if key == "" {
				continue
			}
			c = lim.keys.get(key, k, true)
		}
		cs[i] = c
		if stale {
			// Refused, but offered: the demand still goes out.
			if first < 0 {
				first = i
			}
			c.roll(k)
			c.offer(k, f)
			lim.markDirty(c)
			continue
		}
		pred, rep := l.view(lim, c, k, f, ns)
		b := lim.budget()
		ok := pred+1 <= b+eps
		if !ok && rep+1 <= b+eps && b-pred >= c.dither {
			// Less than a call is free once the peers' predicted use is
			// held: admit once the free fraction passes a random
			// threshold, drawn afresh after each such call. Waiting for
			// a whole call kept about half a call per node idle at every
			// instant (at 150 CPS over 9 nodes, 3% of the limit), and a
			// draw per call would admit sooner the more calls come. What
			// is reported for sure still bounds it.
			ok = true
			c.dither = max(l.rnd(), 1e-3)
		}
		if ok && lim.algo == RED {
			if u := rep / b; u > redFrom && l.rnd() < (u-redFrom)/(1-redFrom) {
				ok = false
			}
		}
		if !ok {
			refused[i] = true
			nref++
			if first < 0 {
				first = i
			}
		}
	}
	for i, c := range cs[:len(l.limits)] {
		if c == nil || stale {
			continue
		}
		lim := l.limits[i]
		if nref == 0 || (nref == 1 && refused[i]) {
			c.offer(k, f)
		}
		if nref == 0 {
			c.count(k, f)
		}
		lim.markDirty(c)
	}
	if first < 0 {
		return Decision{Allowed: true}
	}
	lim := l.limits[first]
	lim.rejected++
	return Decision{Limit: lim.name, Code: lim.code, RetryAfter: lim.retry}
}

// redFrom is where RED starts dropping: 80% of the limit.
const redFrom = 0.8

// A node that was not scheduled for a while (a stall: the machine's
// scheduler froze the process, or it was stopped) comes back with a view
// of its peers as old as the stall. Meanwhile its peers, not hearing from
// it, let its demand lapse and took its share; its own view shows their
// counts from before the stall and predicts little for the time since.
// Admitting on that view let the backlog of calls queued during the
// stall through at once (up to 134% of the limit over 1 s in the e2e
// run). So a gap of more than stallAfter between two calls into the
// limiter (Flush runs every FlushTick, so a gap means a stall) marks a
// resume, and from then on the node refuses every new call until each
// peer that is up has sent a frame from no more than freshWithin before
// the resume (peers send one every Interval, even with nothing to report:
// the frames queued during the stall are usually enough) or stallHoldMax
// has passed (a peer that died meanwhile may not have been declared down
// yet).
const (
	stallAfter   = 100 * time.Millisecond
	freshWithin  = 100 * time.Millisecond
	stallHoldMax = time.Second
)

// awake notes a call into the limiter at raw clock raw (cluster time ns)
// and detects a resume from a stall.
func (l *Limiter) awake(raw, ns int64) {
	if l.lastSeen != 0 && raw-l.lastSeen > int64(stallAfter) && !l.noStall {
		l.resumed = ns
		l.stats.Stalls++
	}
	l.lastSeen = max(l.lastSeen, raw)
}

// stalled reports whether the node is back from a stall and has not heard
// from every peer since (see stallAfter).
func (l *Limiter) stalled(ns int64) bool {
	if l.resumed == 0 || ns-l.resumed > int64(stallHoldMax) {
		return false
	}
	for _, n := range l.nodes {
		// (A node never heard from, one without a cps section, has no
		// counts to be stale.)
		if n.up && !n.forgotten && n.heard != 0 && n.heard < l.resumed-int64(freshWithin) {
			return true
		}
	}
	l.resumed = 0
	return false
}

// NodeUp records that node id (in region) is reachable. Calling it again
// for a node already up changes nothing.
func (l *Limiter) NodeUp(id uint32, region string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if id == l.self || id == 0 {
		return
	}
	n := l.node(id)
	if n.up && n.member && !n.forgotten && (region == "" || region == n.region) {
		return
	}
	n.up, n.member, n.forgotten = true, true, false
	if region != "" {
		n.region = region
	}
	// A node back from a partition may have missed rate changes.
	for _, lim := range l.limits {
		if lim.ver.ts != 0 {
			lim.rateDirty = true
		}
	}
	l.align()
	l.bump()
}

// NodeDown records that node id is unreachable (dead or cut off). Its
// predicted use is released at once; the calls it is known to have
// accepted stay in the window until they age out, because they happened.
func (l *Limiter) NodeDown(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.nodes[id]; n != nil && (n.up || !n.member) {
		n.up, n.member = false, true
		l.align()
		l.bump()
	}
}

// NodeRTT tells the limiter the round-trip time of the link to node id
// (the cluster measures it with its heartbeats). Half of it is added to
// the clock offset estimated from that node's frames, which otherwise
// reads the one-way delay as clock offset. Optional: on a LAN the delay
// is the same on every link and cancels out.
func (l *Limiter) NodeRTT(id uint32, rtt time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.nodes[id]; n != nil && rtt >= 0 {
		n.rtt = int64(rtt)
		l.align()
	}
}

// sample takes a clock offset sample from a frame sent at sent (the
// peer's raw clock) and received at recv (ours). The estimate is the
// largest sample of the current and the previous second: the frame that
// met the least delay, and it follows clocks that drift apart. A sample
// beyond maxSkew is ignored.
func (l *Limiter) sample(n *node, sent, recv int64) {
	s := sent - recv
	if s > int64(maxSkew) || s < -int64(maxSkew) {
		return
	}
	b := floorDiv(recv, int64(time.Second))
	switch {
	case n.offAt == 0 || b > n.offBucket+1:
		n.offCur, n.offPrev = s, s
	case b == n.offBucket+1:
		n.offPrev, n.offCur = n.offCur, s
	default:
		n.offCur = max(n.offCur, s)
	}
	n.offBucket, n.offAt = b, recv
	n.off = max(n.offCur, n.offPrev)
	l.align()
}

// align recomputes the clock correction.
func (l *Limiter) align() {
	var sum int64
	cnt := int64(1)
	for _, n := range l.nodes {
		if n.up && !n.forgotten && n.offAt != 0 {
			sum += n.off + n.rtt/2
			cnt++
		}
	}
	l.corr = sum / cnt
	if l.noAlign {
		l.corr = 0
	}
	l.settle = int64(settleFloor)
	for _, n := range l.nodes {
		if n.up && !n.forgotten {
			l.settle = max(l.settle, n.rtt/2+n.rtt/4)
		}
	}
}

// settleFloor is the time a frame is assumed to take to reach every peer
// when the RTTs are unknown or short (a LAN, or the cluster's 20 ms
// worst case in the simulation).
const settleFloor = 25 * time.Millisecond

// Forget drops node id from the platform (the operator removed it): under
// the split policy its share of the limits returns to the others.
func (l *Limiter) Forget(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.nodes[id]; n != nil && !n.forgotten {
		n.up, n.forgotten = false, true
		l.bump()
	}
}

// Peers lists the peers the limiter knows (not forgotten).
func (l *Limiter) Peers() []uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []uint32
	for id, n := range l.nodes {
		if !n.forgotten {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (l *Limiter) node(id uint32) *node {
	n := l.nodes[id]
	if n == nil {
		n = &node{id: id}
		l.nodes[id] = n
	}
	return n
}

// ErrUnknownLimit is returned for a limit name not in the config.
var ErrUnknownLimit = errors.New("cps: unknown limit")

// SetRate changes a limit's rate at run time. The change is versioned
// (this node's clock, then its id) and goes out with the next Flush; every
// node keeps the newest version it has seen, so concurrent changes
// converge on the same value everywhere. Nodes that join later get it in
// the snapshot, and nodes back from a partition when they come up again.
func (l *Limiter) SetRate(name string, rate float64) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.byName[name]
	if lim == nil {
		return fmt.Errorf("%w %q", ErrUnknownLimit, name)
	}
	if !(rate > 0) || rate > 1e9 || rate*lim.secs < 1 {
		return fmt.Errorf("cps: rate %v for %q: must be in (0, 1e9] and admit at least one call per %s window", rate, name, lim.cfg.Window)
	}
	v := version{ts: now.UnixNano(), node: l.self}
	if !v.newer(lim.ver) {
		v.ts = lim.ver.ts + 1
	}
	lim.rate, lim.ver, lim.rateDirty = rate, v, true
	l.bump()
	return nil
}

// LimitStatus is one limit as this node sees it.
type LimitStatus struct {
	Name      string
	Algorithm Algorithm
	Selector  Selector
	Region    string        // "" for platform-wide limits
	Window    time.Duration // counting window
	// Limit is the configured (or SetRate) rate, calls per second.
	Limit float64
	// Share is the part of Limit in force: 1, or under the split policy
	// the visible share of the limit's nodes.
	Share float64
	// Rate is the platform-wide rate of accepted calls over the last
	// window, from every node's reported counts (all keys summed for a
	// keyed limit).
	Rate float64
	// Offered estimates the platform-wide rate of calls offered to the
	// limit (accepted or not), from every node's published demand.
	Offered float64
	// Rejected counts the calls this limit refused on this node.
	Rejected uint64
	// Keys is the number of keys held (keyed limits).
	Keys int
	// Top lists the busiest keys by platform-wide rate (keyed limits).
	Top []KeyRate
}

// KeyRate is one key's platform-wide rate.
type KeyRate struct {
	Key  string
	Rate float64 // accepted calls per second over the window
}

// StatusTopN is how many keys Status lists per keyed limit.
const StatusTopN = 10

// Status returns every limit's current state, in config order.
func (l *Limiter) Status() []LimitStatus { return l.status(StatusTopN) }

func (l *Limiter) status(topN int) []LimitStatus {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k, f, _ := l.instant(now)
	out := make([]LimitStatus, 0, len(l.limits))
	for _, lim := range l.limits {
		st := LimitStatus{
			Name: lim.name, Algorithm: lim.algo, Selector: lim.sel, Region: lim.region,
			Window: lim.cfg.Window, Limit: lim.rate, Share: lim.share, Rejected: lim.rejected,
		}
		each := func(c *counter) {
			acc, off := l.windowRate(lim, c, k, f)
			st.Rate += acc
			st.Offered += off
		}
		if lim.global != nil {
			each(lim.global)
		} else {
			st.Keys = lim.keys.len()
			lim.keys.each(each)
			if topN > 0 {
				st.Top = l.top(lim, k, f, topN)
			}
		}
		out = append(out, st)
	}
	return out
}

// windowRate returns a counter's platform-wide accepted rate over the
// last window of slots, and its offered rate from the demand estimates.
func (l *Limiter) windowRate(lim *limit, c *counter, k int64, f float64) (acc, off float64) {
	c.roll(k)
	lo := k - int64(lim.w) + 1
	var n float64
	for j := lo; j <= k; j++ {
		n += float64(c.acc.at(j))
	}
	dem := c.demandNow(k, f)
	for _, p := range c.peers {
		if !lim.counts(p.n) {
			continue
		}
		for j := lo; j <= k; j++ {
			n += float64(p.acc.at(j))
		}
		if p.n.up {
			dem += p.dem.at(k)
		}
	}
	slotSecs := float64(l.slotNs) / 1e9
	return n / lim.secs, dem / slotSecs
}

// Top returns the n busiest keys of a keyed limit by platform-wide rate.
func (l *Limiter) Top(name string, n int) ([]KeyRate, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.byName[name]
	if lim == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownLimit, name)
	}
	if lim.keys == nil {
		return nil, fmt.Errorf("cps: limit %q is not keyed", name)
	}
	k, f, _ := l.instant(now)
	return l.top(lim, k, f, n), nil
}

func (l *Limiter) top(lim *limit, k int64, f float64, n int) []KeyRate {
	if n <= 0 {
		return nil
	}
	var out []KeyRate
	lim.keys.each(func(c *counter) {
		r, _ := l.windowRate(lim, c, k, f)
		if r == 0 {
			return
		}
		if len(out) == n && r <= out[n-1].Rate {
			return
		}
		i, _ := slices.BinarySearchFunc(out, r, func(e KeyRate, r float64) int {
			switch {
			case e.Rate > r:
				return -1
			case e.Rate < r:
				return 1
			}
			return 0
		})
		out = slices.Insert(out, i, KeyRate{Key: c.key, Rate: r})
		if len(out) > n {
			out = out[:n]
		}
	})
	return out
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.ClockCorrection = time.Duration(l.corr)
	for _, lim := range l.limits {
		if lim.keys != nil {
			s.KeysEvicted += lim.keys.evicted
		}
	}
	return s
}
