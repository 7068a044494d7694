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
		e := sh.aors[top.aor]
		if e == nil || e.sched != top.at {
			continue // stale: the AoR is gone or has a newer live entry
		}
		keep := e.recs[:0]
		var gone []rec
		for _, r := range e.recs {
			if r.expires <= now {
				gone = append(gone, r)
			} else {
				keep = append(keep, r)
			}
		}
		clear(e.recs[len(keep):]) // drop references to reaped records
		e.recs = keep
		e.sched = 0 // its entry was just popped
		m.reschedule(sh, e)
		if len(gone) == 0 {
			continue // fired early after a refresh: rescheduled, nothing due
		}
		removed += len(gone)
		m.n.Add(-int64(len(gone)))
		m.stats.expired.Add(uint64(len(gone)))
		if m.onExpire != nil {
			for i := range gone {
				m.onExpire(gone[i].decode(e.aor, &m.intern))
			}
		}
		m.changed(e.aor, e.recs)
	}
	return removed
}
