package dialog

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func testConfig(mod func(*Config)) Config {
	c := Config{EarlyTimeout: 180 * time.Second, Timeout: time.Hour, Linger: 32 * time.Second, MaxDialogs: 100}
	if mod != nil {
		mod(&c)
	}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

func mustState(t *testing.T, s *Store, k Key, want State) {
	t.Helper()
	c, ok := s.Get(k)
	if !ok {
		if want == 0 {
			return
		}
		t.Fatalf("call %v gone, want %v", k, want)
	}
	if want == 0 {
		t.Fatalf("call %v still held (%v), want gone", k, c.State())
	}
	if got := c.State(); got != want {
		t.Fatalf("call %v is %v, want %v", k, got, want)
	}
}

func TestLifecycle(t *testing.T) {
	s := NewStore(testConfig(nil), 1)
	k := Key{Owner: 1, CallID: "c1", FromTag: "ft"}
	if err := s.Begin(t0, Start{CallID: "c1", FromTag: "ft", User: "alice", CSeq: 1}); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Early)
	if s.Active("alice") != 1 || s.Count(Early, false) != 1 {
		t.Fatalf("active %d, early %d", s.Active("alice"), s.Count(Early, false))
	}
	if err := s.Provisional(t0.Add(time.Second), k, "tt", []string{"<sip:a;lr>"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Answer(t0.Add(2*time.Second), k, "tt", []string{"<sip:a;lr>", "<sip:b;lr>"}); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Confirmed)
	c, _ := s.Get(k)
	if len(c.Legs) != 1 || !slices.Equal(c.Legs[0].Route, []string{"<sip:a;lr>", "<sip:b;lr>"}) || !c.Legs[0].Confirmed.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("leg %+v", c.Legs)
	}
	// The 2xx retransmitted changes nothing but the version.
	if err := s.Answer(t0.Add(3*time.Second), k, "tt", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.InviteEnded(t0.Add(3*time.Second), k); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Confirmed)
	// re-INVITE from the callee: its CSeq is recorded.
	if _, err := s.Request(t0.Add(time.Minute), DialogID{CallID: "c1", FromTag: "tt", ToTag: "ft"}, 7); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Get(k)
	if c.Legs[0].CalleeCSeq != 7 || !c.Updated.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after re-INVITE: %+v", c)
	}
	if _, err := s.Bye(t0.Add(2*time.Minute), DialogID{CallID: "c1", FromTag: "ft", ToTag: "tt"}); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Terminated)
	if s.Active("alice") != 0 {
		t.Fatal("a terminated call still counts for its user")
	}
	// A retransmitted BYE within linger still finds the call.
	if _, err := s.Bye(t0.Add(2*time.Minute+time.Second), DialogID{CallID: "c1", FromTag: "ft", ToTag: "tt"}); err != nil {
		t.Fatalf("retransmitted BYE: %v", err)
	}
	s.Tick(t0.Add(2*time.Minute + 31*time.Second))
	mustState(t, s, k, Terminated)
	if x := s.Tick(t0.Add(2*time.Minute + 32*time.Second)); x.Removed != 1 {
		t.Fatalf("tick: %+v", x)
	}
	mustState(t, s, k, 0)
	if _, err := s.Bye(t0.Add(3*time.Minute), DialogID{CallID: "c1", FromTag: "ft", ToTag: "tt"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BYE after linger: %v", err)
	}
	if s.Len() != 0 || len(s.exp) != 0 || len(s.byID) != 0 {
		t.Fatalf("leftovers: %d calls, %d in heap, %d ids", s.Len(), len(s.exp), len(s.byID))
	}
}

func TestForkedEarlyDialogs(t *testing.T) {
	s := NewStore(testConfig(func(c *Config) { c.MaxForks = 3 }), 1)
	k := Key{Owner: 1, CallID: "c", FromTag: "f"}
	_ = s.Begin(t0, Start{CallID: "c", FromTag: "f", User: "u"})
	for _, tag := range []string{"a", "b", "c", "d", "a"} {
		if err := s.Provisional(t0, k, tag, nil); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := s.Get(k)
	if len(c.Legs) != 3 {
		t.Fatalf("legs %d, want 3 (max_forks)", len(c.Legs))
	}
	if s.Active("u") != 1 {
		t.Fatalf("a forked call counts %d times", s.Active("u"))
	}
	// Fork b answers, the others end with the transaction.
	_ = s.Answer(t0.Add(time.Second), k, "b", nil)
	_ = s.InviteEnded(t0.Add(2*time.Second), k)
	c, _ = s.Get(k)
	for _, l := range c.Legs {
		want := Terminated
		if l.ToTag == "b" {
			want = Confirmed
		}
		if l.State != want {
			t.Fatalf("leg %s is %v, want %v", l.ToTag, l.State, want)
		}
	}
	// An in-dialog request of a dead fork still matches (late), but
	// changes nothing.
	if _, err := s.Request(t0.Add(3*time.Second), DialogID{"c", "a", "f"}, 2); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Confirmed)
	// A 2xx from a fork never seen as early, with forks at their max:
	// early forks make room.
	s2 := NewStore(testConfig(func(c *Config) { c.MaxForks = 2 }), 1)
	_ = s2.Begin(t0, Start{CallID: "c", FromTag: "f"})
	_ = s2.Provisional(t0, k, "a", nil)
	_ = s2.Provisional(t0, k, "b", nil)
	_ = s2.Answer(t0, k, "z", nil)
	c, _ = s2.Get(k)
	if len(c.Legs) != 1 || c.Legs[0].ToTag != "z" || c.State() != Confirmed {
		t.Fatalf("legs %+v", c.Legs)
	}
}

func TestFailureAndCancel(t *testing.T) {
	s := NewStore(testConfig(nil), 1)
	k := Key{Owner: 1, CallID: "c", FromTag: "f"}
	_ = s.Begin(t0, Start{CallID: "c", FromTag: "f", User: "u", CSeq: 1})
	_ = s.Provisional(t0, k, "t", nil)
	_ = s.InviteEnded(t0.Add(time.Second), k) // 486 from the callee, or CANCEL's 487
	mustState(t, s, k, Terminated)
	if s.Active("u") != 0 {
		t.Fatal("failed call counts")
	}
	// The caller retries with the same Call-ID and From tag (after a 407):
	// the call starts over.
	if err := s.Begin(t0.Add(2*time.Second), Start{CallID: "c", FromTag: "f", User: "u", CSeq: 2}); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, k, Early)
	if c, _ := s.Get(k); len(c.Legs) != 0 || c.CallerCSeq != 2 {
		t.Fatalf("restarted call %+v", c)
	}
	if err := s.Begin(t0.Add(2*time.Second), Start{CallID: "c", FromTag: "f", User: "u"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Begin of an active call: %v", err)
	}
	if s.Active("u") != 1 || s.Len() != 1 {
		t.Fatalf("active %d, len %d", s.Active("u"), s.Len())
	}
}

func TestTimeouts(t *testing.T) {
	s := NewStore(testConfig(nil), 1)
	early := Key{Owner: 1, CallID: "e", FromTag: "f"}
	conf := Key{Owner: 1, CallID: "c", FromTag: "f"}
	_ = s.Begin(t0, Start{CallID: "e", FromTag: "f", User: "u"})
	_ = s.Begin(t0, Start{CallID: "c", FromTag: "f", User: "u"})
	_ = s.Answer(t0, conf, "t", nil)
	_ = s.InviteEnded(t0, conf)
	// A provisional response restarts the early timer.
	_ = s.Provisional(t0.Add(100*time.Second), early, "", nil)
	if x := s.Tick(t0.Add(180 * time.Second)); x != (Expired{}) {
		t.Fatalf("expired too early: %+v", x)
	}
	if x := s.Tick(t0.Add(280 * time.Second)); x.Early != 1 {
		t.Fatalf("early timeout: %+v", x)
	}
	mustState(t, s, early, Terminated)
	if c, _ := s.Get(early); !c.Ended.Equal(t0.Add(280 * time.Second)) {
		t.Fatalf("ended at %v", c.Ended)
	}
	// In-dialog requests keep a confirmed call alive.
	_, _ = s.Request(t0.Add(50*time.Minute), DialogID{"c", "f", "t"}, 2)
	if x := s.Tick(t0.Add(61 * time.Minute)); x.Timeout != 0 || x.Removed != 1 {
		t.Fatalf("tick at 61m: %+v", x)
	}
	if x := s.Tick(t0.Add(110 * time.Minute)); x.Timeout != 1 {
		t.Fatalf("inactivity timeout: %+v", x)
	}
	mustState(t, s, conf, Terminated)
	if s.Active("u") != 0 {
		t.Fatal("timed-out call counts")
	}
	s.Tick(t0.Add(111 * time.Minute))
	if s.Len() != 0 {
		t.Fatalf("%d calls left", s.Len())
	}
}

func TestUserLimitAndBound(t *testing.T) {
	s := NewStore(testConfig(func(c *Config) {
		c.MaxCallsPerUser = 2
		c.PerUser = map[string]int{"vip": 0, "low": 1}
		c.MaxDialogs = 8
	}), 1)
	begin := func(id, user string) error {
		return s.Begin(t0, Start{CallID: id, FromTag: "f", User: user})
	}
	for i, want := range []error{nil, nil, ErrLimit} {
		if err := begin(string(rune('a'+i)), "bob"); !errors.Is(err, want) {
			t.Fatalf("bob's call %d: %v, want %v", i+1, err, want)
		}
	}
	if err := begin("l1", "low"); err != nil {
		t.Fatal(err)
	}
	if err := begin("l2", "low"); !errors.Is(err, ErrLimit) {
		t.Fatalf("low's second call: %v", err)
	}
	for i := range 3 {
		if err := begin("v"+string(rune('0'+i)), "vip"); err != nil {
			t.Fatalf("vip (no limit): %v", err)
		}
	}
	if err := begin("anon", ""); err != nil {
		t.Fatal(err)
	}
	if err := begin("x", "other"); err != nil {
		t.Fatal(err)
	}
	if err := begin("y", "other"); !errors.Is(err, ErrFull) {
		t.Fatalf("past max_dialogs: %v (len %d)", err, s.Len())
	}
	// A BYE frees bob's slot.
	k := Key{Owner: 1, CallID: "a", FromTag: "f"}
	_ = s.Answer(t0, k, "t", nil)
	_, _ = s.Bye(t0, DialogID{"a", "f", "t"})
	if err := s.Begin(t0, Start{CallID: "new", FromTag: "f", User: "bob"}); !errors.Is(err, ErrFull) {
		t.Fatalf("table still full while the call lingers: %v", err)
	}
	s.Tick(t0.Add(time.Minute))
	if err := s.Begin(t0.Add(time.Minute), Start{CallID: "new", FromTag: "f", User: "bob"}); err != nil {
		t.Fatalf("after BYE and linger: %v", err)
	}
	// Replicas count for the limit too.
	_, _ = s.Merge(t0, Call{Key: Key{Owner: 2, CallID: "r", FromTag: "f"}, User: "carol", Pending: true, Created: t0.Add(time.Minute), Updated: t0.Add(time.Minute), Ver: Version{1, 2}})
	_, _ = s.Merge(t0, Call{Key: Key{Owner: 2, CallID: "r2", FromTag: "f"}, User: "carol", Pending: true, Created: t0.Add(time.Minute), Updated: t0.Add(time.Minute), Ver: Version{1, 2}})
	if s.Active("carol") != 0 {
		// table full: one may have been dropped
		t.Logf("carol active %d", s.Active("carol"))
	}
}

func TestBadInput(t *testing.T) {
	s := NewStore(testConfig(nil), 1)
	for _, st := range []Start{{CallID: "", FromTag: "f"}, {CallID: "c", FromTag: ""}} {
		if err := s.Begin(t0, st); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Begin(%+v): %v", st, err)
		}
	}
	k := Key{Owner: 1, CallID: "nope", FromTag: "f"}
	if err := s.Provisional(t0, k, "t", nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.Answer(t0, k, "t", nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.InviteEnded(t0, k); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := s.Request(t0, DialogID{"nope", "a", "b"}, 1); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := s.Merge(t0, Call{}); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	// A provisional response after the INVITE ended is ignored.
	_ = s.Begin(t0, Start{CallID: "c", FromTag: "f"})
	kc := Key{Owner: 1, CallID: "c", FromTag: "f"}
	_ = s.InviteEnded(t0, kc)
	if err := s.Provisional(t0, kc, "late", nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d", s.Len())
	}
	for _, b := range [][]byte{nil, {1}, {9, 0, 0, 0, 1}, append(EncodeCall(&Call{Key: Key{1, "c", "f"}}), 0)} {
		if _, err := DecodeCall(b); err == nil {
			t.Fatalf("DecodeCall(%x) accepted", b)
		}
	}
	if _, _, err := decodeFrame([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Fatal("a frame claiming 4G records was accepted")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	c := Call{
		Key: Key{Owner: 7, CallID: "abc@h", FromTag: "f1"}, User: "alice", Caller: "sip:alice@x", Callee: "sip:bob@x",
		Created: t0, Updated: t0.Add(time.Second), CallerCSeq: 3, Pending: true, Ver: Version{9, 8},
		Legs: []Leg{{ToTag: "t1", State: Confirmed, Route: []string{"<sip:1;lr>", "<sip:2;lr>"}, CalleeCSeq: 4, Confirmed: t0.Add(time.Second)}, {ToTag: "t2", State: Terminated}},
	}
	got, err := DecodeCall(EncodeCall(&c))
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != c.Key || got.Ver != c.Ver || got.User != c.User || !got.Updated.Equal(c.Updated) || !got.Ended.IsZero() ||
		len(got.Legs) != 2 || !slices.Equal(got.Legs[0].Route, c.Legs[0].Route) || got.Legs[1].State != Terminated || !got.Pending {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
}

func FuzzDecodeCall(f *testing.F) {
	f.Add(EncodeCall(&Call{Key: Key{1, "c", "f"}, Legs: []Leg{{ToTag: "t", State: Early, Route: []string{"r"}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCall(b)
		if err != nil {
			return
		}
		s := NewStore(testConfig(nil), 1)
		_, _ = s.Merge(t0, c)
		s.Tick(t0.Add(24 * time.Hour))
	})
}

// TestReplicaMerge: versions decide, replicas expire on the owner's
// deadlines, and a partner that takes a call over becomes its writer.
func TestReplicaMerge(t *testing.T) {
	cfg := testConfig(nil)
	a, b := NewStore(cfg, 1), NewStore(cfg, 2)
	k := Key{Owner: 1, CallID: "c", FromTag: "f"}
	ship := func(from, to *Store, now time.Time) {
		for _, c := range from.TakeDirty() {
			if _, err := to.Merge(now, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = a.Begin(t0, Start{CallID: "c", FromTag: "f", User: "u"})
	first := a.TakeDirty()
	_ = a.Answer(t0.Add(time.Second), k, "t", []string{"<sip:rr;lr>"})
	ship(a, b, t0.Add(time.Second))
	mustState(t, b, k, Confirmed)
	if b.Count(Confirmed, true) != 1 || b.Active("u") != 1 {
		t.Fatal("replica not counted")
	}
	// The older record arriving late changes nothing.
	if ok, _ := b.Merge(t0.Add(2*time.Second), first[0]); ok {
		t.Fatal("an older version replaced a newer one")
	}
	mustState(t, b, k, Confirmed)
	// The owner dies; the BYE arrives at b.
	if _, err := b.Bye(t0.Add(time.Minute), DialogID{"c", "t", "f"}); err != nil {
		t.Fatal(err)
	}
	mustState(t, b, k, Terminated)
	back := b.TakeDirty()
	if len(back) != 1 || back[0].Ver.Node != 2 {
		t.Fatalf("takeover write %+v", back)
	}
	// The owner comes back and syncs: b's write wins.
	if ok, _ := a.Merge(t0.Add(time.Minute), back[0]); !ok {
		t.Fatal("takeover write lost on the owner")
	}
	mustState(t, a, k, Terminated)
	if !slices.Equal(a.Digest(), b.Digest()) {
		t.Fatal("digests differ after convergence")
	}
	// A terminated record past its linger is not resurrected.
	c := NewStore(cfg, 3)
	if ok, _ := c.Merge(t0.Add(time.Hour), back[0]); ok || c.Len() != 0 {
		t.Fatal("a dead call was resurrected")
	}
}

// TestRandomOps runs random operations and checks the counters against a
// recount after each.
func TestRandomOps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	s := NewStore(testConfig(func(c *Config) { c.MaxCallsPerUser = 3; c.MaxDialogs = 50 }), 1)
	now := t0
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	users := []string{"", "u1", "u2"}
	for i := range 20000 {
		now = now.Add(time.Duration(r.IntN(5000)) * time.Millisecond)
		id := ids[r.IntN(len(ids))]
		k := Key{Owner: 1, CallID: id, FromTag: "f"}
		tag := string(rune('x' + r.IntN(3)))
		switch r.IntN(8) {
		case 0:
			_ = s.Begin(now, Start{CallID: id, FromTag: "f", User: users[r.IntN(3)]})
		case 1:
			_ = s.Provisional(now, k, tag, nil)
		case 2:
			_ = s.Answer(now, k, tag, nil)
		case 3:
			_ = s.InviteEnded(now, k)
		case 4:
			_, _ = s.Request(now, DialogID{id, tag, "f"}, uint32(i))
		case 5:
			_, _ = s.Bye(now, DialogID{id, "f", tag})
		case 6:
			now = now.Add(time.Duration(r.IntN(400)) * time.Second)
			s.Tick(now)
		case 7:
			_, _ = s.Merge(now, Call{Key: Key{Owner: 2, CallID: id, FromTag: "f"}, User: users[r.IntN(3)], Pending: r.IntN(2) == 0,
				Created: now, Updated: now, Ver: Version{uint64(i), 2}})
		}
		checkCounts(t, s, now)
	}
}

func checkCounts(t *testing.T, s *Store, now time.Time) {
	t.Helper()
	var count [4][2]int
	users := map[string]int{}
	for _, e := range s.calls {
		if e.state != e.Call.State() {
			t.Fatalf("%v: cached state %v, computed %v", e.Key, e.state, e.Call.State())
		}
		count[e.state][s.role(e)]++
		if e.User != "" && e.state != Terminated {
			users[e.User]++
		}
		if e.hidx < 0 || s.exp[e.hidx] != e {
			t.Fatalf("%v not in the expiry heap", e.Key)
		}
		if e.state != Terminated && e.User != "" {
			if lim := s.cfg.limitFor(e.User); lim > 0 && users[e.User] > lim && e.Owner == s.self {
				// replicas may push over; own calls alone never exceed
				own := 0
				for _, o := range s.calls {
					if o.Owner == s.self && o.User == e.User && o.state != Terminated {
						own++
					}
				}
				if own > lim {
					t.Fatalf("user %s has %d own active calls, limit %d", e.User, own, lim)
				}
			}
		}
	}
	if count != s.count {
		t.Fatalf("counts %v, recount %v", s.count, count)
	}
	for u, n := range users {
		if s.users[u] != n {
			t.Fatalf("user %s: %d, recount %d", u, s.users[u], n)
		}
	}
	if len(users) != len(s.users) {
		t.Fatalf("users %v, recount %v", s.users, users)
	}
	if len(s.exp) != len(s.calls) || s.Len() > s.cfg.MaxDialogs {
		t.Fatalf("heap %d, calls %d, max %d", len(s.exp), len(s.calls), s.cfg.MaxDialogs)
	}
	_ = now
}
