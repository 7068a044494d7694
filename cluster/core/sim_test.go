package core

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"
)

var (
	simSeed  = flag.Int64("sim.seed", 0, "run only this simulation seed")
	simCount = flag.Int("sim.n", 1000, "number of random schedules")
)

// schedule builds a random cluster and drives it through random failures.
func schedule(t testing.TB, seed int64) (s *simNet, err error) {
	s = newSimNet(t, seed)
	r := s.rnd
	nn := 3 + r.Intn(7)
	s.tags = []TagSpec{{Name: "r1", Region: "r1"}, {Name: "pair", Nodes: []NodeID{1, 2}}}
	for i := 1; i <= nn; i++ {
		region := "r1"
		if r.Intn(3) == 0 {
			region = "r2"
		}
		s.addNode(NodeID(i), region, i == 1)
	}
	// A random connected partial mesh: a random tree plus extra cables.
	for i := 2; i <= nn; i++ {
		s.phys[mkEdge(NodeID(i), NodeID(1+r.Intn(i-1)))] = true
	}
	for i := 1; i <= nn; i++ {
		for j := i + 1; j <= nn; j++ {
			if r.Float64() < 0.35 {
				s.phys[mkEdge(NodeID(i), NodeID(j))] = true
			}
		}
	}
	s.logf("nodes=%d cables=%v", nn, sortedEdges(s.phys))
	if err := s.eventually(10*time.Second, s.checkConverged); err != nil {
		return s, fmt.Errorf("initial formation: %w", err)
	}
	edges := sortedEdges(s.phys)
	steps := 6 + r.Intn(10)
	for i := 0; i < steps; i++ {
		for w := r.Intn(20); w > 0; w-- {
			s.write()
		}
		switch k := r.Intn(10); {
		case k < 2:
			e := edges[r.Intn(len(edges))]
			if r.Intn(2) == 0 {
				s.logf("cut %v silently", e)
				s.cut[e] = true
			} else {
				s.logf("cut %v hard", e)
				s.cut[e] = true
				s.unlink(e)
			}
		case k < 4:
			e := edges[r.Intn(len(edges))]
			s.logf("heal %v", e)
			delete(s.cut, e)
		case k < 6:
			id := s.ids[r.Intn(len(s.ids))]
			if n := s.nodes[id]; n.alive {
				hard := r.Intn(2) == 0
				s.logf("crash %d hard=%v", id, hard)
				s.crash(id, hard)
			} else {
				s.logf("restart %d", id)
				s.boot(n)
			}
		case k < 7:
			// Partition: a random side, every cable across it cut silently.
			side := map[NodeID]bool{}
			for _, id := range s.ids {
				side[id] = r.Intn(2) == 0
			}
			s.logf("partition %v", side)
			for _, e := range edges {
				if side[e.a] != side[e.b] {
					s.cut[e] = true
				}
			}
		case k < 8:
			s.logf("heal all")
			clear(s.cut)
		case k < 9:
			id := s.ids[r.Intn(len(s.ids))]
			if n := s.nodes[id]; n.alive {
				tag := s.tags[r.Intn(len(s.tags))].Name
				target := s.ids[r.Intn(len(s.ids))]
				err := n.core.SetTagActive(s.now, tag, target)
				s.logf("node %d: set-active %s %d: %v", id, tag, target, err)
				s.drain(n)
			}
		default:
			for w := 20 + r.Intn(50); w > 0; w-- {
				s.write()
				s.run(5 * time.Millisecond)
			}
		}
		s.run(time.Duration(r.Intn(800)) * time.Millisecond)
		if r.Intn(3) == 0 {
			// Let it settle and check the invariants mid-schedule.
			if err := s.eventually(4*time.Second, s.checkStable); err != nil {
				return s, fmt.Errorf("step %d: %w", i, err)
			}
		}
	}
	s.logf("heal all, restart all")
	clear(s.cut)
	for _, id := range s.ids {
		if n := s.nodes[id]; !n.alive {
			s.boot(n)
		}
	}
	if err := s.eventually(30*time.Second, s.checkConverged); err != nil {
		return s, fmt.Errorf("after heal: %w", err)
	}
	return s, nil
}

func TestSimulation(t *testing.T) {
	seeds := make([]int64, 0, *simCount)
	if *simSeed != 0 {
		seeds = append(seeds, *simSeed)
	} else {
		n := *simCount
		if testing.Short() || raceEnabled {
			n = min(n, 100)
		}
		for i := 1; i <= n; i++ {
			seeds = append(seeds, int64(i))
		}
	}
	for _, seed := range seeds {
		s, err := schedule(t, seed)
		if err != nil {
			tail := s.trace
			if len(tail) > 40 {
				tail = tail[len(tail)-40:]
			}
			t.Fatalf("seed %d: %v\nreproduce: go test ./cluster/core -run TestSimulation -sim.seed=%d\n%s", seed, err, seed, strings.Join(tail, "\n"))
		}
	}
	t.Logf("%d schedules passed", len(seeds))
}
