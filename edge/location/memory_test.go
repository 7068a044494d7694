package location

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeClock is a settable clock: tests move time instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func reg(aor, uri, callID string, cseq uint32, now time.Time, exp time.Duration) *SaveRequest {
	return &SaveRequest{AoR: aor, CallID: callID, CSeq: cseq, Now: now,
		Contacts: []Binding{{Contact: uri, Q: 1000, Expires: now.Add(exp)}}}
}

func TestMemoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	m := NewMemory(WithClock(clk.Now))
	full := Binding{
		Contact: "sip:alice@192.0.2.1:5060;transport=tcp;ob", InstanceID: "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
		RegID: 2, Q: 500, Expires: t0.Add(time.Hour), Path: []string{"<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;ob>"},
		UserAgent: "Yealink SIP-T46S 66.86.0.15", Received: "198.51.100.7:40000", Transport: "tcp", NATed: true,
		Socket: "tcp:203.0.113.10:5060", Home: 7,
	}
	res, err := m.Save(ctx, &SaveRequest{AoR: "sip:alice@example.com", CallID: "cid", CSeq: 3, Now: t0,
		Contacts: []Binding{full, {Contact: "sip:alice@192.0.2.2", Q: 1000, Expires: t0.Add(time.Minute)}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Lookup(ctx, "sip:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, res.Bindings, bindingEqual) {
		t.Fatalf("lookup %+v\nwant    %+v", got, res.Bindings)
	}
	want := full
	want.AoR, want.CallID, want.CSeq, want.Registered = "sip:alice@example.com", "cid", 3, t0
	if !bindingEqual(got[1], want) || got[0].Path != nil {
		t.Fatalf("round trip lost data:\n got %+v\nwant %+v", got[1], want)
	}
	if m.Len() != 2 || m.Stats().AoRs != 1 {
		t.Fatalf("Len %d, stats %+v", m.Len(), m.Stats())
	}
}

func TestMemoryInternerFull(t *testing.T) {
	m := NewMemory()
	m.intern.next = maxInterned // as if 65535 user agents were seen
	b := Binding{Contact: "sip:a@h", Expires: t0.Add(time.Hour), UserAgent: "new UA", Transport: "udp"}
	r, err := appendRec(nil, &b, &m.intern)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nInterned {
		if id := le16(r, rIDs+2*i); id != 0 {
			t.Fatalf("interned while full: field %d id %d", i, id)
		}
	}
	if d := decodeRec(string(r), 0, "sip:a@h", &m.intern); d.UserAgent != "new UA" || d.Transport != "udp" {
		t.Fatalf("decode %+v", d)
	}
	b.RegID = -1
	if _, err := appendRec(nil, &b, &m.intern); err == nil {
		t.Fatal("negative reg-id encoded")
	}
}

func TestMemoryLookupHidesExpiredBeforeReaping(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	m := NewMemory(WithClock(clk.Now))
	if _, err := m.Save(ctx, reg("sip:a@x", "sip:a@192.0.2.1", "c", 1, t0, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Second)
	if got, _ := m.Lookup(ctx, "sip:a@x"); len(got) != 0 {
		t.Fatalf("expired binding returned: %+v", got)
	}
	if m.Len() != 1 {
		t.Fatalf("Len %d before reaping, want 1", m.Len())
	}
}

func TestMemoryExpire(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	var mu sync.Mutex
	var expired []string
	changes := map[string]int{}
	m := NewMemory(WithClock(clk.Now),
		OnExpire(func(b Binding) { mu.Lock(); expired = append(expired, b.Contact); mu.Unlock() }),
		OnChange(func(aor string, bs []Binding) { mu.Lock(); changes[aor] = len(bs); mu.Unlock() }))
	for i, exp := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second} {
		req := reg("sip:a@x", fmt.Sprintf("sip:a@192.0.2.%d", i+1), "c", uint32(i+1), t0, exp)
		if _, err := m.Save(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Save(ctx, reg("sip:b@x", "sip:b@192.0.2.9", "c", 1, t0, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at      time.Duration
		removed int
		left    int
	}{{9 * time.Second, 0, 4}, {10 * time.Second, 1, 3}, {25 * time.Second, 2, 1}, {30 * time.Second, 1, 0}}
	for _, s := range steps {
		if n := m.Expire(t0.Add(s.at)); n != s.removed || m.Len() != s.left {
			t.Fatalf("at %v: removed %d left %d, want %d/%d", s.at, n, m.Len(), s.removed, s.left)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(expired) != 4 || changes["sip:a@x"] != 0 || changes["sip:b@x"] != 0 {
		t.Fatalf("hooks: expired %v, changes %v", expired, changes)
	}
	if st := m.Stats(); st.AoRs != 0 || st.HeapEntries != 0 || st.Expired != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMemoryExpireVisitsOnlyDue proves the reaper does not scan: with
// 10,000 bindings stored and 10 due, it pops about 10 heap entries.
func TestMemoryExpireVisitsOnlyDue(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	m := NewMemory(WithClock(clk.Now))
	for i := range 10_000 {
		exp := time.Hour
		if i%1000 == 0 {
			exp = time.Minute
		}
		aor := fmt.Sprintf("sip:u%d@x", i)
		if _, err := m.Save(ctx, reg(aor, "sip:u@192.0.2.1", "c", 1, t0, exp)); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Expire(t0.Add(2 * time.Minute)); n != 10 {
		t.Fatalf("expired %d, want 10", n)
	}
	if v := m.Stats().Visited; v != 10 {
		t.Fatalf("visited %d heap entries for 10 due bindings", v)
	}

	// A refresh that moves expiry later leaves the old entry in place: it
	// fires once, early, and reschedules instead of expiring anything.
	if _, err := m.Save(ctx, reg("sip:u1@x", "sip:u@192.0.2.1", "c", 2, t0, 2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	before := m.Stats().Visited
	if n := m.Expire(t0.Add(time.Hour)); n != 9990-1 {
		t.Fatalf("expired %d at 1h, want 9989", n)
	}
	if v := m.Stats().Visited - before; v != 9990 {
		t.Fatalf("visited %d, want 9990 (9989 due + 1 early refresh)", v)
	}
	clk.Advance(time.Hour)
	if got, _ := m.Lookup(ctx, "sip:u1@x"); len(got) != 1 {
		t.Fatal("refreshed binding was reaped")
	}
	if n := m.Expire(t0.Add(2 * time.Hour)); n != 1 || m.Len() != 0 {
		t.Fatalf("final expire %d, len %d", n, m.Len())
	}
}

// TestMemoryHeapBounded: register/unregister churn leaves stale heap
// entries behind; compaction keeps them proportional to live AoRs.
func TestMemoryHeapBounded(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	for i := range 20_000 {
		aor := fmt.Sprintf("sip:u%d@x", i%50)
		now := t0.Add(time.Duration(i) * time.Millisecond)
		if _, err := m.Save(ctx, reg(aor, "sip:u@192.0.2.1", "c", uint32(2*i+1), now, time.Hour-time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := m.Save(ctx, reg(aor, "sip:u@192.0.2.1", "c", uint32(2*i+2), now, 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h := m.Stats().HeapEntries; h > numShards*64+2*50 {
		t.Fatalf("%d heap entries for %d AoRs", h, m.Stats().AoRs)
	}
}

func TestMemoryRemove(t *testing.T) {
	ctx := context.Background()
	var last []Binding
	m := NewMemory(OnChange(func(_ string, bs []Binding) { last = bs }))
	req := reg("sip:a@x", "sip:a@192.0.2.1", "c", 1, time.Now(), time.Hour)
	req.Contacts = append(req.Contacts, Binding{Contact: "sip:a@192.0.2.2", InstanceID: "<urn:uuid:1>", RegID: 1,
		Q: 1000, Expires: req.Now.Add(time.Hour)})
	if _, err := m.Save(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, "sip:a@x", "i:<urn:uuid:1>;1"); err != nil {
		t.Fatal(err)
	}
	if m.Len() != 1 || len(last) != 1 || last[0].Contact != "sip:a@192.0.2.1" {
		t.Fatalf("after removing by instance key: len %d, last %+v", m.Len(), last)
	}
	if err := m.Remove(ctx, "sip:a@x", "c:sip:nobody"); err != nil || m.Len() != 1 {
		t.Fatalf("removing a missing key: %v, len %d", err, m.Len())
	}
	if err := m.Remove(ctx, "sip:a@x", "c:sip:a@192.0.2.1"); err != nil || m.Len() != 0 || m.Stats().AoRs != 0 {
		t.Fatalf("remove last: %v, len %d", err, m.Len())
	}
	if err := m.Remove(ctx, "sip:gone@x", "c:x"); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryConcurrentSameAoR: many goroutines registering different
// contacts on one AoR (each its own Call-ID, as separate phones do) while
// others look up and reap. No binding may be lost.
func TestMemoryConcurrentSameAoR(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	const workers, per = 8, 50
	now := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				uri := fmt.Sprintf("sip:alice@192.0.2.%d:%d", w, 5000+i)
				// Re-register each contact twice: refreshes must not duplicate.
				for cseq := uint32(1); cseq <= 2; cseq++ {
					req := reg("sip:alice@example.com", uri, fmt.Sprintf("w%d-%d", w, i), cseq, now, time.Hour)
					if _, err := m.Save(ctx, req); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
		wg.Go(func() {
			for range per {
				if _, err := m.Lookup(ctx, "sip:alice@example.com"); err != nil {
					t.Error(err)
				}
				m.Expire(now)
			}
		})
	}
	wg.Wait()
	got, _ := m.Lookup(ctx, "sip:alice@example.com")
	if len(got) != workers*per || m.Len() != workers*per {
		t.Fatalf("%d bindings (Len %d), want %d", len(got), m.Len(), workers*per)
	}
}

func TestMemoryRange(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := time.Now()
	for i := range 100 {
		if _, err := m.Save(ctx, reg(fmt.Sprintf("sip:u%d@x", i), "sip:u@192.0.2.1", "c", 1, now, time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	m.Range(func(aor string, bs []Binding) bool { seen += len(bs); return true })
	if seen != 100 {
		t.Fatalf("Range saw %d", seen)
	}
	seen = 0
	m.Range(func(string, []Binding) bool { seen++; return seen < 3 })
	if seen != 3 {
		t.Fatalf("Range did not stop: %d", seen)
	}
}

func TestMemoryRangeNATed(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := time.Now()
	for i := range 10 {
		r := reg(fmt.Sprintf("sip:u%d@x", i), "sip:u@192.0.2.1", "c", 1, now, time.Hour)
		r.Contacts[0].NATed = i%3 == 0 // u0, u3, u6, u9
		r.Contacts[0].Received = "198.51.100.7:4000"
		if _, err := m.Save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	m.RangeNATed(func(aor string, bs []Binding) bool {
		for _, b := range bs {
			if !b.NATed || b.AoR != aor || b.Received != "198.51.100.7:4000" {
				t.Errorf("RangeNATed gave %+v", b)
			}
		}
		got[aor] = true
		return true
	})
	if len(got) != 4 || !got["sip:u0@x"] || !got["sip:u9@x"] {
		t.Fatalf("RangeNATed saw %v, want u0 u3 u6 u9", got)
	}
}

func TestMemoryRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	clk := &fakeClock{t: t0}
	done := make(chan Binding, 1)
	m := NewMemory(WithClock(clk.Now), WithResolution(time.Millisecond),
		OnExpire(func(b Binding) { done <- b }))
	if _, err := m.Save(context.Background(), reg("sip:a@x", "sip:a@192.0.2.1", "c", 1, t0, time.Minute)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- m.Run(ctx) }()
	clk.Advance(time.Minute)
	select {
	case b := <-done:
		if b.Contact != "sip:a@192.0.2.1" {
			t.Fatalf("expired %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not reap")
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

func TestMemoryContextAndInvalid(t *testing.T) {
	m := NewMemory()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Save(ctx, reg("sip:a@x", "sip:a@h", "c", 1, t0, time.Hour)); err == nil {
		t.Fatal("Save ignored a cancelled context")
	}
	if _, err := m.Save(context.Background(), &SaveRequest{}); err != ErrInvalid {
		t.Fatalf("empty request: %v", err)
	}
	long := Binding{Contact: "sip:" + string(make([]byte, maxField)), Q: 1000, Expires: t0.Add(time.Hour)}
	if _, err := m.Save(context.Background(), &SaveRequest{AoR: "sip:a@x", CallID: "c", CSeq: 1, Now: t0,
		Contacts: []Binding{long}}); err != ErrInvalid || m.Len() != 0 {
		t.Fatalf("oversized contact: %v, len %d", err, m.Len())
	}
}
