package geo

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// The simulation drives 4–6 nodes in two regions (an HA tag per region)
// through random REGISTER and re-REGISTER load (moves between nodes and
// regions, unregisters, short and long expiries), node crashes (silent
// and hard) and restarts, and partitions (random sides, an isolated node,
// a whole region cut off), then heals everything, restarts every node and
// checks the guarantee documented in the package doc:
//
//   - every UA whose last REGISTER was acknowledged is found, with that
//     REGISTER's contact and nothing else, by a fresh lookup at every node
//     (locally, as a served replica, or through a relay to a live node
//     whose LookupLocal has it), provided the binding has not expired and
//     the acknowledgement was "replicated", or the home never crashed
//     after it (a degraded or alone acknowledgement lives on the home
//     only until anti-entropy copies it);
//   - every UA whose last acknowledged REGISTER removed its binding is
//     found nowhere;
//   - every node holds the same metadata, every node of a region the same
//     bindings, and no live metadata entry points at a home that holds
//     nothing for the AoR.
//
// Crashes follow the failure model the guarantee is stated for: a node is
// crashed only while every node of its region is alive, synced and
// connected, and has been for settleTime (so the region never loses two
// holders of the same data at once). Everything else is random.
//
//	go test ./geo -run TestSimulation -geo.seed=N   # replay one seed
//	go test ./geo -run TestSimulation -geo.seeds=2000
var (
	geoSeed  = flag.Int64("geo.seed", 0, "run only this simulation seed")
	geoSeeds = flag.Int("geo.seeds", 0, "number of random schedules (default 200; 20 with -race or -short)")
)

const settleTime = 3 * time.Second

type attempt struct {
	node     uint32
	contact  string
	removal  bool
	expires  time.Time
	gen      *gen
	result   AckResult
	crashes  int // the home's crash count when it was acknowledged
	acked    bool
	unknown  bool // the home crashed before answering
	at       time.Time
	instance string
}

type simUA struct {
	ua
	region  string
	last    *attempt // the last REGISTER sent
	lastOK  *attempt // the last acknowledged one
	lastAt  uint32   // node of the last acknowledged registration
	moveSeq int
	history []string
	// at maps each contact to the node it was registered at.
	at map[string]uint32
	// acked lists every acknowledged REGISTER, in order.
	acked []*attempt
}

func (u *simUA) log(s *schedule, format string, a ...any) {
	u.history = append(u.history, fmt.Sprintf("%8.3fs ", float64(s.sim.Now().UnixMilli()%1_000_000)/1000)+fmt.Sprintf(format, a...))
}

// sameHome reports whether the extra contacts are legitimately there: a
// UA without an instance that registered a new contact with the same
// Call-ID at the same node has two bindings there (RFC 3261 §10.3:
// different contacts), unless it registered at another node in between
// and that registration survived (its claim retires the older ones).
func (u *simUA) sameHome(s *schedule, contacts []string, last *attempt) bool {
	if u.instance != "" {
		return false
	}
	for _, c := range contacts {
		if c == last.contact {
			continue
		}
		if u.at[c] != last.node {
			return false
		}
		var since time.Time
		for _, a := range u.acked {
			if a.contact == c && !a.removal && since.IsZero() {
				since = a.at
			}
		}
		for _, a := range u.acked {
			survived := a.result == AckReplicated || s.crashes[a.node] == a.crashes
			if a.node != last.node && !a.removal && survived && a.at.After(since) && a.at.Before(last.at) {
				return false
			}
		}
	}
	return true
}

func (u *simUA) tail() string {
	h := u.history
	if len(h) > 16 {
		h = h[len(h)-16:]
	}
	return "\n    " + strings.Join(h, "\n    ")
}

type schedule struct {
	*geoSim
	uas       []*simUA
	crashes   map[uint32]int
	cut       map[[2]uint32]bool
	healthyAt map[string]time.Time // region -> since when it has been healthy (zero: not)
	stats     map[string]int
	failed    error // a durability violation seen during the run
}

func newSchedule(t testing.TB, seed int64) *schedule {
	r := newRand(seed)
	nEU, nUS := 2+r.Intn(2), 2+r.Intn(2)
	var nodes []simNode
	for i := range nEU + nUS {
		region := "eu"
		if i >= nEU {
			region = "us"
		}
		nodes = append(nodes, simNode{uint32(i + 1), region})
	}
	s := &schedule{
		// 16 buckets: several AoRs per bucket, and a cheap sweep.
		geoSim:    newGeoSim(t, seed, Config{MoveGrace: 400 * time.Millisecond, Buckets: 16}, nodes...),
		crashes:   map[uint32]int{},
		cut:       map[[2]uint32]bool{},
		healthyAt: map[string]time.Time{},
		stats:     map[string]int{},
	}
	rnd := s.sim.Rand()
	nAoR := 6 + rnd.Intn(6)
	for i := range 10 + rnd.Intn(14) {
		u := &simUA{region: s.regions[rnd.Intn(2)]}
		u.aor = fmt.Sprintf("sip:user%d@example.com", rnd.Intn(nAoR))
		if rnd.Intn(2) == 0 {
			u.instance = fmt.Sprintf("<urn:uuid:%04d>", i)
		}
		u.callID = fmt.Sprintf("call-%d@ua", i)
		u.contact = fmt.Sprintf("sip:ua%d@10.0.0.%d:5060", i, i)
		s.uas = append(s.uas, u)
	}
	s.sim.Logf("nodes=%v uas=%d aors=%d", nodes, len(s.uas), nAoR)
	return s
}

// newRand gives the layout its own source, so that the simulation's own
// random stream is the same for a seed whatever the layout.
func newRand(seed int64) interface{ Intn(int) int } {
	return &lcg{x: uint64(seed)*6364136223846793005 + 1442695040888963407}
}

type lcg struct{ x uint64 }

func (l *lcg) Intn(n int) int {
	l.x = l.x*6364136223846793005 + 1442695040888963407
	return int((l.x >> 33) % uint64(n))
}

func edgeKey(a, b uint32) [2]uint32 {
	if a > b {
		a, b = b, a
	}
	return [2]uint32{a, b}
}

func (s *schedule) setCut(a, b uint32, hard bool) {
	s.cut[edgeKey(a, b)] = true
	s.sim.Cut(a, b, hard)
}

func (s *schedule) healAll() {
	clear(s.cut)
	s.sim.HealAll()
}

// connected reports whether a and b are linked through live nodes over
// uncut cables (the mesh is full).
func (s *schedule) connected(a, b uint32) bool {
	seen := map[uint32]bool{a: true}
	stack := []uint32{a}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if cur == b {
			return true
		}
		for _, n := range s.ids {
			if !seen[n] && s.sim.Alive(n) && !s.cut[edgeKey(cur, n)] {
				seen[n] = true
				stack = append(stack, n)
			}
		}
	}
	return false
}

// updateHealth tracks since when each region has had every node alive,
// synced and connected.
func (s *schedule) updateHealth() {
	for _, region := range s.regions {
		ok := true
		var first uint32
		for _, id := range s.ids {
			if s.region[id] != region {
				continue
			}
			if !s.sim.Alive(id) || !s.svc[id].Synced() {
				ok = false
				break
			}
			if first == 0 {
				first = id
			} else if !s.connected(first, id) {
				ok = false
				break
			}
		}
		switch {
		case !ok:
			s.healthyAt[region] = time.Time{}
		case s.healthyAt[region].IsZero():
			s.healthyAt[region] = s.sim.Now()
		}
	}
}

func (s *schedule) mayCrash(id uint32) bool {
	h := s.healthyAt[s.region[id]]
	return s.sim.Alive(id) && !h.IsZero() && s.sim.Now().Sub(h) >= settleTime
}

// entry picks a live, synced node for a UA: one of its region's, or any
// (often a move to the other region) with probability 1/4.
func (s *schedule) entry(u *simUA) uint32 {
	rnd := s.sim.Rand()
	var cands []uint32
	any := rnd.Intn(4) == 0
	for _, id := range s.ids {
		if s.sim.Alive(id) && s.svc[id].Synced() && (any || s.region[id] == u.region) {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return 0
	}
	return cands[rnd.Intn(len(cands))]
}

func (s *schedule) send(u *simUA) {
	rnd := s.sim.Rand()
	a := &attempt{at: s.sim.Now()}
	if u.lastOK != nil && !u.lastOK.removal && rnd.Intn(10) == 0 {
		// Unregister, at the node that holds the binding (a UA that
		// unregisters elsewhere only clears it there: see the doc).
		a.node = u.lastAt
		a.removal = true
		if !s.sim.Alive(a.node) || !s.svc[a.node].Synced() {
			return
		}
	} else {
		a.node = s.entry(u)
		if a.node == 0 {
			return
		}
		if a.node != u.lastAt && u.instance == "" {
			// A new NAT mapping: the contact changes with the node.
			u.moveSeq++
			u.contact = fmt.Sprintf("sip:%s@10.9.%d.%d:%d", strings.TrimPrefix(u.callID, "call-"), a.node, u.moveSeq%250, 5060+u.moveSeq)
		}
	}
	exp := []time.Duration{6 * time.Second, 15 * time.Second, time.Minute, time.Hour}[rnd.Intn(4)]
	if a.removal {
		exp = 0
	}
	a.contact, a.instance = u.contact, u.instance
	if u.at == nil {
		u.at = map[string]uint32{}
	}
	if !a.removal {
		u.at[a.contact] = a.node
	}
	a.expires = s.sim.Now().Add(exp)
	a.crashes = s.crashes[a.node]
	gn, err := s.register(a.node, &u.ua, exp)
	if err != nil {
		s.t.Fatalf("save at %d: %v", a.node, err)
	}
	a.gen = gn
	u.last = a
	s.stats["register"]++
	u.log(s, "REGISTER at %d contact=%s expires=%v cseq=%d", a.node, a.contact, exp, u.cseq)
	s.resolve(u)
}

// resolve records the outcome of a UA's pending REGISTER.
func (s *schedule) resolve(u *simUA) {
	a := u.last
	if a == nil || a.acked || a.unknown {
		return
	}
	if s.crashes[a.node] != a.crashes {
		a.unknown = true
		s.stats["unanswered"]++
		return
	}
	r := AckAlone // nothing to replicate (a removal of nothing)
	if a.gen != nil {
		if r = a.gen.Result(); r == AckPending {
			return
		}
	}
	a.result, a.acked = r, true
	s.stats[r.String()]++
	u.log(s, "acked %v", r)
	u.lastOK = a
	u.acked = append(u.acked, a)
	if !a.removal {
		u.lastAt = a.node
	}
}

func (s *schedule) pending(u *simUA) bool {
	return u.last != nil && !u.last.acked && !u.last.unknown
}

func (s *schedule) chaos() {
	rnd := s.sim.Rand()
	switch k := rnd.Intn(22); {
	case k < 6:
		id := s.ids[rnd.Intn(len(s.ids))]
		if s.mayCrash(id) {
			hard := rnd.Intn(2) == 0
			s.sim.Logf("crash %d hard=%v", id, hard)
			s.sim.Crash(id, hard)
			s.crashes[id]++
			s.stats["crash"]++
		}
	case k < 11:
		for _, id := range s.ids {
			if !s.sim.Alive(id) {
				s.sim.Logf("restart %d", id)
				s.sim.Restart(id)
				break
			}
		}
	case k < 15:
		side := map[uint32]bool{}
		for _, id := range s.ids {
			side[id] = rnd.Intn(2) == 0
		}
		hard := rnd.Intn(2) == 0
		s.sim.Logf("partition %v hard=%v", side, hard)
		for i, a := range s.ids {
			for _, b := range s.ids[i+1:] {
				if side[a] != side[b] {
					s.setCut(a, b, hard)
				}
			}
		}
		s.stats["partition"]++
	case k < 17:
		s.sim.Logf("cut the regions apart")
		for i, a := range s.ids {
			for _, b := range s.ids[i+1:] {
				if s.region[a] != s.region[b] {
					s.setCut(a, b, false)
				}
			}
		}
		s.stats["wan-cut"]++
	case k < 19:
		id := s.ids[rnd.Intn(len(s.ids))]
		s.sim.Logf("isolate %d", id)
		for _, b := range s.ids {
			if b != id {
				s.setCut(id, b, rnd.Intn(2) == 0)
			}
		}
		s.stats["isolate"]++
	default:
		s.sim.Logf("heal all")
		s.healAll()
	}
}

func (s *schedule) run(steps int) {
	rnd := s.sim.Rand()
	for range steps {
		s.updateHealth()
		for range rnd.Intn(3) {
			u := s.uas[rnd.Intn(len(s.uas))]
			if !s.pending(u) {
				s.send(u)
			}
		}
		// Chaos after the REGISTERs and before the network delivers them:
		// a home may die with its replication still on the wire.
		if rnd.Intn(30) == 0 {
			s.chaos()
		}
		s.step()
		for _, u := range s.uas {
			s.resolve(u)
			if err := s.durable(u); err != nil {
				s.failed = err
				return
			}
		}
	}
}

// durable checks, at any moment, that a UA's last replicated registration
// is held by a live node of its home's region (as is, or replaced by a
// newer version of the same record) until it expires: under the failure
// model a replicated change is never lost, whatever happens to the home.
func (s *schedule) durable(u *simUA) error {
	a := u.lastOK
	now := s.sim.Now()
	if a == nil || a.removal || a.result != AckReplicated || !a.expires.After(now) {
		return nil
	}
	key := "c:" + a.contact
	if a.instance != "" {
		key = "i:" + a.instance
	}
	var holders []uint32
	for _, id := range s.ids {
		if !s.sim.Alive(id) || s.region[id] != s.region[a.node] {
			continue
		}
		svc := s.svc[id]
		sh := svc.st.shard(u.aor)
		sh.mu.Lock()
		if st := sh.aors[u.aor]; st != nil {
			if i := st.findBind(a.node, key); i >= 0 && st.binds[i].ver.T >= a.at.UnixNano() {
				holders = append(holders, id)
			}
		}
		sh.mu.Unlock()
	}
	if len(holders) == 0 {
		return fmt.Errorf("ua %s/%s: registration at node %d (%v, acked replicated) held by no live node%s", u.aor, u.callID, a.node, a.at.Format("05.000"), u.tail())
	}
	return nil
}

// check verifies the end state (see the top of the file).
func (s *schedule) check() error {
	now := s.sim.Now()
	for _, id := range s.ids {
		if !s.sim.Alive(id) || !s.svc[id].Synced() {
			return fmt.Errorf("node %d not up and synced", id)
		}
	}
	for i, u := range s.uas {
		a := u.lastOK
		if a == nil || u.last != a {
			continue // never acknowledged, or the last REGISTER went unanswered
		}
		protected := a.result == AckReplicated || s.crashes[a.node] == a.crashes
		if !protected {
			continue
		}
		for _, id := range s.ids {
			bs, err := s.reach(id, u.aor)
			if err != nil {
				return fmt.Errorf("ua %d: %w", i, err)
			}
			var got []string
			for j := range bs {
				if u.matches(&bs[j]) {
					got = append(got, bs[j].Contact)
				}
			}
			switch {
			case a.removal && len(got) > 0:
				return fmt.Errorf("ua %d (%s) unregistered at node %d (ack %v) is still reached from node %d: %v%s", i, u.aor, a.node, a.result, id, got, u.tail())
			case a.removal:
			case !a.expires.After(now.Add(time.Second)):
				// expired (or about to): nothing to check
			case !slices.Contains(got, a.contact) || (len(got) > 1 && !u.sameHome(s, got, a)):
				return fmt.Errorf("ua %d (%s inst=%q call=%s) registered at node %d at %v (ack %v, expires %v): node %d reaches %v, want [%s]%s",
					i, u.aor, u.instance, u.callID, a.node, a.at.Format("05.000"), a.result, a.expires.Format("04:05"), id, got, a.contact, u.tail())
			}
		}
	}
	ref := s.svc[s.ids[0]].dumpMeta()
	for _, id := range s.ids {
		if m := s.svc[id].dumpMeta(); !maps.Equal(m, ref) {
			return fmt.Errorf("metadata of node %d differs from node %d:\n%s", id, s.ids[0], diffMaps(ref, m))
		}
	}
	for _, region := range s.regions {
		var ref map[string]string
		var refID uint32
		for _, id := range s.ids {
			if s.region[id] != region {
				continue
			}
			b := s.svc[id].dumpBinds()
			if ref == nil {
				ref, refID = b, id
			} else if !maps.Equal(b, ref) {
				return fmt.Errorf("bindings of node %d differ from node %d:\n%s", id, refID, diffMaps(ref, b))
			}
		}
	}
	// No live metadata entry without a binding behind it.
	for _, id := range s.ids {
		svc := s.svc[id]
		for i := range svc.st.shards {
			sh := &svc.st.shards[i]
			sh.mu.Lock()
			for aor, st := range sh.aors {
				for _, m := range st.metas {
					if m.dead || m.expires <= now.UnixNano() || s.region[m.home] != s.region[id] {
						continue
					}
					found := false
					for j := range st.binds {
						found = found || (st.binds[j].home == m.home && svc.st.usable(st, &st.binds[j], now.UnixNano()))
					}
					if !found {
						sh.mu.Unlock()
						return fmt.Errorf("node %d: live metadata %s@%d with no binding behind it", id, aor, m.home)
					}
				}
			}
			sh.mu.Unlock()
		}
	}
	return nil
}

func diffMaps(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("  only in first: %s = %s", k, v))
		} else if w != v {
			out = append(out, fmt.Sprintf("  %s: %s vs %s", k, v, w))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("  only in second: %s = %s", k, v))
		}
	}
	slices.Sort(out)
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("  ... %d more", len(out)-12))
	}
	return strings.Join(out, "\n")
}

func runSchedule(t testing.TB, seed int64) (*schedule, error) {
	s := newSchedule(t, seed)
	s.run(750) // 15 s of load and chaos
	if s.failed != nil {
		return s, s.failed
	}
	s.sim.Logf("heal all, restart all")
	s.healAll()
	for _, id := range s.ids {
		if !s.sim.Alive(id) {
			s.sim.Restart(id)
		}
	}
	// Sync, anti-entropy (every 2 s in the simulation) and the move grace;
	// checked every 200 ms.
	var err error
	for range 150 {
		for range 10 {
			s.step()
		}
		for _, u := range s.uas {
			s.resolve(u)
		}
		if err = s.check(); err == nil {
			return s, nil
		}
	}
	return s, err
}

func TestSimulation(t *testing.T) {
	n := *geoSeeds
	if n == 0 {
		n = 200
		if raceEnabled || testing.Short() {
			n = 20
		}
	}
	seeds := make([]int64, 0, n)
	if *geoSeed != 0 {
		seeds = append(seeds, *geoSeed)
	} else {
		for i := 1; i <= n; i++ {
			seeds = append(seeds, int64(i))
		}
	}
	total := map[string]int{}
	for _, seed := range seeds {
		s, err := runSchedule(t, seed)
		if err != nil {
			tail := s.sim.Trace()
			if len(tail) > 40 {
				tail = tail[len(tail)-40:]
			}
			t.Fatalf("seed %d: %v\nreproduce: go test ./geo -run TestSimulation -geo.seed=%d\n%s", seed, err, seed, strings.Join(tail, "\n"))
		}
		for k, v := range s.stats {
			total[k] += v
		}
	}
	t.Logf("%d schedules passed: %v", len(seeds), total)
}
