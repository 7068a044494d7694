package core

import (
	"testing"
	"time"
)

// Tag handover: the incoming holder becomes active only once the outgoing
// one cannot be holding any more. Node 1 (priority 200) holds "vip", node
// 2 (100) is its partner, node 3 a witness that gives node 2 its quorum.

const handoverStep = 10 * time.Millisecond

func handoverLab(t *testing.T) *lab {
	t.Helper()
	l := newLab(t)
	spec := TagSpec{Name: "vip", Nodes: []NodeID{1, 2}, Priorities: map[NodeID]int32{1: 200, 2: 100}}
	for id := NodeID(1); id <= 3; id++ {
		cfg := labConfig(id, "r1")
		cfg.Self.Seed = id == 1
		cfg.TopologyGrace = time.Second
		cfg.Tags = []TagSpec{spec}
		l.add(cfg)
	}
	l.link(1, 2)
	l.link(1, 3)
	l.link(2, 3)
	l.settle()
	l.run(2*time.Second, handoverStep)
	if !tagOf(l.cores[1], "vip").Active || tagOf(l.cores[2], "vip").Active {
		t.Fatalf("node 1 should hold vip alone: %+v %+v", tagOf(l.cores[1], "vip"), tagOf(l.cores[2], "vip"))
	}
	if m := l.cores[2].FenceMargin(); m != 200*time.Millisecond {
		t.Fatalf("LAN fence margin %v, want 200ms (two LAN ping intervals)", m)
	}
	clear(l.events)
	return l
}

// activeAt returns the lab time at which node id's tag event with active first
// appears, running the lab in steps until limit.
func activeAt(l *lab, id NodeID, active bool, limit time.Duration) (time.Time, bool) {
	for end := l.now.Add(limit); ; {
		for _, e := range l.events[id] {
			if e.Kind == EventTagOwner && e.Tag == "vip" && e.Active == active {
				return l.now, true
			}
		}
		if !l.now.Before(end) {
			return time.Time{}, false
		}
		l.tick(handoverStep)
	}
}

func downAt(l *lab, id, peer NodeID) (time.Time, bool) {
	for end := l.now.Add(2 * time.Second); l.now.Before(end); l.tick(handoverStep) {
		if hasKind(l.events[id], EventNodeDown, peer) {
			return l.now, true
		}
	}
	return time.Time{}, false
}

func TestHandoverKillIsImmediate(t *testing.T) {
	l := handoverLab(t)
	t0 := l.now
	l.kill(1, true) // the kernel closes its TCP: peers see EOF/RST
	l.settle()
	at, ok := activeAt(l, 2, true, 0)
	if !ok || !at.Equal(t0) {
		t.Fatalf("node 2 active at %v (ok %v), want at the kill, %v", at.Sub(labEpoch), ok, t0.Sub(labEpoch))
	}
}

func TestHandoverHeartbeatTimeoutWaitsFenceMargin(t *testing.T) {
	l := handoverLab(t)
	l.kill(1, false) // frozen or cut off: peers find out by heartbeat
	down, ok := downAt(l, 2, 1)
	if !ok {
		t.Fatal("node 2 never saw node 1 down")
	}
	if tagOf(l.cores[2], "vip").Active {
		t.Fatal("node 2 active as soon as node 1 timed out")
	}
	at, ok := activeAt(l, 2, true, 2*time.Second)
	if want := down.Add(200 * time.Millisecond); !ok || !at.Equal(want) {
		t.Fatalf("node 2 active at %v, want %v (down at %v + 200ms margin)", at.Sub(labEpoch), want.Sub(labEpoch), down.Sub(labEpoch))
	}
}

// A link error that is not a close by the peer (no EOF/RST) proves nothing:
// the margin applies.
func TestHandoverLinkFailedWaitsFenceMargin(t *testing.T) {
	l := handoverLab(t)
	t0 := l.now
	for _, p := range []NodeID{2, 3} {
		l.muted[mkEdge(1, p)] = true
		l.cores[p].LinkFailed(l.now, 1)
	}
	l.collect()
	l.settle()
	if !hasKind(l.events[2], EventNodeDown, 1) {
		t.Fatal("node 2 still sees node 1")
	}
	at, ok := activeAt(l, 2, true, 2*time.Second)
	if want := t0.Add(200 * time.Millisecond); !ok || !at.Equal(want) {
		t.Fatalf("node 2 active at %v, want %v", at.Sub(labEpoch), want.Sub(labEpoch))
	}
}

// Node 1 is cut off alive: it fences itself (no quorum) before node 2
// becomes active.
func TestHandoverPartitionOldHolderFencesFirst(t *testing.T) {
	l := handoverLab(t)
	l.muted[mkEdge(1, 2)] = true
	l.muted[mkEdge(1, 3)] = true
	fenced, ok := activeAt(l, 1, false, 2*time.Second)
	if !ok {
		t.Fatal("node 1 never fenced itself")
	}
	took, ok := activeAt(l, 2, true, 2*time.Second)
	if !ok || !fenced.Before(took) {
		t.Fatalf("node 1 fenced at %v, node 2 active at %v: want fence first", fenced.Sub(labEpoch), took.Sub(labEpoch))
	}
}

func isClaimFrom(id NodeID) func(labFrame) bool {
	return func(f labFrame) bool { return f.from == id && f.f.Type == msgTagClaim }
}

// Drain: node 1 releases first; node 2 becomes active when the release
// arrives, not when it learns that node 1 drained.
func TestHandoverPreemptWaitsForRelease(t *testing.T) {
	l := handoverLab(t)
	l.hold = isClaimFrom(1)
	t0 := l.now
	l.cores[1].SetDrained(l.now, true)
	l.collect()
	l.settle()
	if at, ok := activeAt(l, 1, false, 0); !ok || !at.Equal(t0) {
		t.Fatal("node 1 did not release at once")
	}
	if tagOf(l.cores[2], "vip").Owner != 2 {
		t.Fatalf("node 2 does not see itself elected: %+v", tagOf(l.cores[2], "vip"))
	}
	l.run(50*time.Millisecond, handoverStep)
	if tagOf(l.cores[2], "vip").Active {
		t.Fatal("node 2 active before node 1's release arrived")
	}
	l.hold = nil
	if !l.release(func(f labFrame) bool { return isClaimFrom(1)(f) && f.to == 2 }) {
		t.Fatal("no release from node 1 queued for node 2")
	}
	at, ok := activeAt(l, 2, true, 0)
	if want := t0.Add(50 * time.Millisecond); !ok || !at.Equal(want) {
		t.Fatalf("node 2 active at %v, want %v (when the release arrived)", at.Sub(labEpoch), want.Sub(labEpoch))
	}
}

// Drain with no message lost: one exchange, no time passes in the lab.
func TestHandoverDrainIsPrompt(t *testing.T) {
	l := handoverLab(t)
	t0 := l.now
	l.cores[1].SetDrained(l.now, true)
	l.collect()
	l.settle()
	if at, ok := activeAt(l, 2, true, 0); !ok || !at.Equal(t0) {
		t.Fatalf("node 2 active at %v (ok %v), want at the drain", at.Sub(labEpoch), ok)
	}
}

func TestHandoverReleaseLostWaitsTimeout(t *testing.T) {
	l := handoverLab(t)
	l.hold = isClaimFrom(1) // never delivered
	t0 := l.now
	l.cores[1].SetDrained(l.now, true)
	l.collect()
	l.settle()
	at, ok := activeAt(l, 2, true, 2*time.Second)
	if want := t0.Add(time.Second); !ok || !at.Equal(want) {
		t.Fatalf("node 2 active at %v, want %v (release timeout 1s)", at.Sub(labEpoch), want.Sub(labEpoch))
	}
}

func TestFenceMarginFollowsSlowestProfile(t *testing.T) {
	cfg := labConfig(1, "r1")
	c := New(cfg, labEpoch)
	if m := c.FenceMargin(); m != 200*time.Millisecond {
		t.Fatalf("LAN only: %v, want 200ms", m)
	}
	neighbour(c, labEpoch, peerMeta(2, "r2"), 10, 1)
	if m := c.FenceMargin(); m != 1100*time.Millisecond {
		t.Fatalf("with a node in another region: %v, want 1.1s (WAN 1s + LAN 100ms ping intervals)", m)
	}
	cfg.FenceMargin = 2 * time.Second
	if m := New(cfg, labEpoch).FenceMargin(); m != 2*time.Second {
		t.Fatalf("configured: %v, want 2s", m)
	}
}

// After a heal, the preferred holder takes the tag back once the partner
// has released it, and not within a LAN ping interval of seeing it again.
func TestHandoverHealTakesBackAfterRelease(t *testing.T) {
	l := handoverLab(t)
	l.muted[mkEdge(1, 2)] = true
	l.muted[mkEdge(1, 3)] = true
	if _, ok := activeAt(l, 2, true, 3*time.Second); !ok {
		t.Fatal("node 2 never took over")
	}
	l.run(time.Second, handoverStep) // both sides time the links out
	clear(l.muted)
	clear(l.events)
	t0 := l.now
	l.link(1, 2)
	l.link(1, 3)
	l.settle()
	if at, ok := activeAt(l, 2, false, 0); !ok || !at.Equal(t0) {
		t.Fatalf("node 2 did not release at the heal: %+v", tagOf(l.cores[2], "vip"))
	}
	at, ok := activeAt(l, 1, true, time.Second)
	if want := t0.Add(100 * time.Millisecond); !ok || !at.Equal(want) {
		t.Fatalf("node 1 active at %v, want %v (heal + one LAN ping interval)", at.Sub(labEpoch), want.Sub(labEpoch))
	}
}

// Two regions: nodes 1 and 2 in r1 hold "vip" (1 preferred), 3 and 4 in
// r2 are reached over WAN links (ping 1s, dead after 5s). Full mesh.
func twoRegionLab(t *testing.T) *lab {
	t.Helper()
	l := newLab(t)
	spec := TagSpec{Name: "vip", Region: "r1", Priorities: map[NodeID]int32{1: 200, 2: 100}}
	for id := NodeID(1); id <= 4; id++ {
		region := "r1"
		if id > 2 {
			region = "r2"
		}
		cfg := labConfig(id, region)
		cfg.Self.Seed = id == 1
		cfg.TopologyGrace = time.Second
		cfg.Tags = []TagSpec{spec}
		l.add(cfg)
	}
	for a := NodeID(1); a <= 4; a++ {
		for b := a + 1; b <= 4; b++ {
			l.link(a, b)
		}
	}
	l.settle()
	l.run(2*time.Second, handoverStep)
	if !tagOf(l.cores[1], "vip").Active || tagOf(l.cores[2], "vip").Active {
		t.Fatalf("node 1 should hold vip alone: %+v %+v", tagOf(l.cores[1], "vip"), tagOf(l.cores[2], "vip"))
	}
	clear(l.events)
	return l
}

// A frozen holder: its partner's LAN link times out, the other region's
// nodes probe their WAN links to it at once instead of waiting out the
// WAN dead time, and the partner takes over after the fence margin. Before
// probes this took the WAN dead time (5s) plus the margin.
func TestHandoverFrozenHolderAcrossRegions(t *testing.T) {
	l := twoRegionLab(t)
	t0 := l.now
	l.kill(1, false)
	at, ok := activeAt(l, 2, true, 8*time.Second)
	if !ok {
		t.Fatal("node 2 never took over")
	}
	// LAN dead 400ms + probe 300ms + margin 1.1s, plus ticks.
	if d := at.Sub(t0); d > 2*time.Second || d < 1500*time.Millisecond {
		t.Fatalf("node 2 active %v after the freeze, want 1.5s-2s", d)
	}
	for _, id := range []NodeID{3, 4} {
		if s := l.cores[id].Stats(); s.ProbesFailed != 1 {
			t.Fatalf("node %d: %d failed probes, want 1 (its link to node 1)", id, s.ProbesFailed)
		}
	}
}

// A holder cut off alive from everyone probes its WAN links when its LAN
// link times out, loses its quorum and releases before its partner takes
// over.
func TestHandoverCutOffHolderFencesFirstAcrossRegions(t *testing.T) {
	l := twoRegionLab(t)
	for p := NodeID(2); p <= 4; p++ {
		l.muted[mkEdge(1, p)] = true
	}
	fenced, ok := activeAt(l, 1, false, 8*time.Second)
	if !ok {
		t.Fatal("node 1 never fenced itself")
	}
	took, ok := activeAt(l, 2, true, 8*time.Second)
	if !ok || !fenced.Before(took) {
		t.Fatalf("node 1 fenced at %v, node 2 active at %v: want fence first", fenced.Sub(labEpoch), took.Sub(labEpoch))
	}
}

// A holder whose only links are WAN links (its LAN link already gone) and
// that is cut off: nothing on its side times out for 5s, so the fence
// lease withdraws the silent links from its view after 1.3s, before the
// partner, which learns of the cut by the same lease, is past its margin.
func TestHandoverWANOnlyHolderFencesByLease(t *testing.T) {
	l := twoRegionLab(t)
	l.muted[mkEdge(1, 2)] = true
	if _, ok := downAt(l, 2, 1); ok {
		t.Fatal("node 2 lost node 1 altogether; it should still reach it through r2")
	}
	l.run(time.Second, handoverStep)
	if !tagOf(l.cores[1], "vip").Active {
		t.Fatal("node 1 lost vip while it still reached r2")
	}
	t0 := l.now
	l.muted[mkEdge(1, 3)] = true
	l.muted[mkEdge(1, 4)] = true
	fenced, ok := activeAt(l, 1, false, 8*time.Second)
	if !ok {
		t.Fatal("node 1 never fenced itself")
	}
	if d := fenced.Sub(t0); d > 1500*time.Millisecond {
		t.Fatalf("node 1 fenced %v after the cut, want within the 1.3s lease", d)
	}
	took, ok := activeAt(l, 2, true, 8*time.Second)
	if !ok || !fenced.Before(took) {
		t.Fatalf("node 1 fenced at %v, node 2 active at %v: want fence first", fenced.Sub(labEpoch), took.Sub(labEpoch))
	}
}

// Node 2 becomes active but its claim never reaches node 1 (say it was cut
// off just after); when node 1 then loses node 2 by heartbeat timeout it
// still waits the fence margin, though the only claim it knows from node 2
// is a release.
func TestHandoverUnseenClaimStillWaitsFenceMargin(t *testing.T) {
	l := handoverLab(t)
	l.hold = isClaimFrom(2) // never delivered
	if err := l.cores[1].SetTagActive(l.now, "vip", 2); err != nil {
		t.Fatal(err)
	}
	l.collect()
	l.settle()
	if _, ok := activeAt(l, 2, true, time.Second); !ok {
		t.Fatal("node 2 never became active")
	}
	l.kill(2, false)
	down, ok := downAt(l, 1, 2)
	if !ok {
		t.Fatal("node 1 never saw node 2 down")
	}
	at, ok := activeAt(l, 1, true, 2*time.Second)
	if want := down.Add(200 * time.Millisecond); !ok || at.Before(want) {
		t.Fatalf("node 1 active at %v, want not before %v (down at %v + 200ms margin)", at.Sub(labEpoch), want.Sub(labEpoch), down.Sub(labEpoch))
	}
}
