package location

// expiryHeap is a per-shard min-heap of AoRs keyed by when the AoR's
// earliest binding expires, so the reaper touches only what is due instead
// of scanning every binding on each tick.
//
// It holds at most one live entry per AoR: the sched field of the AoR's
// blob records the time of that entry, and the entry names the AoR by its
// slot, which stays the same while the blob is rewritten. Entries are never removed out of order (that would need
// an index per AoR); instead an entry whose time no longer equals its AoR's
// sched, or whose AoR is gone, is stale and skipped when popped (lazy
// deletion). A refresh that pushes the earliest expiry later keeps the
// existing entry: it fires early, finds nothing due and reschedules, which
// costs one O(log n) visit per refresh cycle instead of one push per
// refresh. The shard compacts the heap when stale entries dominate.
type expiryHeap []expiryEntry

type expiryEntry struct {
	at   int64  // unix nanoseconds
	slot uint32 // in the shard's slots
}

func (h *expiryHeap) push(e expiryEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

func (h *expiryHeap) pop() expiryEntry {
	old := *h
	n := len(old) - 1
	top := old[0]
	old[0] = old[n]
	*h = old[:n]
	if n > 0 {
		h.down(0)
	}
	return top
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h expiryHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			c = r
		}
		if h[i].at <= h[c].at {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// init restores the heap property over arbitrary contents in O(n).
func (h expiryHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}
