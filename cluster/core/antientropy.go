package core

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Anti-entropy: a node sends a capability's bucket digest to a peer; the
// peer answers with its records for every bucket that differs and asks for
// ours. Both sides merge with the capability's rule, so both converge. It
// runs on a timer against a random synced peer, and at once towards a node
// that comes back after being unreachable (a healed partition).
//
// A round sends at most AntiEntropyBytes of records (whole buckets, from a
// random first bucket): after a partition nearly every bucket differs, and
// sending them all at once held both loops for seconds, past the
// heartbeat dead time, so the link died, healed, and the exchange began
// again. A truncated round keeps the buckets it left out and sends them
// (and asks for the peer's, when the round had not) aeFollowUp later, a
// budget at a time. It does not compare digests again: under load,
// replication in flight always makes some buckets differ, and a new
// comparison per follow-up kept a busy pair exchanging forever.

// aeFollowUp spaces the rounds of a repair too large for one.
const aeFollowUp = 250 * time.Millisecond

// A bucket is sent only once two comparisons, aeRecheck apart, found it
// different. Under load, replication in flight makes the buckets written
// in the last few milliseconds differ at any instant (more while a loop
// lags): one comparison shipped about a hundred records for each one that
// actually needed repair, every round, and merging them stalled a busy
// one-core node's loop for a replication-lag tail of hundreds of ms. An
// in-flight difference is gone by the second look; a real one is still
// there. The first digest marks the differing buckets as suspects and the
// receiver answers aeRecheck later with its own digest; the peer, seeing
// its fresh suspects differ again, sends them (and asks for ours). A
// repair after a heal thus starts about a second later.
const (
	aeRecheck    = 500 * time.Millisecond
	aeSuspectTTL = 4 * aeRecheck // a second look must come within this
)

type aeKey struct {
	peer NodeID
	name string
}

// aeSuspect: the buckets that differed in a comparison at at.
type aeSuspect struct {
	at      time.Time
	buckets map[uint32]bool
}

// aeConfirm splits the buckets that differ from peer's digest: those that
// already differed in the last comparison are returned to be sent; the
// others become the suspects, and if there were no fresh suspects to
// compare with, a digest goes back to peer aeRecheck later so that the
// peer looks a second time.
func (c *Core) aeConfirm(peer NodeID, name string, diff []uint32) []uint32 {
	k := aeKey{peer, name}
	old := c.aeSusp[k]
	fresh := old != nil && c.now.Sub(old.at) <= aeSuspectTTL
	var confirmed []uint32
	sus := &aeSuspect{at: c.now, buckets: map[uint32]bool{}}
	for _, b := range diff {
		if fresh && old.buckets[b] {
			confirmed = append(confirmed, b)
		} else {
			sus.buckets[b] = true
		}
	}
	if len(sus.buckets) == 0 {
		delete(c.aeSusp, k)
	} else {
		c.aeSusp[k] = sus
		if !fresh {
			c.aeCheck[k] = c.now.Add(aeRecheck)
		}
	}
	c.stats.AntiEntropyUnconfirmed += uint64(len(sus.buckets))
	return confirmed
}

// aeRechecks sends the digests that confirm suspects, when due.
func (c *Core) aeRechecks() {
	if len(c.aeCheck) == 0 {
		return
	}
	keys := make([]aeKey, 0, len(c.aeCheck))
	for k, at := range c.aeCheck {
		if !c.now.Before(at) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b aeKey) int { // deterministic
		return cmp.Or(cmp.Compare(a.peer, b.peer), strings.Compare(a.name, b.name))
	})
	for _, k := range keys {
		delete(c.aeCheck, k)
		if c.aeReady(k.name, k.peer) {
			c.sendDigest(k.name, k.peer)
		}
	}
}

// aeRest is what a truncated round left to send to one peer.
type aeRest struct {
	at   time.Time
	caps map[string]*aeBuckets
}

// aeBuckets are one capability's buckets left to send, each at most once,
// in order; ask marks those whose records the peer must send back too.
type aeBuckets struct {
	order []uint32
	ask   map[uint32]bool
}

// aeDefer records buckets left for a follow-up round with peer.
func (c *Core) aeDefer(peer NodeID, name string, buckets []uint32, ask func(uint32) bool) {
	r := c.aeAgain[peer]
	if r == nil {
		r = &aeRest{caps: map[string]*aeBuckets{}}
		c.aeAgain[peer] = r
	}
	r.at = c.now.Add(aeFollowUp)
	b := r.caps[name]
	if b == nil {
		b = &aeBuckets{ask: map[uint32]bool{}}
		r.caps[name] = b
	}
	for _, k := range buckets {
		a, seen := b.ask[k]
		if !seen {
			b.order = append(b.order, k)
		}
		b.ask[k] = a || ask(k)
	}
	c.stats.AntiEntropyTruncated++
}

func always(uint32) bool { return true }
func never(uint32) bool  { return false }

// aeFollow sends the next budget of what earlier rounds left for peer.
func (c *Core) aeFollow(peer NodeID, r *aeRest) {
	for _, name := range c.capNames {
		b := r.caps[name]
		if b == nil {
			continue
		}
		delete(r.caps, name)
		if !c.aeReady(name, peer) {
			continue
		}
		cs := c.caps[name]
		sent := c.sendBuckets(name, cs, peer, b.order)
		var asked []uint32
		for _, k := range b.order[:sent] {
			if b.ask[k] {
				asked = append(asked, k)
			}
		}
		if len(asked) > 0 {
			c.requestDelta(name, peer, asked)
		}
		if rest := b.order[sent:]; len(rest) > 0 {
			c.aeDefer(peer, name, rest, func(k uint32) bool { return b.ask[k] })
		}
	}
}

func (c *Core) requestDelta(name string, peer NodeID, buckets []uint32) {
	var w wire.Writer
	w.String(name)
	w.U32(uint32(len(buckets)))
	for _, b := range buckets {
		w.U32(b)
	}
	c.route(c.sysFrame(wire.MsgDeltaRequest, peer, w.B))
}

func (c *Core) aeReady(name string, peer NodeID) bool {
	cs := c.caps[name]
	if cs.state != Synced || cs.spec.Digest == nil || cs.spec.Bucket == nil {
		return false
	}
	a, ok := c.lsdb[peer]
	return ok && c.up[peer] && a.Meta.syncedFor(name)
}

func (c *Core) sendDigest(name string, peer NodeID) {
	d := c.caps[name].spec.Digest()
	var w wire.Writer
	w.String(name)
	w.U32(uint32(len(d)))
	for _, h := range d {
		w.U64(h)
	}
	c.route(c.sysFrame(wire.MsgDigest, peer, w.B))
}

// scheduleHeal runs anti-entropy with a node that became reachable again.
func (c *Core) scheduleHeal(peer NodeID) {
	for _, name := range c.capNames {
		if c.aeReady(name, peer) {
			c.sendDigest(name, peer)
		}
	}
}

// AntiEntropy starts a digest exchange with peer for every capability
// (operator-triggered, or on heal).
func (c *Core) AntiEntropy(peer NodeID) { c.scheduleHeal(peer) }

func (c *Core) tickAntiEntropy() {
	c.aeRechecks()
	if len(c.aeAgain) > 0 {
		peers := make([]NodeID, 0, len(c.aeAgain))
		for p := range c.aeAgain {
			peers = append(peers, p)
		}
		slices.Sort(peers) // deterministic
		for _, p := range peers {
			r := c.aeAgain[p]
			if c.now.Before(r.at) {
				continue
			}
			delete(c.aeAgain, p)
			if c.up[p] {
				c.aeFollow(p, r)
			}
		}
	}
	if c.now.Sub(c.lastAE) < c.cfg.AntiEntropyInterval {
		return
	}
	c.lastAE = c.now
	up := c.UpNodes()
	if len(up) == 0 {
		return
	}
	peer := up[c.rnd.Intn(len(up))]
	c.scheduleHeal(peer)
}

func (c *Core) onAntiEntropy(f *wire.Frame, r *wire.Reader) {
	name := r.String()
	if r.Err != nil {
		return
	}
	cs, ok := c.caps[name]
	if !ok || cs.state != Synced || cs.spec.Digest == nil {
		return
	}
	switch f.Type {
	case wire.MsgDigest:
		n := r.Count(8)
		theirs := make([]uint64, 0, n)
		for i := 0; i < n && r.Err == nil; i++ {
			theirs = append(theirs, r.U64())
		}
		if r.Err != nil {
			return
		}
		ours := cs.spec.Digest()
		if len(ours) != len(theirs) {
			return // different bucket layouts: nothing comparable
		}
		var diff []uint32
		for i := range ours {
			if ours[i] != theirs[i] {
				diff = append(diff, uint32(i))
			}
		}
		if diff = c.aeConfirm(f.Src, name, diff); len(diff) == 0 {
			return
		}
		// From a random bucket, so truncated rounds do not favour the
		// first ones.
		k := c.rnd.Intn(len(diff))
		diff = append(diff[k:], diff[:k]...)
		if sent := c.sendBuckets(name, cs, f.Src, diff); sent < len(diff) {
			c.aeDefer(f.Src, name, diff[sent:], always)
			diff = diff[:sent]
		}
		c.requestDelta(name, f.Src, diff)
	case wire.MsgDeltaRequest:
		n := r.Count(4)
		buckets := make([]uint32, 0, n)
		for i := 0; i < n && r.Err == nil; i++ {
			buckets = append(buckets, r.U32())
		}
		if r.Err == nil {
			if sent := c.sendBuckets(name, cs, f.Src, buckets); sent < len(buckets) {
				c.aeDefer(f.Src, name, buckets[sent:], never)
			}
		}
	case wire.MsgDelta:
		n := r.Count(4)
		recs := make([][]byte, 0, n)
		for i := 0; i < n && r.Err == nil; i++ {
			recs = append(recs, r.Bytes())
		}
		if r.Err == nil && len(recs) > 0 && cs.spec.Apply != nil {
			cs.repairs += uint64(len(recs))
			cs.spec.Apply(f.Src, recs)
		}
	}
}

// sendBuckets streams the records of the given buckets in bounded frames,
// and stops starting buckets once AntiEntropyBytes are sent. It returns
// how many buckets it sent (at least one when there is one).
func (c *Core) sendBuckets(name string, cs *capState, to NodeID, buckets []uint32) int {
	ndig := len(cs.spec.Digest())
	var recs [][]byte
	size := 0
	flush := func() {
		if len(recs) == 0 {
			return
		}
		var w wire.Writer
		w.String(name)
		w.U32(uint32(len(recs)))
		for _, rec := range recs {
			w.Bytes(rec)
		}
		c.route(c.sysFrame(wire.MsgDelta, to, w.B))
		recs, size = recs[:0], 0
	}
	total := 0
	for i, b := range buckets {
		if i > 0 && total >= c.cfg.AntiEntropyBytes {
			flush()
			return i
		}
		if int(b) >= ndig {
			continue
		}
		rd := cs.spec.Bucket(int(b))
		for {
			more, done := rd.Next(nil, c.cfg.SyncChunkBytes)
			for _, rec := range more {
				recs = append(recs, rec)
				size += len(rec) + 4
				total += len(rec) + 4
				if size >= c.cfg.SyncChunkBytes {
					flush()
				}
			}
			if done {
				break
			}
		}
	}
	flush()
	return len(buckets)
}
