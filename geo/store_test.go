package geo

import (
	"reflect"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
	"github.com/anyedge/anyedge/edge/location"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(d time.Duration) int64 { return t0.Add(d).UnixNano() }

func testBinding(home uint32, contact string, reg time.Duration, cseq uint32, exp time.Duration) *location.Binding {
	return &location.Binding{
		AoR: "sip:a@x", Contact: contact, CallID: "call-" + contact, CSeq: cseq, Q: 1000, Home: home,
		Registered: t0.Add(reg), Expires: t0.Add(exp),
	}
}

// merged runs records through the merge rule in order and returns what an
// AoR holds.
func merged(now int64, recs ...brec) *aorState {
	s := newStore(1, 16, int64(time.Second))
	sh := s.shard("sip:a@x")
	st := sh.state("sip:a@x", true)
	for _, r := range recs {
		s.mergeBind(sh, st, r, now)
	}
	return st
}

// TestMergeRule: newest registration wins, by registration time, then
// CSeq, then node id, in whatever order records arrive.
func TestMergeRule(t *testing.T) {
	mk := func(contactTag string, reg time.Duration, cseq uint32, node uint32) brec {
		b := testBinding(2, "sip:same@h", reg, cseq, time.Hour)
		b.UserAgent = contactTag
		r := liveRec(b)
		r.ver.Node = node // as if written on the home's behalf by node
		return r
	}
	for _, tc := range []struct {
		name       string
		older, new brec
	}{
		{"time", mk("old", 1*time.Second, 9, 9), mk("new", 2*time.Second, 1, 1)},
		{"cseq", mk("old", time.Second, 1, 9), mk("new", time.Second, 2, 1)},
		{"node id", mk("old", time.Second, 1, 1), mk("new", time.Second, 1, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][]brec{{tc.older, tc.new}, {tc.new, tc.older}} {
				st := merged(at(0), order...)
				if len(st.binds) != 1 || st.binds[0].binding("sip:a@x").UserAgent != "new" {
					t.Fatalf("holds %+v, want the newer", st.binds)
				}
			}
		})
	}
	// Equal versions: the tombstone wins, so both sides agree.
	live := mk("x", time.Second, 1, 2)
	dead := kill(live)
	for _, order := range [][]brec{{live, dead}, {dead, live}} {
		if st := merged(at(0), order...); len(st.binds) != 1 || !st.binds[0].dead {
			t.Fatalf("equal versions: %+v, want the tombstone", st.binds)
		}
	}
}

// TestTombstoneBlocksStaleReAdd: an unregistered binding cannot come back
// from an old copy until the removed binding would have expired anyway;
// then the tombstone is purged and the old copy is refused as expired.
func TestTombstoneBlocksStaleReAdd(t *testing.T) {
	s := newStore(1, 16, int64(time.Second))
	sh := s.shard("sip:a@x")
	st := sh.state("sip:a@x", true)
	b := liveRec(testBinding(2, "sip:c@h", 0, 1, 60*time.Second))
	s.mergeBind(sh, st, b, at(0))
	tomb := kill(b)
	tomb.ver = version{T: at(10 * time.Second), CSeq: 2, Node: 2}
	s.mergeBind(sh, st, tomb, at(10*time.Second))
	if s.mergeBind(sh, st, b, at(20*time.Second)) || !st.binds[0].dead {
		t.Fatal("stale copy re-added over the tombstone")
	}
	if st.binds[0].horizon != at(60*time.Second) {
		t.Fatalf("horizon %d, want the removed binding's expiry", st.binds[0].horizon)
	}
	s.sweep(sh, st, at(59*time.Second))
	if len(st.binds) != 1 {
		t.Fatal("tombstone purged before the horizon")
	}
	s.sweep(sh, st, at(60*time.Second))
	if len(st.binds) != 0 || s.bindTombs.Load() != 0 {
		t.Fatalf("tombstone kept past its horizon: %+v", st.binds)
	}
	if s.mergeBind(sh, st, b, at(61*time.Second)) || len(st.binds) != 0 {
		t.Fatal("an expired copy was stored")
	}
}

// TestHorizonOutlivesShorterRefresh: a binding refreshed with a shorter
// expiry stays as a tombstone until the longer one, so the old version
// (still held by a node that missed the refresh) cannot revive it.
func TestHorizonOutlivesShorterRefresh(t *testing.T) {
	s := newStore(1, 16, 0)
	sh := s.shard("sip:a@x")
	st := sh.state("sip:a@x", true)
	long := liveRec(testBinding(2, "sip:c@h", 0, 1, time.Hour))
	short := liveRec(testBinding(2, "sip:c@h", time.Second, 2, time.Minute))
	s.mergeBind(sh, st, long, at(0))
	s.mergeBind(sh, st, short, at(time.Second))
	s.sweep(sh, st, at(2*time.Minute))
	if len(st.binds) != 1 || !st.binds[0].dead || st.binds[0].horizon != at(time.Hour) {
		t.Fatalf("after the short expiry: %+v, want a tombstone until the long one", st.binds)
	}
	if s.mergeBind(sh, st, long, at(3*time.Minute)) || !st.binds[0].dead {
		t.Fatal("the old, longer version came back")
	}
}

// TestMetaMergeAndExpiry: metadata follows the same rule, expires at its
// absolute time everywhere, and a dead entry outlives what it removed.
func TestMetaMergeAndExpiry(t *testing.T) {
	s := newStore(1, 16, 0)
	sh := s.shard("sip:a@x")
	st := sh.state("sip:a@x", true)
	m1 := mrec{home: 2, region: "eu", ver: version{T: at(0), CSeq: 1, Node: 2}, expires: at(time.Hour)}
	// The home dropped its bindings at 1 s, having last published an
	// expiry of 30 min (m1, with 1 h, was an older entry it replaced).
	m2 := mrec{home: 2, region: "eu", ver: version{T: at(time.Second), CSeq: 2, Node: 2}, dead: true, horizon: at(30 * time.Minute)}
	s.mergeMeta(sh, st, m2, at(time.Second))
	s.mergeMeta(sh, st, m1, at(2*time.Second))
	if m := st.meta(2); m == nil || !m.dead || m.horizon != at(time.Hour) {
		t.Fatalf("meta %+v: want the newer (dead) entry, its horizon grown to the older one's expiry", m)
	}
	s2 := newStore(1, 16, 0)
	sh2 := s2.shard("sip:a@x")
	st2 := sh2.state("sip:a@x", true)
	s2.mergeMeta(sh2, st2, m1, at(0))
	if !st2.meta(2).live(at(time.Hour-1)) || st2.meta(2).live(at(time.Hour)) {
		t.Fatal("metadata must be live exactly until its absolute expiry")
	}
	s2.sweep(sh2, st2, at(time.Hour))
	if len(st2.metas) != 0 || s2.metaLive.Load() != 0 {
		t.Fatalf("expired metadata kept: %+v", st2.metas)
	}
}

// TestRetiredBindingKeepsClaim: a binding retired because its UA moved on
// still claims the UA at its own version in its home's metadata, so that
// the UA's even older binding at a third home (or at the home it came
// back to) is retired whatever order the nodes learn of the moves in.
func TestRetiredBindingKeepsClaim(t *testing.T) {
	s := newStore(2, 16, 0)
	sh := s.shard("sip:a@x")
	st := sh.state("sip:a@x", true)
	b := testBinding(2, "sip:c@h2", 10*time.Second, 5, time.Hour)
	b.CallID = "ua-call"
	s.mergeBind(sh, st, liveRec(b), at(10*time.Second))
	// The UA came back to node 1 at 20 s.
	back := mrec{home: 1, region: "eu", ver: version{T: at(20 * time.Second), CSeq: 6, Node: 1}, expires: at(time.Hour),
		claims: []claim{{H: claimHash(b), T: at(20 * time.Second), CSeq: 6}}}
	s.mergeMeta(sh, st, back, at(20*time.Second))
	if got := s.sweep(sh, st, at(20*time.Second)); len(got) != 1 {
		t.Fatalf("retired %d, want the binding at node 2", len(got))
	}
	m := s.homeMeta(st, 2, "eu", version{T: at(21 * time.Second), Node: 2}, at(21*time.Second))
	if !m.dead || len(m.claims) != 1 || m.claims[0].T != at(10*time.Second) || m.claims[0].CSeq != 5 {
		t.Fatalf("home 2 metadata %+v: want dead, still claiming the UA at its own version (10 s, CSeq 5)", m)
	}
}

// TestRecordCodec: records survive the wire, and damaged ones are refused.
func TestRecordCodec(t *testing.T) {
	b := testBinding(7, "sip:c@h;ob", time.Second, 3, time.Hour)
	b.InstanceID, b.RegID, b.Path = "<urn:uuid:1>", 2, []string{"<sip:p1;lr>", "<sip:p2;lr>"}
	b.Received, b.Transport, b.Socket, b.NATed, b.UserAgent, b.Q = "198.51.100.1:4000", "tcp", "tcp:203.0.113.10:5060", true, "UA/1", 500
	live := liveRec(b)
	tomb := kill(live)
	tomb.ver = version{T: at(time.Minute), CSeq: 9, Node: 3}
	m := mrec{home: 7, region: "eu", ver: version{T: 5, CSeq: 6, Node: 7}, expires: at(time.Hour), horizon: at(2 * time.Hour),
		claims: []claim{{H: 1, T: 2, CSeq: 3}}}
	var w wire.Writer
	encodeBind(&w, "sip:a@x", &live)
	d, err := decodeRecord(w.B)
	if got := d.b.binding("sip:a@x"); err != nil || d.kind != recBind || !reflect.DeepEqual(&got, withAoR(b)) || d.b.ver != live.ver || d.b.key != live.key || d.b.ch != live.ch || d.b.exp != live.exp {
		t.Fatalf("live binding: %v %+v", err, d.b)
	}
	if n := liveBodyLen(w.B); n != len(live.enc) {
		t.Fatalf("liveBodyLen %d, want the body's %d", n, len(live.enc))
	}
	for n := range w.B {
		if _, err := decodeRecord(w.B[:n]); err == nil {
			t.Fatalf("truncated record (%d of %d bytes) accepted", n, len(w.B))
		}
	}
	w = wire.Writer{}
	encodeBind(&w, "sip:a@x", &tomb)
	if n := liveBodyLen(w.B); n != 0 {
		t.Fatalf("liveBodyLen of a tombstone %d, want 0", n)
	}
	if d, err = decodeRecord(w.B); err != nil || !d.b.dead || d.b.key != live.key || d.b.ver != tomb.ver || d.b.cver != live.ver || d.b.horizon != tomb.horizon {
		t.Fatalf("tombstone: %v %+v", err, d.b)
	}
	w = wire.Writer{}
	encodeMeta(&w, "sip:a@x", &m)
	if d, err = decodeRecord(w.B); err != nil || d.m.ver != m.ver || d.m.region != "eu" || len(d.m.claims) != 1 || d.m.claims[0] != m.claims[0] || d.m.horizon != m.horizon {
		t.Fatalf("meta: %v %+v", err, d.m)
	}
}

func withAoR(b *location.Binding) *location.Binding {
	c := *b
	c.AoR = "sip:a@x"
	return &c
}

// FuzzDecodeRecord: the decoder never panics and what it accepts encodes
// back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	b := testBinding(7, "sip:c@h", time.Second, 3, time.Hour)
	live := liveRec(b)
	tomb := kill(live)
	var w wire.Writer
	encodeBind(&w, "sip:a@x", &live)
	f.Add(w.B)
	w = wire.Writer{}
	encodeBind(&w, "sip:a@x", &tomb)
	f.Add(w.B)
	w = wire.Writer{}
	encodeMeta(&w, "sip:a@x", &mrec{home: 1, claims: []claim{{1, 2, 3}}, expires: 5})
	f.Add(w.B)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeRecord(data)
		if err != nil {
			return
		}
		if d.kind == recBind && !d.b.dead {
			if b := d.b.binding(d.aor); d.b.key != b.Key() || d.b.exp != nanos(b.Expires) {
				t.Fatal("inconsistent live record")
			}
		}
		_, _ = decodeFrame(data)
	})
}
