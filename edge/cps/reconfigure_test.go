package cps

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// Reconfigure keeps the counters of unchanged limits (a reload does not
// open the window), applies new rates, adds and removes limits, and
// refuses settings that need a restart without changing anything.
func TestReconfigure(t *testing.T) {
	clk := newClock()
	cfg := Config{Limits: []LimitConfig{{Name: "global", Rate: 10}, {Name: "gone", Rate: 100}}}
	l := newLimiter(t, cfg, 1, "r1", clk)
	clk.at(50 * time.Millisecond)
	if ok, _ := checkN(l, Request{}, 10); ok != 10 {
		t.Fatalf("%d of 10 passed", ok)
	}

	// Same limits: the 10 calls still fill the window.
	ch, err := l.Reconfigure(Config{Limits: []LimitConfig{{Name: "global", Rate: 10}, {Name: "gone", Rate: 100}}})
	if err != nil || !ch.Empty() {
		t.Fatalf("unchanged: %+v %v", ch, err)
	}
	if ok, _ := checkN(l, Request{}, 1); ok != 0 {
		t.Fatal("an unchanged reload emptied the window")
	}

	// New rate 15: five more calls fit in the same window; "gone" is
	// removed, "domain" added.
	ch, err = l.Reconfigure(Config{Limits: []LimitConfig{
		{Name: "global", Rate: 15, Response: ResponseConfig{Code: 486}},
		{Name: "domain", Rate: 1, Selector: FromDomain},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Rates, []string{"global"}) || !slices.Equal(ch.Added, []string{"domain"}) ||
		!slices.Equal(ch.Removed, []string{"gone"}) || !slices.Equal(ch.Updated, []string{"global"}) || len(ch.Replaced) != 0 {
		t.Fatalf("changes %+v", ch)
	}
	if ok, d := checkN(l, Request{}, 6); ok != 5 || d.Code != 486 {
		t.Fatalf("after the new rate: %d of 6 passed (want 5), refusal %+v", ok, d)
	}
	st := l.Status()
	if len(st) != 2 || st[0].Name != "global" || st[0].Limit != 15 || st[1].Name != "domain" {
		t.Fatalf("status %+v", st)
	}
	if err := l.SetRate("gone", 5); err == nil {
		t.Error("the removed limit still takes SetRate")
	}
	// The new rate goes to the peers like SetRate's.
	if !l.limits[0].rateDirty {
		t.Error("the new rate is not queued for the peers")
	}

	// A run-time rate survives a reload that leaves the configured rate.
	if err := l.SetRate("global", 20); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reconfigure(Config{Limits: []LimitConfig{
		{Name: "global", Rate: 15, Response: ResponseConfig{Code: 486}},
		{Name: "domain", Rate: 1, Selector: FromDomain},
	}}); err != nil {
		t.Fatal(err)
	}
	if got := l.Status()[0].Limit; got != 20 {
		t.Errorf("run-time rate %v after a reload, want 20 kept", got)
	}

	// A new window starts the limit again.
	ch, err = l.Reconfigure(Config{Limits: []LimitConfig{{Name: "global", Rate: 15, Window: 2 * time.Second}}})
	if err != nil || !slices.Equal(ch.Replaced, []string{"global"}) {
		t.Fatalf("window change: %+v %v", ch, err)
	}
	if ok, _ := checkN(l, Request{}, 30); ok != 30 {
		t.Errorf("%d of 30 passed a fresh 15/s over 2 s", ok)
	}

	// Restart-only settings: refused, nothing changed.
	var re *RestartError
	_, err = l.Reconfigure(Config{Slot: 200 * time.Millisecond, Limits: []LimitConfig{{Name: "x", Rate: 10}}})
	if !errors.As(err, &re) || re.Key != "slot" {
		t.Fatalf("slot change: %v", err)
	}
	if _, err := l.Reconfigure(Config{Limits: []LimitConfig{{Name: "x", Rate: -1}}}); err == nil {
		t.Fatal("accepted a negative rate")
	}
	if st := l.Status(); len(st) != 1 || st[0].Name != "global" {
		t.Fatalf("a refused reload changed the limits: %+v", st)
	}
}
