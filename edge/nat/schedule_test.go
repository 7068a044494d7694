package nat

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

func binding(i int) location.Binding {
	return location.Binding{AoR: fmt.Sprintf("sip:u%d@example.com", i), Contact: fmt.Sprintf("sip:u%d@10.0.0.1:5060", i),
		Received: fmt.Sprintf("127.0.0.1:%d", 20000+i), Transport: "udp", NATed: true}
}

// TestSpreadAcrossInterval proves that many bindings seen at once are not
// all probed at once: the first probes fall uniformly over one interval.
func TestSpreadAcrossInterval(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	s := newSchedule(30*time.Second, 0.1, 3, r.Float64)
	t0 := time.Unix(1000, 0)
	var bs []location.Binding
	for i := 0; i < 3000; i++ {
		bs = append(bs, binding(i))
	}
	s.sync(bs, t0)
	if got := len(s.take(t0)); got > 10 {
		t.Fatalf("%d probes due at once right after sync", got)
	}
	// Per 3 s slice of the 30 s interval, about a tenth of them.
	total := 0
	for sec := 3; sec <= 30; sec += 3 {
		n := len(s.take(t0.Add(time.Duration(sec) * time.Second)))
		total += n
		if n < 200 || n > 400 {
			t.Errorf("slice ending at %ds: %d probes, want about 300", sec, n)
		}
	}
	if total < 2990 {
		t.Errorf("only %d of 3000 probed within the first interval", total)
	}
}

func TestJitterAndInflight(t *testing.T) {
	s := newSchedule(10*time.Second, 0.1, 3, func() float64 { return 0 })
	t0 := time.Unix(0, 0)
	b := binding(1)
	s.sync([]location.Binding{b}, t0)
	if len(s.take(t0)) != 1 {
		t.Fatal("not due at once with rnd=0")
	}
	// In flight: not handed out again, however late.
	if len(s.take(t0.Add(time.Hour))) != 0 {
		t.Fatal("handed out twice while in flight")
	}
	s.result(b, true)
	// rnd=0 → jitter -10 %: due after 9 s, not before.
	if len(s.take(t0.Add(8*time.Second))) != 0 {
		t.Fatal("due before interval-jitter")
	}
	if len(s.take(t0.Add(9*time.Second))) != 1 {
		t.Fatal("not due at interval-jitter")
	}
}

func TestFailuresRemove(t *testing.T) {
	s := newSchedule(time.Second, 0, 3, func() float64 { return 0 })
	b := binding(1)
	now := time.Unix(0, 0)
	s.sync([]location.Binding{b}, now)
	for i := 1; i <= 3; i++ {
		if len(s.take(now)) != 1 {
			t.Fatalf("round %d: not due", i)
		}
		rm := s.result(b, false)
		if rm != (i == 3) {
			t.Fatalf("round %d: remove=%v", i, rm)
		}
		now = now.Add(time.Second)
	}
	if s.len() != 0 {
		t.Fatal("removed binding still scheduled")
	}
	// A success resets the count.
	s.sync([]location.Binding{b}, now)
	for _, ok := range []bool{false, false, true, false, false} {
		s.take(now)
		if s.result(b, ok) {
			t.Fatal("removed although a success came between failures")
		}
		now = now.Add(time.Second)
	}
}

func TestSyncForgets(t *testing.T) {
	s := newSchedule(time.Second, 0, 3, func() float64 { return 0 })
	now := time.Unix(0, 0)
	s.sync([]location.Binding{binding(1), binding(2)}, now)
	s.sync([]location.Binding{binding(2)}, now)
	if s.len() != 1 {
		t.Fatalf("len %d after one binding went away", s.len())
	}
	if s.result(binding(1), false) {
		t.Fatal("result for a forgotten binding removed something")
	}
}
