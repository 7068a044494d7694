package cps

import (
	"container/heap"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// The simulation runs a cluster of limiters in one goroutine on a virtual
// clock: Poisson call arrivals, per-message network delay (1–20 ms, in
// order per link), per-node clock skew, node death with delayed
// detection, and partitions. It is deterministic for a seed.

// simLimiter is one node's limiter as the simulation drives it: ours, or
// the OpenSIPS model used as a baseline.
type simLimiter interface {
	Check() bool
	Flush() []byte
	Apply(from uint32, body []byte)
	NodeUp(id uint32)
	NodeDown(id uint32)
}

type ours struct{ l *Limiter }

func (o ours) Check() bool                    { return o.l.Check(Request{}).Allowed }
func (o ours) Flush() []byte                  { return o.l.Flush() }
func (o ours) Apply(from uint32, body []byte) { _ = o.l.Apply(from, body) }
func (o ours) NodeUp(id uint32)               { o.l.NodeUp(id, "r1") }
func (o ours) NodeDown(id uint32)             { o.l.NodeDown(id) }

// openSIPS models the ratelimit module's cluster replication (modules/
// ratelimit, TAILDROP with pipe_replication): each node counts the
// current interval (timer_interval, 1 s, started when the process
// started, so not aligned across nodes); at the end of an interval the
// count moves to my_last_counter and restarts from 0; every
// repl_timer_interval (200 ms here) it sends my_last_counter; a call
// passes while its own current counter plus the last values received from
// the peers stays within the limit.
type openSIPS struct {
	now      func() time.Time
	limit    int
	phase    time.Duration
	interval int64
	counter  int
	last     int
	peers    map[uint32]int
	lastRepl time.Time
}

func newOpenSIPS(now func() time.Time, limit int, phase time.Duration) *openSIPS {
	return &openSIPS{now: now, limit: limit, phase: phase, peers: map[uint32]int{}, interval: -1}
}

func (o *openSIPS) tick() {
	i := floorDiv(o.now().UnixNano()-int64(o.phase), int64(time.Second))
	if i != o.interval {
		if i == o.interval+1 {
			o.last = o.counter
		} else {
			o.last = 0
		}
		o.counter, o.interval = 0, i
	}
}

func (o *openSIPS) Check() bool {
	o.tick()
	sum := o.counter
	for _, c := range o.peers {
		sum += c
	}
	if sum+1 > o.limit {
		return false
	}
	o.counter++
	return true
}

// opensipsPipe is the body of one replication packet: the pipe name
// "global", then flags, algorithm, limit and counter as 4-byte ints, as
// rl_timer_repl pushes them.
func (o *openSIPS) Flush() []byte {
	o.tick()
	now := o.now()
	if now.Sub(o.lastRepl) < 200*time.Millisecond {
		return nil
	}
	o.lastRepl = now
	var w wire.Writer
	w.String("global")
	w.U32(0)
	w.U32(1)
	w.U32(uint32(o.limit))
	w.U32(uint32(o.last))
	return w.B
}

func (o *openSIPS) Apply(from uint32, body []byte) {
	o.peers[from] = int(binary.BigEndian.Uint32(body[len(body)-4:]))
}
func (o *openSIPS) NodeUp(uint32)      {}
func (o *openSIPS) NodeDown(id uint32) { delete(o.peers, id) }

// exactLog is a perfect sliding window on one central log of accepted
// calls, in true time: a call passes while fewer than L calls passed in
// the second before it. No distributed limiter can do better; the
// simulations use it to tell what the arrivals allow from what is ours.
type exactLog struct {
	now   func() time.Time
	limit func() int
	log   []int64
}

func (e *exactLog) Check() bool {
	t := e.now().UnixNano()
	i := 0
	for i < len(e.log) && e.log[i] <= t-int64(time.Second) {
		i++
	}
	e.log = e.log[i:]
	if len(e.log)+1 > e.limit() {
		return false
	}
	e.log = append(e.log, t)
	return true
}
func (e *exactLog) Flush() []byte        { return nil }
func (e *exactLog) Apply(uint32, []byte) {}
func (e *exactLog) NodeUp(uint32)        {}
func (e *exactLog) NodeDown(uint32)      {}

// load is the offered load: total calls per second and each node's share
// at true time t (seconds since start).
type load func(t float64) (rate float64, shares []float64)

type simConfig struct {
	nodes    int
	seed     uint64
	limit    float64
	skew     time.Duration // each node's clock is off by up to ±skew
	skews    []time.Duration
	duration time.Duration
	load     load
	policy   PartitionPolicy
	baseline bool // run the OpenSIPS model instead of ours
	central  bool // one limiter for every node: the ideal reference
	exact    bool // one exactLog for every node: what the arrivals allow
	// exactFrom: the exactLog's limit is exactAfter from then on (the
	// split policy's share after a death is detected).
	exactFrom  time.Duration
	exactAfter float64
	// paced makes each node's calls arrive at a steady pace (SIPp's -r:
	// gaps of 0.5 to 1.5 times the mean) instead of as one Poisson
	// process. Poisson arrivals make even a perfect sliding window miss
	// by a few percent over some 1 s windows (see measure).
	paced  bool
	detect time.Duration // death and partition detection delay
	// deaths: node index → time it dies.
	deaths map[int]time.Duration
	// partition: at partAt, the nodes with side[i] = 1 are cut off from
	// the others, until healAt (0: never).
	side           []int
	partAt, healAt time.Duration
	// join: node index → time it joins (it gets a snapshot then).
	joins      map[int]time.Duration
	noSnapshot bool
	interval   time.Duration // Config.Interval (0: default)
	// freezes: node index → the stall [from, to) during which it is not
	// scheduled: it sends nothing, its incoming frames and calls queue up,
	// and at to its clock has jumped and the queued calls are checked
	// first, then the frames applied (the worst order; Go's scheduler
	// promises none).
	freezes map[int][2]time.Duration
}

type simNode struct {
	id     uint32
	skew   time.Duration
	lim    simLimiter
	ours   *Limiter
	alive  bool
	joined bool
	side   int
	frozen bool
	inbox  []func() // frames that came in while frozen
	queued int      // calls that came in while frozen
}

type event struct {
	at  int64
	seq int
	fn  func()
}

type eventQueue []event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type sim struct {
	cfg   simConfig
	t0    int64 // true unix nanos at start
	now   int64 // true nanos since start
	q     eventQueue
	seq   int
	rng   *rand.Rand // setup, network delays, RED
	calls *rand.Rand // arrivals and routing: the same for every design
	nodes []*simNode
	// lastDeliver orders messages per link.
	lastDeliver map[[2]int]int64
	cut         bool // partition in force

	// Per millisecond of true time: accepted and offered calls, per side.
	accepted [2][]int
	offered  [2][]int
	rejected [2][]int
	sent     []int // replication bytes sent per node (frames on the wire)
	byNode   [][]int
}

func newSim(t testing.TB, cfg simConfig) *sim {
	t.Helper()
	if cfg.detect == 0 {
		cfg.detect = 500 * time.Millisecond
	}
	if cfg.policy == "" {
		cfg.policy = Full
	}
	ms := int(cfg.duration / time.Millisecond)
	s := &sim{
		cfg:         cfg,
		t0:          time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano(),
		rng:         rand.New(rand.NewPCG(cfg.seed, 0x5eed)),
		calls:       rand.New(rand.NewPCG(cfg.seed, 0xca11)),
		lastDeliver: map[[2]int]int64{},
		sent:        make([]int, cfg.nodes),
	}
	s.byNode = make([][]int, cfg.nodes)
	for i := range s.byNode {
		s.byNode[i] = make([]int, ms+1)
	}
	for side := range 2 {
		s.accepted[side] = make([]int, ms+1)
		s.offered[side] = make([]int, ms+1)
		s.rejected[side] = make([]int, ms+1)
	}
	lcfg := Config{PartitionPolicy: cfg.policy, Interval: cfg.interval, Limits: []LimitConfig{{Name: "global", Rate: cfg.limit}}}
	if err := lcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var central simLimiter
	for i := range cfg.nodes {
		n := &simNode{id: uint32(i + 1), alive: true, joined: true}
		if cfg.skews != nil {
			n.skew = cfg.skews[i]
		} else if cfg.skew > 0 {
			n.skew = time.Duration(s.rng.Int64N(int64(2*cfg.skew+1))) - cfg.skew
		}
		if cfg.side != nil {
			n.side = cfg.side[i]
		}
		skew := n.skew
		clock := func() time.Time { return time.Unix(0, s.t0+s.now+int64(skew)) }
		if cfg.exact {
			if central == nil {
				central = &exactLog{now: func() time.Time { return time.Unix(0, s.t0+s.now) }, limit: func() int {
					if cfg.exactFrom > 0 && s.now >= int64(cfg.exactFrom) {
						return int(cfg.exactAfter)
					}
					return int(cfg.limit)
				}}
			}
			n.lim = central
		} else if cfg.central && central != nil {
			n.lim = central
		} else if cfg.baseline {
			n.lim = newOpenSIPS(clock, int(cfg.limit), time.Duration(s.rng.Int64N(int64(time.Second))))
		} else {
			l, err := New(lcfg, n.id, "r1", WithClock(clock), WithRand(s.rng.Float64))
			if err != nil {
				t.Fatal(err)
			}
			n.lim, n.ours = ours{l}, l
			if cfg.central {
				central = n.lim
			}
		}
		if _, ok := cfg.joins[i]; ok {
			n.joined, n.alive = false, false
		}
		s.nodes = append(s.nodes, n)
	}
	for _, a := range s.nodes {
		for _, b := range s.nodes {
			if a != b && a.joined && b.joined && !cfg.central && !cfg.exact {
				a.lim.NodeUp(b.id)
			}
		}
	}
	// Flush tickers, each with its own phase.
	every := lcfg.FlushTick()
	if cfg.baseline {
		every = 10 * time.Millisecond // the model sends every 200 ms itself
	}
	for i := range s.nodes {
		if (cfg.central || cfg.exact) && i > 0 {
			break
		}
		s.ticker(i, time.Duration(s.rng.Int64N(int64(every))), every)
	}
	for i, at := range cfg.deaths {
		s.at(at, func() { s.nodes[i].alive = false })
		s.at(at+cfg.detect, func() {
			for _, o := range s.nodes {
				if o.alive {
					o.lim.NodeDown(s.nodes[i].id)
				}
			}
		})
	}
	if cfg.side != nil {
		s.at(cfg.partAt, func() { s.cut = true })
		s.at(cfg.partAt+cfg.detect, func() { s.membership() })
		if cfg.healAt > 0 {
			s.at(cfg.healAt, func() { s.cut = false })
			s.at(cfg.healAt+cfg.detect/5, func() { s.membership() })
		}
	}
	for i, at := range cfg.joins {
		s.at(at, func() { s.join(t, i) })
	}
	for i, fr := range cfg.freezes {
		n := s.nodes[i]
		s.at(fr[0], func() { n.frozen = true })
		s.at(fr[1], func() {
			n.frozen = false
			ms := int(s.now / int64(time.Millisecond))
			for ; n.queued > 0; n.queued-- {
				s.checkAt(n, ms)
			}
			for _, f := range n.inbox {
				f()
			}
			n.inbox = nil
		})
	}
	if cfg.paced {
		for i := range s.nodes {
			s.pacedArrival(i)
		}
	} else {
		s.arrival()
	}
	return s
}

// membership tells every node who it can see.
func (s *sim) membership() {
	for _, a := range s.nodes {
		for _, b := range s.nodes {
			if a == b || !a.joined || !b.joined {
				continue
			}
			if s.linked(a, b) {
				a.lim.NodeUp(b.id)
			} else {
				a.lim.NodeDown(b.id)
			}
		}
	}
}

// join brings node i in: membership both ways, then a snapshot from the
// first live node, as the cluster's sync would.
func (s *sim) join(t testing.TB, i int) {
	n := s.nodes[i]
	n.joined, n.alive = true, true
	var donor *simNode
	for _, o := range s.nodes {
		if o != n && o.alive {
			o.lim.NodeUp(n.id)
			n.lim.NodeUp(o.id)
			if donor == nil {
				donor = o
			}
		}
	}
	if donor != nil && donor.ours != nil && !s.cfg.noSnapshot {
		for _, rec := range donor.ours.Snapshot() {
			if err := n.ours.ApplySnapshot(donor.id, rec); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
		}
	}
}

func (s *sim) linked(a, b *simNode) bool {
	return a.alive && b.alive && (!s.cut || a.side == b.side)
}

func (s *sim) at(d time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.q, event{at: int64(d), seq: s.seq, fn: fn})
}

func (s *sim) after(d time.Duration, fn func()) { s.at(time.Duration(s.now)+d, fn) }

func (s *sim) ticker(i int, phase, every time.Duration) {
	var tick func()
	tick = func() {
		n := s.nodes[i]
		if n.alive && !n.frozen {
			if body := n.lim.Flush(); body != nil {
				s.broadcast(i, body)
			}
		}
		s.after(every, tick)
	}
	s.at(phase, tick)
}

// frameOverhead is what the cluster wire adds to a body: length prefix,
// header and the capability name.
var frameOverhead = wire.EncodedLen(&wire.Frame{Cap: CapName})

func (s *sim) broadcast(from int, body []byte) {
	if s.cfg.central || s.cfg.exact {
		return
	}
	a := s.nodes[from]
	for j, b := range s.nodes {
		if j == from || !s.linked(a, b) {
			continue
		}
		s.sent[from] += len(body) + frameOverhead
		link := [2]int{from, j}
		at := s.now + int64(time.Millisecond) + s.rng.Int64N(int64(19*time.Millisecond)+1)
		at = max(at, s.lastDeliver[link])
		s.lastDeliver[link] = at
		msg := slices.Clone(body)
		s.at(time.Duration(at), func() {
			if !s.linked(a, b) {
				return
			}
			if b.frozen {
				b.inbox = append(b.inbox, func() { b.lim.Apply(a.id, msg) })
				return
			}
			b.lim.Apply(a.id, msg)
		})
	}
}

// arrival schedules the next call of the Poisson process of the offered
// load and routes it to a node by the load's shares. A call for a dead
// node is lost until its death is detected, then goes to the others (the
// anycast route moves).
func (s *sim) arrival() {
	t := float64(s.now) / 1e9
	rate, shares := s.cfg.load(t)
	gap := time.Duration(s.calls.ExpFloat64() / rate * 1e9)
	s.after(gap, func() {
		s.call(shares)
		if time.Duration(s.now) < s.cfg.duration {
			s.arrival()
		}
	})
}

// pacedArrival schedules node i's next call at its share of the offered
// rate, with a uniform ±50% jitter on the gap.
func (s *sim) pacedArrival(i int) {
	t := float64(s.now) / 1e9
	rate, shares := s.cfg.load(t)
	r := rate * shares[i]
	gap := time.Duration((0.5 + s.calls.Float64()) / r * 1e9)
	if r <= 0 {
		gap = 10 * time.Millisecond // idle: look again later
	}
	s.after(gap, func() {
		if r > 0 {
			s.callAt(i)
		}
		if time.Duration(s.now) < s.cfg.duration {
			s.pacedArrival(i)
		}
	})
}

func (s *sim) call(shares []float64) {
	x := s.calls.Float64()
	i := 0
	for ; i < len(shares)-1; i++ {
		if x < shares[i] {
			break
		}
		x -= shares[i]
	}
	s.callAt(i)
}

func (s *sim) callAt(i int) {
	n := s.nodes[i]
	if !n.alive {
		dead, ok := s.cfg.deaths[i]
		if !ok || time.Duration(s.now) < dead+s.cfg.detect {
			return // lost
		}
		var live []*simNode
		for _, o := range s.nodes {
			if o.alive {
				live = append(live, o)
			}
		}
		n = live[s.calls.IntN(len(live))]
	}
	ms := int(s.now / int64(time.Millisecond))
	if ms >= len(s.accepted[0]) {
		return
	}
	if n.frozen && !s.cfg.exact && !s.cfg.central {
		n.queued++
		return
	}
	s.checkAt(n, ms)
}

// checkAt offers one call to node n at millisecond ms.
func (s *sim) checkAt(n *simNode, ms int) {
	if ms >= len(s.accepted[0]) {
		return
	}
	s.offered[n.side][ms]++
	if n.lim.Check() {
		s.byNode[n.id-1][ms]++
		s.accepted[n.side][ms]++
	} else {
		s.rejected[n.side][ms]++
	}
}

func (s *sim) run() {
	end := int64(s.cfg.duration)
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(event)
		if e.at > end {
			break
		}
		s.now = e.at
		e.fn()
	}
}

// windows returns, for every 1 s window starting at from, to and every
// 10 ms in between, the calls accepted and offered on a side (-1: both).
func (s *sim) windows(side int, from, to time.Duration) (acc, off []int) {
	sum := func(a [2][]int, ms int) int {
		if side >= 0 {
			return a[side][ms]
		}
		return a[0][ms] + a[1][ms]
	}
	// Prefix sums: cum[ms] counts [0, ms).
	n := int(to/time.Millisecond) + 1
	ca, co := make([]int, n+1), make([]int, n+1)
	for ms := 0; ms < n && ms < len(s.accepted[0]); ms++ {
		ca[ms+1], co[ms+1] = ca[ms]+sum(s.accepted, ms), co[ms]+sum(s.offered, ms)
	}
	for st := int(from / time.Millisecond); st+1000 <= int(to/time.Millisecond); st += 10 {
		acc, off = append(acc, ca[st+1000]-ca[st]), append(off, co[st+1000]-co[st])
	}
	return acc, off
}

// wrongful counts the calls refused on a side while the calls accepted
// on it over the 1 s before (true time) were under (1-slack)·target: the
// refusals a perfect limiter would not have made. It returns them per
// second of [from, to).
func (s *sim) wrongful(side int, from, to time.Duration, target, slack float64) float64 {
	acc := s.accepted[side]
	run, n := 0, 0
	for ms := 0; ms < int(to/time.Millisecond); ms++ {
		run += acc[ms]
		if ms >= 1000 {
			run -= acc[ms-1000]
		}
		if ms >= int(from/time.Millisecond) && float64(run-acc[ms]) < (1-slack)*target {
			n += s.rejected[side][ms]
		}
	}
	return float64(n) / (to - from).Seconds()
}

// errStats are the relative errors of accepted vs target over windows.
type errStats struct {
	windows       int
	p50, p99, max float64 // |accepted - target| / target
	over, under   float64 // worst excess and worst shortfall
	mean          float64 // mean accepted / target
}

func (e errStats) String() string {
	return fmt.Sprintf("%d windows: |err| p50 %.2f%% p99 %.2f%% max %.2f%%, worst over %+.2f%% under %+.2f%%, mean %.2f%%",
		e.windows, 100*e.p50, 100*e.p99, 100*e.max, 100*e.over, -100*e.under, 100*e.mean)
}

func measure(acc, off []int, target float64, minOffered float64) errStats {
	var errs []float64
	var st errStats
	sum := 0.0
	for i, a := range acc {
		if float64(off[i]) < minOffered*target {
			continue
		}
		d := (float64(a) - target) / target
		errs = append(errs, math.Abs(d))
		st.over = max(st.over, d)
		st.under = max(st.under, -d)
		sum += float64(a) / target
	}
	st.windows = len(errs)
	if st.windows == 0 {
		return st
	}
	slices.Sort(errs)
	st.p50 = errs[len(errs)/2]
	st.p99 = errs[min(len(errs)-1, len(errs)*99/100)]
	st.max = errs[len(errs)-1]
	st.mean = sum / float64(st.windows)
	return st
}

// uneven offers rate×L calls per second, 80% on node 0 and the rest
// spread evenly.
func uneven(n int, rate float64) load {
	shares := make([]float64, n)
	shares[0] = 0.8
	for i := 1; i < n; i++ {
		shares[i] = 0.2 / float64(n-1)
	}
	return func(float64) (float64, []float64) { return rate, shares }
}

func even(n int, rate float64) load {
	shares := make([]float64, n)
	for i := range shares {
		shares[i] = 1 / float64(n)
	}
	return func(float64) (float64, []float64) { return rate, shares }
}

// bursty offers 1.5L unevenly, and every 1.7 s a 400 ms burst: the load
// triples and moves to another node.
func bursty(n int, limit float64) load {
	base := uneven(n, 1.5*limit)
	return func(t float64) (float64, []float64) {
		r, sh := base(t)
		period := int(t / 1.7)
		if t-float64(period)*1.7 < 0.4 {
			b := make([]float64, n)
			hot := (period + 1) % n
			for i := range b {
				b[i] = 0.3 / float64(n)
			}
			b[hot] += 0.7
			return 3 * r, b
		}
		return r, sh
	}
}

// surges offers 1.5L unevenly, and every 1.3 s a 400 ms surge: the whole
// platform's load triples (same shares).
func surges(n int, limit float64) load {
	base := uneven(n, 1.5*limit)
	return func(t float64) (float64, []float64) {
		r, sh := base(t)
		if math.Mod(t, 1.3) < 0.4 {
			return 3 * r, sh
		}
		return r, sh
	}
}

// hotspots offers 1.5L unevenly, and every 1.3 s for 400 ms one of the
// small nodes (in turn) gets an extra L: its share jumps from a few
// percent to about 40%.
func hotspots(n int, limit float64) load {
	base := uneven(n, 1.5*limit)
	return func(t float64) (float64, []float64) {
		r, sh := base(t)
		period := int(t / 1.3)
		if t-float64(period)*1.3 >= 0.4 {
			return r, sh
		}
		hot := 1 + period%(n-1)
		b := make([]float64, n)
		for i := range b {
			b[i] = sh[i] * r
		}
		b[hot] += limit
		total := r + limit
		for i := range b {
			b[i] /= total
		}
		return total, b
	}
}

var (
	report = flag.Bool("cps.report", false, "print the OpenSIPS comparison as a markdown table")
	seeds  = flag.Int("cps.seeds", 0, "run the simulations for seeds 1..n (default: 2 for the steady runs, 1 for the others)")
)

// simSeeds returns the seeds to run: 1..def, or 1..-cps.seeds.
func simSeeds(def int) []uint64 {
	n := def
	if *seeds > 0 {
		n = *seeds
	}
	var out []uint64
	for i := 1; i <= n; i++ {
		out = append(out, uint64(i))
	}
	return out
}

// simLimit is the platform-wide limit of the simulations that run at one
// limit only: large enough that one call is 0.02% of it, small enough to
// run fast.
const simLimit = 5000.0

// simLimits are the limits of the simulations that run at several: the
// 150–300 CPS of the e2e test and of real deployments, where one call is
// 0.3–0.7% of the limit and a node takes a few calls per interval, and
// higher.
var simLimits = []float64{150, 300, 1000, 5000}

// judge checks the 1 s windows of a run from `from` on against the
// issue's bounds for a limit of target: none over by more than 3%, and
// none under by more than 3% either, unless a perfect sliding window fed
// the same calls (exactLog, ref) misses that too. Even it does, at low
// limits: the arrivals' jitter leaves some capacity unused for a few ms,
// and a sliding window replays the clump of its first second every second
// after (up to 7.3% under at 150 CPS, 5% at 300, 2% at 1000). There no
// window may go more than slack(target) further under than ref's worst.
// It returns the statistics of the windows where at least
// minOffered×target was offered.
func judge(t *testing.T, s *sim, target float64, from time.Duration, minOffered float64, ref *sim) errStats {
	t.Helper()
	acc, off := s.windows(-1, from, s.cfg.duration)
	st := measure(acc, off, target, minOffered)
	under := 0.03
	if ref != nil {
		racc, roff := ref.windows(-1, from, ref.cfg.duration)
		rst := measure(racc, roff, target, minOffered)
		t.Logf("limit %.0f: %v; exact sliding window on the same calls: %v", target, st, rst)
		under = max(under, rst.under+slack(target))
	} else {
		t.Logf("limit %.0f: %v", target, st)
	}
	if st.windows == 0 {
		t.Errorf("no window to judge")
	}
	if st.over > 0.03 {
		t.Errorf("a 1 s window went %.2f%% over the limit %.0f", 100*st.over, target)
	}
	if st.under > under {
		t.Errorf("a 1 s window went %.2f%% under the limit %.0f (bound %.2f%%)", 100*st.under, target, 100*under)
	}
	return st
}

// lowLimit is where a call is 0.1% of the limit: below it a node takes
// a few calls per interval.
const lowLimit = 1000

// slack is how much further under the limit than a perfect sliding
// window on the same calls a window may go (see judge): the capacity each
// node holds for its peers until their next frame is whole percents of
// a low limit (at 150 CPS, 9 nodes, about 3 calls of 150).
func slack(limit float64) float64 {
	if limit < lowLimit {
		return 0.05
	}
	return 0.03
}

// simDuration is how long the runs at several limits last: 10 s below
// lowLimit (cheap there), where 5 s would weigh the first seconds' clump
// too much in the mean, 5 s above.
func simDuration(limit float64) time.Duration {
	if limit < lowLimit {
		return 10 * time.Second
	}
	return 5 * time.Second
}

// exactRef runs cfg with one exactLog for every node instead of ours.
func exactRef(t *testing.T, cfg simConfig) *sim {
	cfg.exact = true
	return runSim(t, cfg)
}

const simSkew = 50 * time.Millisecond

// runSim runs one simulation and returns it.
func runSim(t testing.TB, cfg simConfig) *sim {
	t.Helper()
	if cfg.limit == 0 {
		cfg.limit = simLimit
	}
	if cfg.duration == 0 {
		cfg.duration = 5 * time.Second
	}
	s := newSim(t, cfg)
	s.run()
	return s
}

// TestSimSteadyUneven: 3 to 9 nodes, one taking 80% of 2L offered at a
// steady pace, clocks skewed by up to ±50 ms, 1–20 ms per message, at
// each of simLimits. Every 1 s window after the first second must hold L
// ±3% (see judge for the lowest limits), and on average at least 97% of
// L must pass.
func TestSimSteadyUneven(t *testing.T) {
	t.Parallel()
	for _, limit := range simLimits {
		for _, n := range []int{3, 5, 9} {
			for _, seed := range simSeeds(2) {
				t.Run(fmt.Sprintf("limit=%.0f/nodes=%d/seed=%d", limit, n, seed), func(t *testing.T) {
					t.Parallel()
					cfg := simConfig{nodes: n, seed: seed, skew: simSkew, load: uneven(n, 2*limit), paced: true, limit: limit,
						duration: simDuration(limit)}
					st := judge(t, runSim(t, cfg), limit, time.Second, 1.5, exactRef(t, cfg))
					if st.mean < 0.97 {
						t.Errorf("under 2L offered only %.2f%% of L passed", 100*st.mean)
					}
				})
			}
		}
	}
}

// TestSimRandomArrivals runs the same kind of load arriving as a Poisson
// process, with bursts. Random arrivals and bursts leave some 1 s windows
// under L even for one central sliding window (while it admits, it admits
// exactly what arrives, so a lull or the pace after a burst shows up; see
// the "central" rows of docs/BENCHMARKS.md), so here the cluster is held
// to what is its own doing:
//   - no window over L+3%, ever;
//   - few wrongful refusals: calls refused while the platform had taken
//     less than 97% of L over the second before, at most 2% of L per
//     second (a central limiter makes none);
//   - on average within 1.5% of what a central limiter admits from the
//     same calls.
//
// Surges triple the whole load for 400 ms; hot spots add L on one small
// node (its share jumps from a few percent to about 40%); shifts move 70%
// of a tripled load to another node and back, the hardest case: the
// capacity held for the node whose burst just ended comes back when its
// next frame lands.
func TestSimRandomArrivals(t *testing.T) {
	t.Parallel()
	steady := func(n int, limit float64) load { return uneven(n, 2*limit) }
	cases := []struct {
		name  string
		load  func(n int, limit float64) load
		paced bool
	}{
		{"poisson", steady, false},
		{"surges", surges, true},
		{"hotspots", hotspots, true},
		{"shifts", bursty, true},
	}
	for _, c := range cases {
		for _, n := range []int{3, 9} {
			for _, seed := range simSeeds(1) {
				t.Run(fmt.Sprintf("%s/nodes=%d/seed=%d", c.name, n, seed), func(t *testing.T) {
					t.Parallel()
					cfg := simConfig{nodes: n, seed: seed, skew: simSkew, load: c.load(n, simLimit), paced: c.paced}
					s := runSim(t, cfg)
					acc, off := s.windows(-1, time.Second, s.cfg.duration)
					st := measure(acc, off, simLimit, 1.5)
					wrong := s.wrongful(0, time.Second, s.cfg.duration, simLimit, 0.03)
					cfg.central = true
					ideal := runSim(t, cfg)
					iacc, ioff := ideal.windows(-1, time.Second, s.cfg.duration)
					ist := measure(iacc, ioff, simLimit, 1.5)
					t.Logf("cluster %v, %.1f wrongful refusals/s", st, wrong)
					t.Logf("central %v", ist)
					if st.over > 0.03 {
						t.Errorf("a window went %.2f%% over the limit", 100*st.over)
					}
					if wrong > 0.02*simLimit {
						t.Errorf("%.1f calls/s refused while the platform was under 97%% of the limit", wrong)
					}
					if d := ist.mean - st.mean; d > 0.015 {
						t.Errorf("admitted %.2f%% of L on average, the central limiter %.2f%%", 100*st.mean, 100*ist.mean)
					}
				})
			}
		}
	}
}

// TestSimClockSkew shows that clocks 100 ms apart (one node 50 ms behind,
// one 50 ms ahead) do not break accuracy, at each of simLimits: each node
// lines its clock up on the cluster from the frames' send times, so slot
// j is the same instant everywhere. With the alignment off (the control,
// at simLimit, where a few calls do not hide it) the nodes' windows do
// not cover the same second and the accuracy degrades past 3%.
func TestSimClockSkew(t *testing.T) {
	t.Parallel()
	skews := []time.Duration{50 * time.Millisecond, -50 * time.Millisecond, 0}
	run := func(t *testing.T, limit float64, align bool) (*sim, errStats) {
		load := func(float64) (float64, []float64) {
			return 2 * limit, []float64{0.8, 0.1, 0.1} // the fast node takes 80%
		}
		cfg := simConfig{nodes: 3, seed: 7, skews: skews, load: load, paced: true, limit: limit, duration: simDuration(limit)}
		s := newSim(t, cfg)
		for _, n := range s.nodes {
			n.ours.noAlign = !align
		}
		s.run()
		if !align {
			acc, off := s.windows(-1, time.Second, s.cfg.duration)
			st := measure(acc, off, limit, 1.5)
			t.Logf("limit %.0f, align=false: %v", limit, st)
			return s, st
		}
		return s, judge(t, s, limit, time.Second, 1.5, exactRef(t, cfg))
	}
	for _, limit := range simLimits {
		t.Run(fmt.Sprintf("limit=%.0f", limit), func(t *testing.T) {
			t.Parallel()
			s, st := run(t, limit, true)
			if st.mean < 0.97 {
				t.Errorf("with clocks ±50 ms apart only %.2f%% of L passed", 100*st.mean)
			}
			// The corrected clocks agree to the smallest one-way delay (1 ms
			// here) and rounding.
			var cl []time.Duration
			for _, n := range s.nodes {
				cl = append(cl, n.skew+n.ours.Stats().ClockCorrection)
			}
			if spread := slices.Max(cl) - slices.Min(cl); spread > 3*time.Millisecond {
				t.Errorf("corrected clocks still %v apart: %v", spread, cl)
			}
			if limit != simLimit {
				return
			}
			_, off := run(t, limit, false)
			if off.max < st.max+0.01 {
				t.Errorf("alignment made no difference (worst %.2f%% vs %.2f%%): the skew is not exercised", 100*st.max, 100*off.max)
			}
		})
	}
}

// TestSimNodeDeath kills a node mid-window, at each of simLimits; the
// others learn it 500 ms later, and then its calls move to them (its
// anycast route is withdrawn). Until then its calls are lost. The dead
// node's accepted calls stay in the window until they age out, so no
// window may go over L+5%; with the full policy the limit then holds L
// again, with the split policy the remaining two thirds of it.
func TestSimNodeDeath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		dies   int
		policy PartitionPolicy
		after  float64 // the limit in force after detection, in parts of L
	}{
		{"small/full", 1, Full, 1},
		{"busiest/full", 0, Full, 1},
		{"small/split", 1, Split, 2.0 / 3},
	}
	for _, limit := range simLimits {
		for _, c := range cases {
			t.Run(fmt.Sprintf("limit=%.0f/%s", limit, c.name), func(t *testing.T) {
				t.Parallel()
				die := 2050 * time.Millisecond
				cfg := simConfig{nodes: 3, seed: 3, skew: simSkew, load: uneven(3, 2*limit), paced: true, limit: limit,
					policy: c.policy, deaths: map[int]time.Duration{c.dies: die}, duration: die + 5*time.Second}
				s := runSim(t, cfg)
				acc, off := s.windows(-1, time.Second, s.cfg.duration)
				all := measure(acc, off, limit, 0)
				t.Logf("all windows: %v", all)
				if all.over > 0.05 {
					t.Errorf("a window went %.2f%% over the limit", 100*all.over)
				}
				target := c.after * limit
				cfg.exactFrom, cfg.exactAfter = die+s.cfg.detect, target
				// From 1 s after the detection, or 2 s below lowLimit: its
				// calls reach the survivors all at once when it is
				// detected, and the window has room for them (they were
				// lost for 500 ms), so they take a clump, which the sliding
				// window replays a second later (at 150 CPS that second's
				// worst window is 10% under, the exact window's 4%).
				settled := die + s.cfg.detect + time.Second
				if limit < lowLimit {
					settled += time.Second
				}
				t.Log("after detection:")
				st := judge(t, s, target, settled, 1.5, exactRef(t, cfg))
				if st.windows == 0 || st.mean < 0.97 {
					t.Errorf("after the death was detected the limit did not settle at %.0f: %v", target, st)
				}
			})
		}
	}
}

// TestSimStall freezes a node for 400 ms, at each of simLimits, the way a
// loaded machine's scheduler does: it sends nothing, the frames and calls
// sent to it queue up, and when it runs again its clock has jumped and it
// checks the queued calls before it reads the queued frames. The others
// meanwhile let its demand lapse and take its share, so its view of the
// window is 400 ms stale: admitting on it let 17–36% more than the limit
// through over 1 s (the control, with the stall guard off, at simLimit).
// With the guard no window may go over L+3%.
func TestSimStall(t *testing.T) {
	t.Parallel()
	for _, limit := range simLimits {
		for _, c := range []struct {
			name   string
			frozen int
			load   load
		}{
			{"busiest", 0, uneven(3, 4*limit)},
			{"small", 1, uneven(3, 4*limit)},
		} {
			t.Run(fmt.Sprintf("limit=%.0f/%s", limit, c.name), func(t *testing.T) {
				t.Parallel()
				var over [2]float64
				for i, guard := range []bool{true, false} {
					if !guard && limit != simLimit {
						break
					}
					at := 3050 * time.Millisecond
					cfg := simConfig{nodes: 3, seed: 1, skew: simSkew, load: c.load, paced: true, limit: limit,
						freezes: map[int][2]time.Duration{c.frozen: {at, at + 400*time.Millisecond}}, duration: at + 2*time.Second}
					s := newSim(t, cfg)
					for _, n := range s.nodes {
						n.ours.noStall = !guard
					}
					s.run()
					acc, off := s.windows(-1, time.Second, s.cfg.duration)
					st := measure(acc, off, limit, 0)
					over[i] = st.over
					t.Logf("guard=%v: %v; the frozen node saw %d stalls", guard, st, s.nodes[c.frozen].ours.Stats().Stalls)
					if guard && st.over > 0.03 {
						t.Errorf("a window went %.2f%% over the limit after the stall", 100*st.over)
					}
				}
				if limit == simLimit && over[1] < 0.1 {
					t.Errorf("without the guard the stale node should overshoot (control), went %.2f%% over", 100*over[1])
				}
			})
		}
	}
}

// TestSimPartition cuts a 3-node cluster into {1,2} and {3} under an even
// load of 1.5L per node. With split each side holds its visible share of
// the limit (2/3 and 1/3); with full each side holds the whole limit.
func TestSimPartition(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		policy PartitionPolicy
		shares [2]float64
	}{
		{Split, [2]float64{2.0 / 3, 1.0 / 3}},
		{Full, [2]float64{1, 1}},
	} {
		t.Run(string(c.policy), func(t *testing.T) {
			t.Parallel()
			cut := 2 * time.Second
			s := runSim(t, simConfig{nodes: 3, seed: 5, skew: simSkew, load: even(3, 4.5*simLimit), paced: true,
				policy: c.policy, side: []int{0, 0, 1}, partAt: cut, duration: 6 * time.Second})
			for side, share := range c.shares {
				target := share * simLimit
				acc, off := s.windows(side, cut+s.cfg.detect+time.Second, s.cfg.duration)
				st := measure(acc, off, target, 1.5)
				t.Logf("side %d (limit %.0f): %v", side, target, st)
				if st.windows == 0 || st.max > 0.03 {
					t.Errorf("side %d did not hold %.0f ±3%%: %v", side, target, st)
				}
			}
		})
	}
}

// TestSimJoin brings a third node in at 2.25 s, at each of simLimits; it
// takes 10% of the calls from then on. With the snapshot it knows the
// window at once and the limit holds; without it (the control, at
// simLimit) it believes the window is empty and the platform goes over.
func TestSimJoin(t *testing.T) {
	t.Parallel()
	join := 2250 * time.Millisecond
	for _, limit := range simLimits {
		for _, snap := range []bool{true, false} {
			if !snap && limit != simLimit {
				continue
			}
			t.Run(fmt.Sprintf("limit=%.0f/snapshot=%v", limit, snap), func(t *testing.T) {
				t.Parallel()
				load := func(t float64) (float64, []float64) {
					if t < join.Seconds() {
						return 2 * limit, []float64{0.9, 0.1, 0}
					}
					return 2 * limit, []float64{0.8, 0.1, 0.1}
				}
				cfg := simConfig{nodes: 3, seed: 11, skew: simSkew, load: load, paced: true, limit: limit,
					joins: map[int]time.Duration{2: join}, noSnapshot: !snap, duration: simDuration(limit)}
				s := runSim(t, cfg)
				if snap {
					st := judge(t, s, limit, time.Second, 1.5, exactRef(t, cfg))
					if st.mean < 0.97 {
						t.Errorf("only %.2f%% of L passed", 100*st.mean)
					}
					return
				}
				acc, off := s.windows(-1, time.Second, s.cfg.duration)
				st := measure(acc, off, limit, 1.5)
				t.Logf("without the snapshot: %v", st)
				if st.over < 0.03 {
					t.Errorf("without the snapshot the joiner should overshoot (control), got %v", st)
				}
			})
		}
	}
}

// TestSimVsOpenSIPS runs the OpenSIPS ratelimit replication design in the
// same simulation (3 nodes, 80/10/10, 2L offered, same network and clocks;
// with -cps.report seeds 1 to 3, 10 s each, else one 5 s run) next to ours,
// a central counter (ours, on one node) and an exact sliding-window log,
// at L = simLimit and at 150 CPS, and compares the error of the accepted
// calls over every 1 s window (10 ms apart, after the first second) and
// the replication bandwidth (bytes on the wire sent per node, frame
// headers included). The figures in docs/BENCHMARKS.md come from `go test
// -run TestSimVsOpenSIPS -v ./edge/cps -args -cps.report`.
func TestSimVsOpenSIPS(t *testing.T) {
	t.Parallel()
	type row struct {
		limit            float64
		design, arrivals string
		st               errStats
		bw               float64
	}
	const (
		ours, openSIPS, central, exact = "anyedge", "OpenSIPS model", "one central counter", "exact sliding window"
	)
	var rows []row
	for _, limit := range []float64{simLimit, 150} {
		for _, paced := range []bool{true, false} {
			arr := "Poisson"
			if paced {
				arr = "paced"
			}
			for _, d := range []string{ours, openSIPS, central, exact} {
				var acc, off []int
				var bw float64
				seeds, dur := uint64(1), 5*time.Second
				if *report {
					seeds, dur = 3, 10*time.Second
				}
				for seed := uint64(1); seed <= seeds; seed++ {
					cfg := simConfig{nodes: 3, seed: seed, skew: simSkew, load: uneven(3, 2*limit), paced: paced, limit: limit,
						baseline: d == openSIPS, central: d == central, exact: d == exact, duration: dur}
					s := runSim(t, cfg)
					a, o := s.windows(-1, time.Second, s.cfg.duration)
					acc, off = append(acc, a...), append(off, o...)
					for _, b := range s.sent {
						bw += float64(b) / s.cfg.duration.Seconds() / float64(len(s.sent)) / float64(seeds)
					}
				}
				st := measure(acc, off, limit, 1.5)
				rows = append(rows, row{limit, d, arr, st, bw})
			}
		}
	}
	var b strings.Builder
	b.WriteString("| L | arrivals | design | p50 \\|err\\| | p99 \\|err\\| | worst over | worst under | mean accepted | replication per node |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		bw := fmt.Sprintf("%.0f B/s", r.bw)
		if r.design == central || r.design == exact {
			bw = "n/a"
		}
		fmt.Fprintf(&b, "| %.0f | %s | %s | %.2f%% | %.2f%% | %+.2f%% | %+.2f%% | %.2f%% of L | %s |\n", r.limit, r.arrivals, r.design,
			100*r.st.p50, 100*r.st.p99, 100*r.st.over, -100*r.st.under, 100*r.st.mean, bw)
	}
	if *report {
		fmt.Print(b.String())
	}
	t.Log("\n" + b.String())
	for i := 0; i < len(rows); i += 4 {
		if o, os := rows[i], rows[i+1]; o.st.p99 >= os.st.p99 {
			t.Errorf("L=%.0f, %s: ours p99 %.2f%% is not better than the OpenSIPS model's %.2f%%", o.limit, o.arrivals, 100*o.st.p99, 100*os.st.p99)
		}
	}
}
