package upstream

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStateHysteresis(t *testing.T) {
	s := state{up: true}
	seq := []struct {
		ok     bool
		up     bool
		change bool
	}{
		{false, true, false}, {false, true, false}, {false, false, true}, // down after 3
		{true, false, false}, {false, false, false}, {true, false, false}, {true, true, true}, // up after 2 in a row
	}
	for i, st := range seq {
		ch := s.observe(st.ok, 3, 2)
		if s.up != st.up || ch != st.change {
			t.Fatalf("step %d: up=%v change=%v, want %v %v", i, s.up, ch, st.up, st.change)
		}
	}
}

type probes struct {
	mu   sync.Mutex
	down map[string]bool
}

func (p *probes) Probe(_ context.Context, t Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down[t.Addr] {
		return ErrUnhealthy
	}
	return nil
}

func TestOrderAndProbes(t *testing.T) {
	targets := []Target{{Addr: "192.0.2.1:5060", Weight: 3}, {Addr: "192.0.2.2:5060", Weight: 1}}
	for i := range targets {
		if err := targets[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	pr := &probes{down: map[string]bool{}}
	reg := prometheus.NewRegistry()
	p, err := New(targets, Health{}, pr, WithRand(rand.New(rand.NewPCG(3, 4))), WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]int{}
	for i := 0; i < 4000; i++ {
		o := p.Order()
		if len(o) != 2 {
			t.Fatalf("order has %d targets", len(o))
		}
		first[o[0].Addr]++
	}
	if r := float64(first["192.0.2.1:5060"]) / 4000; r < 0.7 || r > 0.8 {
		t.Errorf("weight 3:1 put the heavy one first %.2f of the time, want ~0.75", r)
	}
	pr.down["192.0.2.1:5060"] = true
	for i := 0; i < 3; i++ {
		p.ProbeAll(context.Background())
	}
	if p.Up("192.0.2.1:5060") {
		t.Fatal("still up after 3 failed probes")
	}
	if got := testutil.ToFloat64(p.up.WithLabelValues("192.0.2.1:5060")); got != 0 {
		t.Errorf("gauge %v", got)
	}
	for i := 0; i < 20; i++ {
		if o := p.Order(); o[0].Addr != "192.0.2.2:5060" || o[1].Addr != "192.0.2.1:5060" {
			t.Fatalf("down upstream not last: %v", o)
		}
	}
	// Passive: real requests timing out count too.
	for i := 0; i < 3; i++ {
		p.Observe("192.0.2.2:5060", false)
	}
	if p.Up("192.0.2.2:5060") {
		t.Fatal("passive failures ignored")
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range []Target{{Addr: "nohost"}, {Addr: "1.2.3.4:5060", Transport: "sctp"}, {Addr: "1.2.3.4:5060", Weight: -1}} {
		var fe *FieldError
		if err := bad.Validate(); !errors.As(err, &fe) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	h := Health{DownAfter: -1}
	if err := h.Validate(); err == nil {
		t.Error("negative down_after accepted")
	}
}
