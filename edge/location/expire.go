package location

import (
	"context"
	"time"
)

// Run reaps expired bindings every resolution until ctx is done, then
// returns nil. Lookup already hides expired bindings; reaping frees their
// memory and fires OnExpire/OnChange close to the expiry time (within one
// resolution), which keepalives and replication rely on.
func (m *Memory) Run(ctx context.Context) error {
	t := time.NewTicker(m.resolution)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n := m.Expire(m.clock()); n > 0 {
				m.log.Debug("location: reaped expired bindings", "count", n)
			}
		}
	}
}

// Expire removes every binding that expired at or before now and returns
// how many it removed. Each shard pops only the heap entries that are due,
// so the cost is proportional to the AoRs due (plus one peek per shard),
// not to the number of stored bindings.
func (m *Memory) Expire(now time.Time) int {
	at := now.UnixNano()
	total := 0
	for i := range m.shards {
		total += m.expireShard(&m.shards[i], at)
	}
	return total
}

func (m *Memory) expireShard(sh *shard, now int64) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	removed := 0
	for len(sh.heap) > 0 && sh.heap[0].at <= now {
		top := sh.heap.pop()
		m.stats.visited.Add(1)
		if int(top.slot) >= len(sh.slots) || sh.slots[top.slot] == 0 {
			continue // stale: the AoR is gone
		}
		b := sh.blob(top.slot)
		if blobSched(b) != top.at {
			continue // stale: the AoR has a newer live entry
		}
		due := 0
		off := firstRec(b)
		for range blobCount(b) {
			if recExpires(b, off) <= now {
				due++
			}
			off += recSize(b, off)
		}
		if due == 0 {
			// Fired early after a refresh: its entry was just popped,
			// reschedule without rewriting the blob.
			clear(b[hSched : hSched+8])
			m.reschedule(sh, top.slot, b)
			continue
		}
		snap := string(b)
		aor := blobAoR(snap)
		isDue := func(off int) bool { return recExpires(snap, off) <= now }
		payload := sh.scratch[:0]
		off = firstRec(snap)
		for range blobCount(snap) {
			size := recSize(snap, off)
			if !isDue(off) {
				payload = append(payload, snap[off:off+size]...)
			}
			off += size
		}
		_, h := m.locate(aor)
		err := m.put(sh, top.slot, h, aor, 0, blobCount(snap)-due, payload)
		sh.keepScratch(payload)
		if err != nil {
			// Only a failed mmap gets here: keep the AoR as it is and
			// retry on the next tick (Lookup hides what expired).
			m.log.Error("location: reaping", "aor", aor, "err", err)
			clear(b[hSched : hSched+8])
			m.reschedule(sh, top.slot, b)
			continue
		}
		removed += due
		m.n.Add(-int64(due))
		m.stats.expired.Add(uint64(due))
		if m.onExpire != nil {
			for _, bd := range decodeAll(snap, aor, &m.intern, isDue) {
				m.onExpire(bd)
			}
		}
		m.changed(aor, snap, func(off int) bool { return !isDue(off) })
	}
	return removed
}
