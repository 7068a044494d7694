package core

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// logCap is a slice-backed capability WITHOUT Digest: anti-entropy cannot
// repair what a broken sync loses, so these tests see sync bugs. trail
// records what the core called, in order.
type logCap struct {
	name  string
	recs  [][]byte
	trail []string
}

func newLogCap(name string, n int, size func(i int) int) *logCap {
	lc := &logCap{name: name}
	for i := 0; i < n; i++ {
		rec := []byte(fmt.Sprintf("rec-%05d-", i))
		for len(rec) < size(i) {
			rec = append(rec, byte('a'+i%26))
		}
		lc.recs = append(lc.recs, rec[:size(i)])
	}
	return lc
}

func fixedSize(n int) func(int) int { return func(int) int { return n } }

func (lc *logCap) capability(needsSync bool) Capability {
	return Capability{
		Name:      lc.name,
		NeedsSync: needsSync,
		Handle: func(from NodeID, typ wire.MsgType, body []byte) {
			lc.trail = append(lc.trail, "live "+string(body))
		},
		Snapshot: func() SnapshotReader { return &sliceReader{recs: slices.Clone(lc.recs)} },
		Apply: func(from NodeID, recs [][]byte) {
			for _, r := range recs {
				lc.recs = append(lc.recs, slices.Clone(r))
			}
			lc.trail = append(lc.trail, fmt.Sprintf("apply %d", len(recs)))
		},
	}
}

// distinct counts different records (a retried sync applies some twice).
func (lc *logCap) distinct() int {
	seen := map[string]bool{}
	for _, r := range lc.recs {
		seen[string(r)] = true
	}
	return len(seen)
}

func syncConfig(id NodeID, region string) Config {
	c := labConfig(id, region)
	c.SyncChunkBytes = 256
	c.SyncWindow = 2
	c.SyncTimeout = time.Second
	return c
}

func isChunk(f labFrame) bool { return f.f.Cap == wire.SystemCap && f.f.Type == wire.MsgSyncChunk }
func isAck(f labFrame) bool   { return f.f.Cap == wire.SystemCap && f.f.Type == wire.MsgSyncAck }

func stateOf(c *Core, name string) SyncState {
	for _, ci := range c.Caps() {
		if ci.Name == name {
			return ci.State
		}
	}
	return NotSynced
}

func capInfo(c *Core, name string) CapInfo {
	for _, ci := range c.Caps() {
		if ci.Name == name {
			return ci
		}
	}
	return CapInfo{}
}

func syncStates(evs []Event, capName string) []SyncState {
	var out []SyncState
	for _, e := range evs {
		if e.Kind == EventSyncState && e.Cap == capName {
			out = append(out, e.State)
		}
	}
	return out
}

func TestSyncHoldsLiveUpdatesUntilLastChunk(t *testing.T) {
	l := newLab(t)
	donor := newLogCap("log", 40, fixedSize(50)) // 2000 bytes: about 8 chunks of 256
	d := l.add(syncConfig(1, "r1"), donor.capability(false))
	rcv := &logCap{name: "log"}
	r := l.add(syncConfig(2, "r1"), rcv.capability(true))
	l.hold = isChunk
	l.link(1, 2)
	l.settle()
	l.tick(20 * time.Millisecond)
	if st := stateOf(r, "log"); st != Syncing {
		t.Fatalf("receiver is %v, want syncing", st)
	}

	var want []string
	held := 0
	for l.release(isChunk) {
		if stateOf(r, "log") != Syncing {
			continue
		}
		// Live updates keep coming while the snapshot streams.
		body := fmt.Sprintf("u%d", len(want)+1)
		if !d.Send(l.now, "log", 7, 2, []byte(body)) {
			t.Fatal("donor cannot reach the receiver")
		}
		l.collect()
		l.settle()
		want = append(want, "live "+body)
		held++
	}
	if st := stateOf(r, "log"); st != Synced {
		t.Fatalf("receiver is %v after the last chunk", st)
	}
	if held < 3 {
		t.Fatalf("only %d live updates arrived during the sync; the test proves nothing", held)
	}
	first := slices.IndexFunc(rcv.trail, func(s string) bool { return strings.HasPrefix(s, "live") })
	if first < 0 {
		t.Fatalf("held live updates were dropped; trail %v", rcv.trail)
	}
	for _, s := range rcv.trail[:first] {
		if !strings.HasPrefix(s, "apply") {
			t.Fatalf("trail %v", rcv.trail)
		}
	}
	if got := rcv.trail[first:]; !slices.Equal(got, want) {
		t.Fatalf("after the snapshot the receiver handled %v, want %v in that order (full trail %v)", got, want, rcv.trail)
	}
	if len(rcv.recs) != 40 || rcv.distinct() != 40 {
		t.Fatalf("receiver holds %d records (%d distinct), want 40", len(rcv.recs), rcv.distinct())
	}
}

func TestSyncDonorFailsMidStream(t *testing.T) {
	cases := []struct {
		name string
		fail func(l *lab)
		// within bounds how long the receiver may take to give up on the
		// donor: each way of failing has its own detector.
		within time.Duration
	}{
		{"link reset", func(l *lab) { l.kill(1, true) }, 0},
		{"donor goes silent", func(l *lab) { l.kill(1, false) }, 400*time.Millisecond + 20*time.Millisecond},
		{"donor stalls, heartbeats go on", func(l *lab) {}, 5 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			const n = 60
			cfg := func(id NodeID) Config {
				c := syncConfig(id, "r1")
				c.SyncTimeout = 5 * time.Second // longer than DeadAfter
				return c
			}
			l.add(cfg(1), newLogCap("log", n, fixedSize(50)).capability(false))
			l.add(cfg(2), newLogCap("log", n, fixedSize(50)).capability(false))
			rcv := &logCap{name: "log"}
			r := l.add(cfg(3), rcv.capability(true))
			fromFirst := func(f labFrame) bool { return isChunk(f) && f.from == 1 }
			l.hold = fromFirst
			l.link(1, 3)
			l.link(2, 3)
			l.settle()
			l.tick(20 * time.Millisecond)
			if ci := capInfo(r, "log"); ci.State != Syncing || ci.Donor != 1 {
				t.Fatalf("receiver %+v, want syncing from 1", ci)
			}
			l.release(fromFirst)
			l.release(fromFirst)
			if rcv.distinct() == 0 || rcv.distinct() == n {
				t.Fatalf("setup: %d records before the donor fails", rcv.distinct())
			}
			// From here on node 1 sends no more chunks.
			l.q = slices.DeleteFunc(l.q, fromFirst)
			failed := l.now
			tc.fail(l)
			for stateOf(r, "log") == Syncing && capInfo(r, "log").Donor == 1 {
				if l.now.Sub(failed) > tc.within {
					t.Fatalf("still syncing from the failed donor after %v", l.now.Sub(failed))
				}
				l.tick(20 * time.Millisecond)
			}
			for i := 0; i < 250 && stateOf(r, "log") != Synced; i++ {
				l.tick(20 * time.Millisecond)
			}
			ci := capInfo(r, "log")
			if ci.State != Synced {
				t.Fatalf("receiver %+v 5 s after giving up on its donor", ci)
			}
			if got, want := syncStates(l.events[3], "log"), []SyncState{Syncing, Pending, Syncing, Synced}; !slices.Equal(got, want) {
				t.Fatalf("sync states %v, want %v", got, want)
			}
			if ci.Attempts != 2 {
				t.Fatalf("attempts %d, want 2", ci.Attempts)
			}
			if rcv.distinct() != n {
				t.Fatalf("receiver holds %d distinct records, want %d", rcv.distinct(), n)
			}
		})
	}
}

// pongFrame is a pong to a ping sent at sent.
func pongFrame(from NodeID, sent time.Time) *wire.Frame {
	var w wire.Writer
	w.I64(sent.UnixNano())
	return &wire.Frame{Version: wire.Version, Type: wire.MsgPong, Src: from, TTL: wire.DefaultTTL, Body: w.B}
}

func TestSyncDonorChoice(t *testing.T) {
	type donor struct {
		id     NodeID
		region string
		rtt    time.Duration // direct link RTT
		via    NodeID        // routed through this donor instead of linked
		synced bool
	}
	cases := []struct {
		name   string
		donors []donor
		want   NodeID
	}{
		{"same region before lower RTT", []donor{{id: 2, region: "b", rtt: time.Millisecond, synced: true}, {id: 3, region: "a", rtt: 30 * time.Millisecond, synced: true}}, 3},
		{"lower RTT within the region", []donor{{id: 2, region: "a", rtt: 30 * time.Millisecond, synced: true}, {id: 3, region: "a", rtt: 5 * time.Millisecond, synced: true}}, 3},
		{"lowest id on a tie", []donor{{id: 2, region: "a", rtt: 5 * time.Millisecond, synced: true}, {id: 3, region: "a", rtt: 5 * time.Millisecond, synced: true}}, 2},
		{"direct before routed", []donor{{id: 2, region: "a", via: 3, synced: true}, {id: 3, region: "a", rtt: 30 * time.Millisecond, synced: true}}, 3},
		{"only synced nodes", []donor{{id: 2, region: "a", rtt: time.Millisecond}, {id: 3, region: "a", rtt: 30 * time.Millisecond, synced: true}}, 3},
		{"another region when it is all there is", []donor{{id: 2, region: "b", rtt: 5 * time.Millisecond, synced: true}}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := labEpoch
			r := New(syncConfig(1, "a"), now)
			r.Register((&logCap{name: "log"}).capability(true))
			metas := map[NodeID]NodeMeta{}
			links := map[NodeID][]NodeID{}
			for _, d := range tc.donors {
				m := peerMeta(d.id, d.region)
				if d.synced {
					m.Synced = []string{"log"}
				}
				metas[d.id] = m
				if d.via == 0 {
					links[d.id] = append(links[d.id], 1)
					r.LinkUp(now, m)
				} else {
					links[d.id] = append(links[d.id], d.via)
					links[d.via] = append(links[d.via], d.id)
				}
			}
			for _, d := range tc.donors {
				r.Recv(now, tc.donors[len(tc.donors)-1].id, lsaFrame(metas[d.id], 10, links[d.id]...))
			}
			for _, d := range tc.donors {
				if d.via == 0 {
					r.Recv(now, d.id, pongFrame(d.id, now.Add(-d.rtt)))
				}
			}
			r.Ready()
			r.Tick(now)
			if got := capInfo(r, "log").Donor; got != tc.want {
				t.Fatalf("donor %d, want %d", got, tc.want)
			}
			if req := sendsOf(r.Ready(), wire.MsgSyncRequest); len(req) != 1 || req[0].Frame.Dst != tc.want {
				t.Fatalf("sync requests %+v, want one to %d", req, tc.want)
			}
		})
	}
}

func TestSyncFlowControl(t *testing.T) {
	const (
		window = 3
		chunk  = 1000
		maxRec = 150
	)
	rnd := rand.New(rand.NewSource(1))
	sizes := make([]int, 400)
	for i := range sizes {
		sizes[i] = 50 + rnd.Intn(maxRec-50+1)
	}
	cfg := func(id NodeID) Config {
		c := syncConfig(id, "r1")
		c.SyncChunkBytes, c.SyncWindow = chunk, window
		return c
	}
	l := newLab(t)
	donor := newLogCap("log", len(sizes), func(i int) int { return sizes[i] })
	l.add(cfg(1), donor.capability(false))
	rcv := &logCap{name: "log"}
	r := l.add(cfg(2), rcv.capability(true))
	l.hold = func(f labFrame) bool { return isChunk(f) || isAck(f) }
	l.link(1, 2)
	l.settle()
	l.tick(20 * time.Millisecond)

	var sent, acked uint32 // highest chunk seq the donor sent, highest ack it got
	chunks := 0
	seen := map[*wire.Frame]bool{}
	check := func() {
		t.Helper()
		for _, f := range l.q {
			if !isChunk(f) || seen[f.f] {
				continue
			}
			seen[f.f] = true
			chunks++
			rd := wire.Reader{B: f.f.Body}
			rd.U64()
			seq := rd.U32()
			rd.Bool()
			n := rd.Count(4)
			sent = max(sent, seq)
			if limit := 17 + 4*n + chunk + maxRec; len(f.f.Body) > limit {
				t.Fatalf("chunk %d is %d bytes for %d records, limit %d", seq, len(f.f.Body), n, limit)
			}
		}
		if sent-acked > window {
			t.Fatalf("%d chunks in flight (sent %d, acked %d), window %d", sent-acked, sent, acked, window)
		}
	}
	check()
	if sent != window {
		t.Fatalf("donor sent %d chunks before any ack, want the whole window of %d", sent, window)
	}
	for step := 0; stateOf(r, "log") != Synced; step++ {
		if step > 10_000 {
			t.Fatal("sync did not finish")
		}
		// Receiver and acks progress at random relative speeds.
		if rnd.Intn(3) > 0 && l.release(isChunk) {
			check()
			continue
		}
		if i := slices.IndexFunc(l.q, isAck); i >= 0 {
			rd := wire.Reader{B: l.q[i].f.Body}
			rd.U64()
			seq := rd.U32()
			l.deliver(i)
			l.settle()
			acked = max(acked, seq)
			check()
		}
	}
	if chunks < 20 {
		t.Fatalf("only %d chunks: the window was never exercised", chunks)
	}
	if !slices.EqualFunc(rcv.recs, donor.recs[:len(sizes)], func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("receiver got %d records, not the donor's %d in order", len(rcv.recs), len(sizes))
	}
}

func TestSyncSeedRule(t *testing.T) {
	const delay = 3 * time.Second
	for _, seed := range []bool{true, false} {
		t.Run(fmt.Sprintf("seed=%v alone", seed), func(t *testing.T) {
			cfg := syncConfig(1, "r1")
			cfg.Self.Seed, cfg.SeedSyncDelay = seed, delay
			c := New(cfg, labEpoch)
			c.Register((&logCap{name: "log"}).capability(true))
			var syncedAt time.Duration = -1
			for d := time.Duration(0); d <= time.Hour; d += 50 * time.Millisecond {
				c.Tick(labEpoch.Add(d))
				if stateOf(c, "log") == Synced {
					syncedAt = d
					break
				}
				if stateOf(c, "log") != Pending {
					t.Fatalf("state %v at %v", stateOf(c, "log"), d)
				}
			}
			switch {
			case seed && syncedAt != delay:
				t.Fatalf("seed synced at %v, want exactly SeedSyncDelay %v", syncedAt, delay)
			case !seed && syncedAt >= 0:
				t.Fatalf("non-seed with no donor declared itself synced at %v", syncedAt)
			}
		})
	}
	t.Run("two non-seeds wait for a donor", func(t *testing.T) {
		l := newLab(t)
		a := l.add(syncConfig(1, "r1"), (&logCap{name: "log"}).capability(true))
		b := l.add(syncConfig(2, "r1"), (&logCap{name: "log"}).capability(true))
		l.link(1, 2)
		l.run(time.Hour, 100*time.Millisecond)
		if !a.Linked(2) {
			t.Fatal("link died: the test ran without heartbeats")
		}
		if stateOf(a, "log") != Pending || stateOf(b, "log") != Pending {
			t.Fatalf("states %v %v after an hour with no donor, want pending", stateOf(a, "log"), stateOf(b, "log"))
		}
	})
}

func syncRequest(req uint64, capName string, from, to NodeID) *wire.Frame {
	var w wire.Writer
	w.U64(req)
	w.String(capName)
	return &wire.Frame{Version: wire.Version, Type: wire.MsgSyncRequest, Src: from, Dst: to, TTL: wire.DefaultTTL, Body: w.B}
}

func TestSyncRequestToNonDonorIsAborted(t *testing.T) {
	now := labEpoch
	n := New(syncConfig(1, "r1"), now)
	n.Register((&logCap{name: "pending"}).capability(true))
	n.Register(Capability{Name: "nosnap", Apply: func(NodeID, [][]byte) {}})
	n.Register(newLogCap("ok", 3, fixedSize(10)).capability(false))
	neighbour(n, now, peerMeta(2, "r1"), 10, 1)
	n.Ready()
	cases := []struct {
		capName   string
		wantAbort bool
	}{
		{"pending", true},
		{"unknown", true},
		{"nosnap", true},
		{"ok", false},
	}
	for i, tc := range cases {
		t.Run(tc.capName, func(t *testing.T) {
			req := uint64(2)<<32 | uint64(i+1)
			n.Recv(now, 2, syncRequest(req, tc.capName, 2, 1))
			r := n.Ready()
			aborts, chunks := sendsOf(r, wire.MsgSyncAbort), sendsOf(r, wire.MsgSyncChunk)
			if !tc.wantAbort {
				if len(aborts) != 0 || len(chunks) == 0 {
					t.Fatalf("synced donor: %d aborts, %d chunks", len(aborts), len(chunks))
				}
				return
			}
			if len(chunks) != 0 || len(aborts) != 1 || aborts[0].To != 2 || aborts[0].Frame.Dst != 2 {
				t.Fatalf("%d chunks, aborts %+v; want one abort to 2", len(chunks), aborts)
			}
			rd := wire.Reader{B: aborts[0].Frame.Body}
			if got := rd.U64(); got != req {
				t.Fatalf("abort for request %x, want %x", got, req)
			}
		})
	}
}

func TestSyncAbortedReceiverAvoidsThatDonor(t *testing.T) {
	t0 := labEpoch
	cfg := syncConfig(1, "r1")
	r := New(cfg, t0)
	r.Register((&logCap{name: "log"}).capability(true))
	neighbour(r, t0, peerMeta(2, "r1", "log"), 10, 1)
	r.Ready()
	r.Tick(t0)
	reqs := sendsOf(r.Ready(), wire.MsgSyncRequest)
	if len(reqs) != 1 {
		t.Fatalf("%d sync requests, want 1", len(reqs))
	}
	rd := wire.Reader{B: reqs[0].Frame.Body}
	var w wire.Writer
	w.U64(rd.U64())
	r.Recv(t0, 2, &wire.Frame{Version: wire.Version, Type: wire.MsgSyncAbort, Src: 2, Dst: 1, TTL: wire.DefaultTTL, Body: w.B})
	if st := stateOf(r, "log"); st != Pending {
		t.Fatalf("state %v after the donor aborted, want pending", st)
	}
	// The donor that refused is left alone for 2*SyncTimeout, then retried.
	var retried time.Duration
	for d := 100 * time.Millisecond; d <= 4*cfg.SyncTimeout; d += 100 * time.Millisecond {
		r.Heard(2, t0.Add(d))
		r.Tick(t0.Add(d))
		if len(sendsOf(r.Ready(), wire.MsgSyncRequest)) > 0 {
			retried = d
			break
		}
	}
	if retried != 2*cfg.SyncTimeout {
		t.Fatalf("retried the refusing donor after %v, want %v", retried, 2*cfg.SyncTimeout)
	}
}

// TestSyncRetriesADonorThatFlapped: a donor that was only unreachable for
// a moment (a link replaced under it) is asked again as soon as it is
// back. Avoiding it as if it had refused stalled joins for 2×SyncTimeout
// when it was the only donor.
func TestSyncRetriesADonorThatFlapped(t *testing.T) {
	t0 := labEpoch
	r := New(syncConfig(1, "r1"), t0)
	r.Register((&logCap{name: "log"}).capability(true))
	neighbour(r, t0, peerMeta(2, "r1", "log"), 10, 1)
	r.Ready()
	r.Tick(t0)
	if n := len(sendsOf(r.Ready(), wire.MsgSyncRequest)); n != 1 {
		t.Fatalf("%d sync requests, want 1", n)
	}
	t1 := t0.Add(10 * time.Millisecond)
	r.LinkDown(t1, 2)
	if st := stateOf(r, "log"); st != Pending {
		t.Fatalf("state %v with the donor gone, want pending", st)
	}
	r.Ready()
	t2 := t1.Add(10 * time.Millisecond)
	neighbour(r, t2, peerMeta(2, "r1", "log"), 11, 1)
	r.Tick(t2)
	if n := len(sendsOf(r.Ready(), wire.MsgSyncRequest)); n != 1 {
		t.Fatalf("%d sync requests once the donor is back, want 1 at once", n)
	}
	if ci := capInfo(r, "log"); ci.State != Syncing || ci.Donor != 2 {
		t.Fatalf("receiver %+v, want syncing from 2", ci)
	}
}

func TestSyncChunkFitsInAFrame(t *testing.T) {
	// The largest chunk size the shell accepts, and records smaller than
	// their own length prefix (ids, flags).
	cfg := syncConfig(1, "r1")
	cfg.SyncChunkBytes = 512 << 10
	d := New(cfg, labEpoch)
	d.Register(newLogCap("ids", 400_000, fixedSize(2)).capability(false))
	neighbour(d, labEpoch, peerMeta(2, "r1"), 10, 1)
	d.Ready()
	d.Recv(labEpoch, 2, syncRequest(2<<32|1, "ids", 2, 1))
	chunks := sendsOf(d.Ready(), wire.MsgSyncChunk)
	if len(chunks) == 0 {
		t.Fatal("no chunk sent")
	}
	for _, s := range chunks {
		if err := wire.Validate(s.Frame); err != nil {
			t.Fatalf("chunk of %d bytes cannot be sent: %v", len(s.Frame.Body), err)
		}
	}
}

// TestSyncChunkBuffersReused: a donor builds chunk bodies in buffers that
// come back through Frame.Release (the transport calls it once a chunk is
// on the wire), so a long sync cycles through a window's worth of them
// instead of allocating one per chunk.
func TestSyncChunkBuffersReused(t *testing.T) {
	cfg := syncConfig(1, "r1")
	cfg.SyncChunkBytes, cfg.SyncWindow = 1024, 2
	d := New(cfg, labEpoch)
	donor := newLogCap("log", 100, fixedSize(200))
	d.Register(donor.capability(false))
	neighbour(d, labEpoch, peerMeta(2, "r1"), 10, 1)
	d.Ready()
	const req = 2<<32 | 1
	d.Recv(labEpoch, 2, syncRequest(req, "log", 2, 1))
	bufs := map[*byte]bool{} // every backing array a chunk used
	var got [][]byte
	for seq := uint32(0); ; {
		chunks := sendsOf(d.Ready(), wire.MsgSyncChunk)
		if len(chunks) == 0 {
			break
		}
		for _, s := range chunks {
			f := s.Frame
			if f.Release == nil {
				t.Fatal("chunk without Release")
			}
			rd := wire.Reader{B: f.Body}
			rd.U64()
			seq = rd.U32()
			rd.Bool()
			for n := rd.Count(4); n > 0; n-- {
				got = append(got, slices.Clone(rd.Bytes()))
			}
			if rd.Err != nil {
				t.Fatalf("chunk %d: %v", seq, rd.Err)
			}
			bufs[&f.Body[:1][0]] = true
			f.Release(f.Body) // written: the donor may reuse it now
		}
		var w wire.Writer
		w.U64(req)
		w.U32(seq)
		d.Recv(labEpoch, 2, &wire.Frame{Version: wire.Version, Type: wire.MsgSyncAck, Src: 2, Dst: 1, TTL: wire.DefaultTTL, Body: w.B})
	}
	if !slices.EqualFunc(got, donor.recs, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("chunks carried %d records, not the donor's %d in order", len(got), len(donor.recs))
	}
	// 100 records of 200 bytes make 25 chunks of 4; a window of 2 needs 2
	// buffers, 3 at most with the one being built.
	if len(bufs) > cfg.SyncWindow+1 {
		t.Fatalf("%d chunk buffers for a window of %d: released buffers are not reused", len(bufs), cfg.SyncWindow)
	}
}

// A node whose donor is lost mid-sync does not declare itself synced by
// the seed rule (Donors) after the usual delay with part of the data: it
// waits two SyncTimeouts more for the donor to come back.
func TestSyncSeedRuleWaitsLongerAfterALostDonor(t *testing.T) {
	l := newLab(t)
	const n = 60
	regional := func(cp Capability) Capability {
		cp.Donors = func(m NodeMeta) bool { return m.Region == "r1" }
		return cp
	}
	cfg1 := syncConfig(1, "r1")
	cfg1.Self.Seed = true
	l.add(cfg1, regional(newLogCap("log", n, fixedSize(50)).capability(false)))
	rcv := &logCap{name: "log"}
	r := l.add(syncConfig(2, "r1"), regional(rcv.capability(true)))
	fromFirst := func(f labFrame) bool { return isChunk(f) && f.from == 1 }
	l.hold = fromFirst
	l.link(1, 2)
	l.settle()
	l.tick(20 * time.Millisecond)
	l.release(fromFirst)
	if ci := capInfo(r, "log"); ci.State != Syncing || rcv.distinct() == 0 || rcv.distinct() == n {
		t.Fatalf("setup: %+v with %d records", ci, rcv.distinct())
	}
	l.q = slices.DeleteFunc(l.q, fromFirst)
	l.kill(1, false)
	for i := 0; i < 100 && stateOf(r, "log") == Syncing; i++ {
		l.tick(20 * time.Millisecond)
	}
	pending := l.now
	if stateOf(r, "log") != Pending {
		t.Fatalf("state %v after the donor went silent, want pending", stateOf(r, "log"))
	}
	cfg := syncConfig(2, "r1")
	cfg.fill()
	grace := cfg.SeedSyncDelay + 2*cfg.SyncTimeout
	for l.now.Sub(pending) < grace-100*time.Millisecond {
		if stateOf(r, "log") == Synced {
			t.Fatalf("declared synced %v after losing its donor with %d of %d records", l.now.Sub(pending), rcv.distinct(), n)
		}
		l.tick(50 * time.Millisecond)
	}
	l.run(time.Second, 50*time.Millisecond)
	if stateOf(r, "log") != Synced {
		t.Fatalf("still %v %v after losing its donor for good", stateOf(r, "log"), l.now.Sub(pending))
	}
}

// Settle runs once the last chunk is applied, while the capability still
// counts as syncing, and before the held live updates: a capability that
// applies in the background finishes there.
func TestSyncSettlesBeforeSyncedAndHeldUpdates(t *testing.T) {
	l := newLab(t)
	donor := newLogCap("log", 40, fixedSize(50))
	d := l.add(syncConfig(1, "r1"), donor.capability(false))
	rcv := &logCap{name: "log"}
	cp := rcv.capability(true)
	var r *Core
	var settledIn []SyncState
	cp.Settle = func() {
		settledIn = append(settledIn, stateOf(r, "log"))
		rcv.trail = append(rcv.trail, "settle")
	}
	r = l.add(syncConfig(2, "r1"), cp)
	l.hold = isChunk
	l.link(1, 2)
	l.settle()
	l.tick(20 * time.Millisecond)
	sent := false
	for l.release(isChunk) {
		if !sent && stateOf(r, "log") == Syncing {
			if !d.Send(l.now, "log", 7, 2, []byte("u1")) {
				t.Fatal("donor cannot reach the receiver")
			}
			l.collect()
			l.settle()
			sent = true
		}
	}
	if st := stateOf(r, "log"); st != Synced {
		t.Fatalf("receiver is %v after the last chunk", st)
	}
	if !slices.Equal(settledIn, []SyncState{Syncing}) {
		t.Fatalf("Settle ran in states %v, want once while syncing", settledIn)
	}
	n := len(rcv.trail)
	if n < 3 || rcv.trail[n-2] != "settle" || rcv.trail[n-1] != "live u1" || !strings.HasPrefix(rcv.trail[n-3], "apply") {
		t.Fatalf("trail %v: want the applies, then settle, then the held update", rcv.trail)
	}
}
