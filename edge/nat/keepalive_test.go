package nat

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/edge/location"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeProber struct {
	mu    sync.Mutex
	dead  map[string]bool // by Received
	calls map[string]int
}

func (f *fakeProber) Probe(_ context.Context, b location.Binding, method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[b.Received]++
	if f.dead[b.Received] {
		return errors.New("timeout")
	}
	return nil
}

func save(t *testing.T, st location.Store, b location.Binding, now time.Time) {
	t.Helper()
	b.Expires = now.Add(time.Hour)
	b.Registered = now
	_, err := st.Save(context.Background(), &location.SaveRequest{AoR: b.AoR, CallID: "c-" + b.AoR, CSeq: 1,
		Contacts: []location.Binding{b}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPingerRemovesDeadContact drives the pinger with a fake clock: a
// contact that stops answering is removed after three failed probes, one
// that answers stays, one homed elsewhere or not NATed is never probed.
func TestPingerRemovesDeadContact(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	st := location.NewMemory(location.WithClock(func() time.Time { return now }))
	alive, dead := binding(1), binding(2)
	other := binding(3)
	other.Home = 7
	plain := binding(4)
	plain.NATed = false
	for _, b := range []location.Binding{alive, dead, other, plain} {
		save(t, st, b, now)
	}
	tr := NewTracker(st)
	for _, b := range []location.Binding{alive, dead, other, plain} {
		tr.Add(b.AoR)
	}
	pr := &fakeProber{dead: map[string]bool{dead.Received: true}, calls: map[string]int{}}
	reg := prometheus.NewRegistry()
	p, err := NewPinger(Config{Interval: 30 * time.Second}, tr, st, pr,
		WithRegistry(reg), WithNode(1), WithRand(rand.New(rand.NewPCG(1, 1))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 200; i++ { // 100 s in 0.5 s ticks: three intervals and more
		if err := p.Tick(ctx, now); err != nil {
			t.Fatal(err)
		}
		p.Wait()
		now = now.Add(500 * time.Millisecond)
	}
	if bs, _ := st.Lookup(ctx, dead.AoR); len(bs) != 0 {
		t.Fatal("dead contact not removed")
	}
	if bs, _ := st.Lookup(ctx, alive.AoR); len(bs) != 1 {
		t.Fatal("live contact removed")
	}
	if pr.calls[other.Received] != 0 || pr.calls[plain.Received] != 0 {
		t.Fatalf("probed what it does not own: %v", pr.calls)
	}
	if n := pr.calls[alive.Received]; n < 3 || n > 4 {
		t.Errorf("alive probed %d times in 100 s at a 30 s interval", n)
	}
	if got := testutil.ToFloat64(p.m.removals); got != 1 {
		t.Errorf("removals = %v", got)
	}
	if got := testutil.ToFloat64(p.m.failures); got != 3 {
		t.Errorf("failures = %v", got)
	}
}

func TestFlowRoundTrip(t *testing.T) {
	for _, f := range []Flow{{"udp", "192.0.2.1:5060"}, {"tcp", "[2001:db8::1]:5061"}, {"tls", "127.0.0.1:1"}} {
		got, err := ParseFlow(f.String())
		if err != nil || got != f {
			t.Errorf("%+v → %q → %+v, %v", f, f.String(), got, err)
		}
	}
	for _, bad := range []string{"", "udp", "sctp~1.2.3.4~5060", "udp~nothost~5060", "udp~1.2.3.4~0", "udp~1.2.3.4~99999"} {
		if _, err := ParseFlow(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil || c.Interval != 30*time.Second || c.Failures != 3 || c.Method != MethodOptions || !*c.Enabled {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, bad := range []Config{{Method: "ping"}, {Interval: time.Millisecond}, {Failures: -1}, {Interval: time.Second, Timeout: 2 * time.Second}} {
		var fe *FieldError
		if err := bad.Validate(); !errors.As(err, &fe) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
