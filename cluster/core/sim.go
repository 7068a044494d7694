// Simulation harness: a deterministic in-memory network of cores, used by
// this package's simulation tests and by modules built on the cluster (geo,
// cps) to run their logic over the real state machine with random
// partitions, in seconds.

package core

import (
	"container/heap"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

type edge struct{ a, b NodeID } // a < b

func mkEdge(a, b NodeID) edge {
	if a > b {
		a, b = b, a
	}
	return edge{a, b}
}

type simNode struct {
	id    NodeID
	core  *Core
	kv    *kv
	alive bool
	inc   uint64
	meta  NodeMeta
	known []NodeMeta
}

type delivery struct {
	at    time.Time
	seq   uint64
	from  NodeID
	to    NodeID
	gen   uint64
	frame *wire.Frame
}

type dq []*delivery

func (q dq) Len() int { return len(q) }
func (q dq) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q dq) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *dq) Push(x any)   { *q = append(*q, x.(*delivery)) }
func (q *dq) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// simNet is an in-memory network of cores with a fake clock: links with
// delay and FIFO order, silent (blackhole) and hard (TCP reset) cuts,
// crashes and restarts.
type simNet struct {
	t        Logger
	rnd      *rand.Rand
	now      time.Time
	nodes    map[NodeID]*simNode
	ids      []NodeID
	phys     map[edge]bool // cable present
	cut      map[edge]bool // blackholed
	linked   map[edge]uint64
	gen      uint64
	lastAt   map[[2]NodeID]time.Time
	q        dq
	qseq     uint64
	tags     []TagSpec
	trace    []string
	lastDial time.Time
	// holding is who is active for each tag right now (from the events);
	// overlap is the first time two nodes were (see noteActive).
	holding   map[string]map[NodeID]bool
	overlap   error
	lastReset time.Time // last reset of a link between two live nodes
	// Hooks for modules simulated on top of the cores.
	onBoot  func(id NodeID, c *Core)
	onEvent func(id NodeID, e Event)
}

// Logger is what the simulation logs to (a *testing.T will do).
type Logger interface{ Logf(format string, a ...any) }

func newSimNet(t Logger, seed int64) *simNet {
	return &simNet{
		t: t, rnd: rand.New(rand.NewSource(seed)),
		now:     time.Unix(1_700_000_000, 0),
		nodes:   map[NodeID]*simNode{},
		phys:    map[edge]bool{},
		cut:     map[edge]bool{},
		linked:  map[edge]uint64{},
		lastAt:  map[[2]NodeID]time.Time{},
		holding: map[string]map[NodeID]bool{},
	}
}

func (s *simNet) logf(format string, a ...any) {
	s.trace = append(s.trace, fmt.Sprintf("%8.3fs ", float64(s.now.UnixMilli()%1_000_000)/1000)+fmt.Sprintf(format, a...))
}

func (s *simNet) addNode(id NodeID, region string, seed bool) {
	n := &simNode{id: id, meta: NodeMeta{ID: id, Region: region, ClusterAddr: fmt.Sprintf("n%d", id), Priority: int32(100 + s.rnd.Intn(3)), Seed: seed}}
	s.nodes[id] = n
	s.ids = append(s.ids, id)
	s.boot(n)
}

func (s *simNet) boot(n *simNode) {
	n.inc++
	n.meta.Incarnation = n.inc
	n.kv = newKV()
	cfg := Config{
		Self: n.meta, Tags: s.tags, Known: n.known,
		SeedSyncDelay: 2 * time.Second, AntiEntropyInterval: 2 * time.Second,
		SyncTimeout: time.Second, SyncChunkBytes: 256, SyncWindow: 4,
		LSARefresh: 3 * time.Second, Seed: int64(n.id)*7919 + int64(n.inc),
		WAN: Timers{PingInterval: 300 * time.Millisecond, DeadAfter: 1200 * time.Millisecond},
	}
	n.core = New(cfg, s.now)
	n.core.Register(n.kv.capability())
	if s.onBoot != nil {
		s.onBoot(n.id, n.core)
	}
	n.alive = true
	s.drain(n)
}

func (s *simNet) drain(n *simNode) {
	if !n.alive {
		return
	}
	r := n.core.Ready()
	for _, e := range r.Events {
		if e.Kind == EventTagOwner {
			s.noteActive(n.id, e.Tag, e.Active)
		}
	}
	if s.onEvent != nil {
		for _, e := range r.Events {
			s.onEvent(n.id, e)
		}
	}
	for _, snd := range r.Sends {
		e := mkEdge(n.id, snd.To)
		g, ok := s.linked[e]
		if !ok {
			continue
		}
		if s.cut[e] {
			continue // blackholed
		}
		at := s.now.Add(time.Duration(1+s.rnd.Intn(4)) * time.Millisecond)
		k := [2]NodeID{n.id, snd.To}
		if last := s.lastAt[k]; at.Before(last) {
			at = last // TCP keeps order
		}
		s.lastAt[k] = at
		s.qseq++
		heap.Push(&s.q, &delivery{at: at, seq: s.qseq, from: n.id, to: snd.To, gen: g, frame: snd.Frame})
	}
	for _, peer := range r.Close {
		// The node closed the socket: the peer sees the close (unless the
		// cable is cut, then it finds out by itself).
		e := mkEdge(n.id, peer)
		if _, ok := s.linked[e]; ok {
			delete(s.linked, e)
			if p := s.nodes[peer]; p.alive && !s.cut[e] {
				p.core.LinkDown(s.now, n.id)
				s.drain(p)
			}
		}
	}
}

// resetGrace is how long after a reset between two live nodes an overlap
// is excused (see noteActive).
const resetGrace = 3 * time.Second

// noteActive checks, at every activation, the invariant "never two active
// holders of a tag at the same simulated instant". The failure model the
// cores are built for: a link lost between two live nodes is detected by
// heartbeat timeout on both sides (silent cuts, partitions, frozen nodes),
// and a connection closed by a peer (EOF/RST) means that peer's process is
// gone (hard crash). A reset of a link between two live nodes (a hard cut)
// breaks that model, as it would in production: for resetGrace after one,
// an overlap is not counted.
func (s *simNet) noteActive(id NodeID, tag string, active bool) {
	if s.holding[tag][id] != active {
		s.logf("node %d: %s active=%v", id, tag, active)
	}
	m := s.holding[tag]
	if m == nil {
		m = map[NodeID]bool{}
		s.holding[tag] = m
	}
	if !active {
		delete(m, id)
		return
	}
	m[id] = true
	if len(m) > 1 && s.overlap == nil && (s.lastReset.IsZero() || s.now.Sub(s.lastReset) > resetGrace) {
		var ids []NodeID
		for h := range m {
			ids = append(ids, h)
		}
		slices.Sort(ids)
		s.overlap = fmt.Errorf("tag %s: nodes %v active at the same instant (%.3fs)", tag, ids, float64(s.now.UnixMilli()%1_000_000)/1000)
		s.logf("OVERLAP %v", s.overlap)
	}
}

// unlink tears a link down on both sides at once (a TCP reset).
func (s *simNet) unlink(e edge) {
	if _, ok := s.linked[e]; !ok {
		return
	}
	if s.nodes[e.a].alive && s.nodes[e.b].alive {
		s.lastReset = s.now
	}
	delete(s.linked, e)
	for _, id := range []NodeID{e.a, e.b} {
		if n := s.nodes[id]; n.alive {
			other := e.a + e.b - id
			n.core.LinkDown(s.now, other)
			s.drain(n)
		}
	}
}

// dial links every physically connected pair that is not linked, as the
// shell's dialer does.
func (s *simNet) dial() {
	for _, e := range sortedEdges(s.phys) {
		if _, ok := s.linked[e]; ok || s.cut[e] {
			continue
		}
		a, b := s.nodes[e.a], s.nodes[e.b]
		if !a.alive || !b.alive {
			continue
		}
		if a.core.Admit(a.core.Self()) == nil || a.core.Admit(b.core.Self()) != nil || b.core.Admit(a.core.Self()) != nil {
			continue
		}
		s.gen++
		s.linked[e] = s.gen
		a.core.LinkUp(s.now, b.core.Self())
		b.core.LinkUp(s.now, a.core.Self())
		s.drain(a)
		s.drain(b)
	}
}

func sortedEdges(m map[edge]bool) []edge {
	var out []edge
	for e, ok := range m {
		if ok {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(x, y edge) int {
		if x.a != y.a {
			return int(x.a) - int(y.a)
		}
		return int(x.b) - int(y.b)
	})
	return out
}

const simTick = 20 * time.Millisecond

// run advances the simulation by d.
func (s *simNet) run(d time.Duration) {
	end := s.now.Add(d)
	for s.now.Before(end) {
		next := s.now.Add(simTick)
		for s.q.Len() > 0 && !s.q[0].at.After(next) {
			dl := heap.Pop(&s.q).(*delivery)
			if dl.at.After(s.now) {
				s.now = dl.at
			}
			e := mkEdge(dl.from, dl.to)
			if s.linked[e] != dl.gen || s.cut[e] {
				continue
			}
			n := s.nodes[dl.to]
			if !n.alive {
				continue
			}
			n.core.Recv(s.now, dl.from, dl.frame)
			s.drain(n)
		}
		s.now = next
		for _, id := range s.ids {
			if n := s.nodes[id]; n.alive {
				n.core.Tick(s.now)
				s.drain(n)
			}
		}
		if s.now.Sub(s.lastDial) >= 100*time.Millisecond {
			s.lastDial = s.now
			s.dial()
		}
	}
}

func (s *simNet) crash(id NodeID, hard bool) {
	n := s.nodes[id]
	n.known = nil
	for _, a := range n.core.Database() {
		n.known = append(n.known, a.Meta)
	}
	n.alive = false
	for _, m := range s.holding {
		delete(m, id) // a dead process holds nothing
	}
	// In edge order: map order would make the peers' reactions, and so the
	// seed's replay, differ from run to run.
	edges := slices.Collect(maps.Keys(s.linked))
	slices.SortFunc(edges, func(x, y edge) int {
		if x.a != y.a {
			return int(x.a) - int(y.a)
		}
		return int(x.b) - int(y.b)
	})
	for _, e := range edges {
		if e.a == id || e.b == id {
			if hard {
				s.unlink(e)
			} else {
				delete(s.linked, e) // the peer finds out by heartbeat
			}
		}
	}
}

// write makes a random synced node write a key and broadcast it.
func (s *simNet) write() {
	var cands []*simNode
	for _, id := range s.ids {
		n := s.nodes[id]
		if n.alive && n.core.caps["kv"].state == Synced {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return
	}
	n := cands[s.rnd.Intn(len(cands))]
	r := kvRec{Key: fmt.Sprintf("k%d", s.rnd.Intn(40)), Val: s.rnd.Uint64(), Ver: uint64(s.now.UnixNano()), Node: n.id}
	n.kv.merge(r)
	n.core.SendMatching(s.now, "kv", 1, nil, r.encode())
	s.drain(n)
}

// components returns, for every alive node, the set of alive nodes it can
// reach over uncut cables.
func (s *simNet) components() map[NodeID]map[NodeID]bool {
	out := map[NodeID]map[NodeID]bool{}
	for _, id := range s.ids {
		if !s.nodes[id].alive || out[id] != nil {
			continue
		}
		comp := map[NodeID]bool{id: true}
		stack := []NodeID{id}
		for len(stack) > 0 {
			cur := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, e := range sortedEdges(s.phys) {
				var o NodeID
				switch cur {
				case e.a:
					o = e.b
				case e.b:
					o = e.a
				default:
					continue
				}
				if s.cut[e] || !s.nodes[o].alive || comp[o] {
					continue
				}
				comp[o] = true
				stack = append(stack, o)
			}
		}
		for m := range comp {
			out[m] = comp
		}
	}
	return out
}

// checkStable checks the topology and tag invariants on a network that has
// had time to settle.
func (s *simNet) checkStable() error {
	if s.overlap != nil {
		return s.overlap
	}
	comps := s.components()
	for _, id := range s.ids {
		n := s.nodes[id]
		if !n.alive {
			continue
		}
		// Routes only over live links.
		for _, dst := range n.core.UpNodes() {
			hop, _ := n.core.NextHop(dst)
			e := mkEdge(id, hop)
			if _, ok := s.linked[e]; !ok || s.cut[e] || !s.nodes[hop].alive {
				return fmt.Errorf("node %d routes to %d via %d over a dead link", id, dst, hop)
			}
		}
		// Every reachable node seen as up, and nothing else.
		var want, got []NodeID
		for m := range comps[id] {
			if m != id {
				want = append(want, m)
			}
		}
		slices.Sort(want)
		got = n.core.UpNodes()
		if !slices.Equal(want, got) {
			return fmt.Errorf("node %d sees up %v, reachable are %v", id, got, want)
		}
	}
	// At most one active owner per tag, across partitions too.
	for _, t := range s.tags {
		var owners []NodeID
		for _, id := range s.ids {
			if n := s.nodes[id]; n.alive {
				for _, ti := range n.core.Tags() {
					if ti.Name == t.Name && ti.Active {
						owners = append(owners, id)
					}
				}
			}
		}
		if len(owners) > 1 {
			return fmt.Errorf("tag %s has %d active owners: %v", t.Name, len(owners), owners)
		}
	}
	return nil
}

// checkConverged checks the end state of a healed, fully alive network.
func (s *simNet) checkConverged() error {
	if err := s.checkStable(); err != nil {
		return err
	}
	for _, t := range s.tags {
		owners := 0
		elig := 0
		for _, id := range s.ids {
			n := s.nodes[id]
			for _, ti := range n.core.Tags() {
				if ti.Name == t.Name && ti.Active {
					owners++
				}
			}
			if n.core.Eligible(t.Name, id) {
				elig++
			}
		}
		if elig > 0 && owners != 1 {
			return fmt.Errorf("tag %s: %d owners after heal, want 1", t.Name, owners)
		}
	}
	ref := s.nodes[s.ids[0]]
	for _, id := range s.ids {
		n := s.nodes[id]
		if st := n.core.caps["kv"].state; st != Synced {
			return fmt.Errorf("node %d kv is %v", id, st)
		}
		if !maps.Equal(n.kv.m, ref.kv.m) {
			return fmt.Errorf("node %d kv differs from node %d (%d vs %d keys)", id, ref.id, len(n.kv.m), len(ref.kv.m))
		}
	}
	return nil
}

func (s *simNet) eventually(d time.Duration, check func() error) error {
	var err error
	for end := s.now.Add(d); s.now.Before(end); {
		s.run(200 * time.Millisecond)
		if err = check(); err == nil {
			return nil
		}
	}
	return err
}

// Sim is the simulation network, exported for modules built on the
// cluster: they register their capabilities in OnBoot, call into a node's
// Core and then Flush it, and watch Events.
type Sim = simNet

// NewSim returns an empty simulated network. Tags apply to nodes added
// afterwards.
func NewSim(log Logger, seed int64, tags ...TagSpec) *Sim {
	s := newSimNet(log, seed)
	s.tags = tags
	return s
}

// OnBoot is called for every (re)start of a node, after the simulation's
// own capability is registered: register the module's capabilities here.
func (s *simNet) OnBoot(fn func(id NodeID, c *Core)) { s.onBoot = fn }

// OnEvent receives every node's events.
func (s *simNet) OnEvent(fn func(id NodeID, e Event)) { s.onEvent = fn }

// AddNode adds and boots a node.
func (s *simNet) AddNode(id NodeID, region string, seed bool) { s.addNode(id, region, seed) }

// Connect lays a cable between two nodes.
func (s *simNet) Connect(a, b NodeID) { s.phys[mkEdge(a, b)] = true }

// Cut blackholes a cable (hard: both ends see a reset at once).
func (s *simNet) Cut(a, b NodeID, hard bool) {
	e := mkEdge(a, b)
	s.cut[e] = true
	if hard {
		s.unlink(e)
	}
}

// Heal restores a cable; HealAll restores every one.
func (s *simNet) Heal(a, b NodeID) { delete(s.cut, mkEdge(a, b)) }
func (s *simNet) HealAll()         { clear(s.cut) }

// Crash stops a node (hard: its peers see the sockets close).
func (s *simNet) Crash(id NodeID, hard bool) { s.crash(id, hard) }

// Restart boots a crashed node with a new incarnation.
func (s *simNet) Restart(id NodeID) { s.boot(s.nodes[id]) }

// Alive reports whether the node runs.
func (s *simNet) Alive(id NodeID) bool { return s.nodes[id].alive }

// Core is a running node's state machine (nil when crashed).
func (s *simNet) Core(id NodeID) *Core {
	if n := s.nodes[id]; n != nil && n.alive {
		return n.core
	}
	return nil
}

// Flush delivers the output of calls made into a node's core.
func (s *simNet) Flush(id NodeID) { s.drain(s.nodes[id]) }

// Run advances simulated time.
func (s *simNet) Run(d time.Duration) { s.run(d) }

// Now is the simulated time.
func (s *simNet) Now() time.Time { return s.now }

// Rand is the simulation's deterministic random source.
func (s *simNet) Rand() *rand.Rand { return s.rnd }

// IDs lists the nodes in the order they were added.
func (s *simNet) IDs() []NodeID { return slices.Clone(s.ids) }

// Eventually runs the network until check passes or d has passed.
func (s *simNet) Eventually(d time.Duration, check func() error) error { return s.eventually(d, check) }

// CheckStable checks routes, reachability and tag ownership (see the
// package's simulation test).
func (s *simNet) CheckStable() error { return s.checkStable() }

// Trace is the log of the actions taken so far.
func (s *simNet) Trace() []string { return slices.Clone(s.trace) }

// Logf adds a line to the trace.
func (s *simNet) Logf(format string, a ...any) { s.logf(format, a...) }
