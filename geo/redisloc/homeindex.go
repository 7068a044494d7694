package redisloc

import (
	"hash/maphash"
	"sync"
)

// homeShards is how many locks the pending home index is split over: every
// Save notes its AoR, so one lock would serialise all SIP handlers on it.
const homeShards = 32

// homeIndex buffers this node's index updates between flushes, so that a
// REGISTER stays one round trip; Run writes them. Shards by AoR hash, so
// concurrent Saves rarely share a lock.
type homeIndex struct {
	seed   maphash.Seed
	shards [homeShards]homeShard
}

type homeShard struct {
	mu      sync.Mutex
	pending map[string]homeEntry
}

// homeEntry is an AoR's place in the two indexes: the earliest expiry
// (unix ms) of its bindings homed here, and of those of them behind a NAT;
// 0: none (remove it from that index).
type homeEntry struct{ home, nat int64 }

func (h *homeIndex) init() {
	h.seed = maphash.MakeSeed()
	for i := range h.shards {
		h.shards[i].pending = map[string]homeEntry{}
	}
}

func (h *homeIndex) shard(aor string) *homeShard {
	return &h.shards[maphash.String(h.seed, aor)%homeShards]
}

// note sets aor's pending entry (the latest Save wins).
func (h *homeIndex) note(aor string, at homeEntry) {
	sh := h.shard(aor)
	sh.mu.Lock()
	sh.pending[aor] = at
	sh.mu.Unlock()
}

// take empties the buffer and returns what it held.
func (h *homeIndex) take() map[string]homeEntry {
	var out map[string]homeEntry
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		if len(sh.pending) > 0 {
			if out == nil {
				out = make(map[string]homeEntry)
			}
			for aor, at := range sh.pending {
				out[aor] = at
			}
			clear(sh.pending)
		}
		sh.mu.Unlock()
	}
	return out
}

// putBack returns a batch that could not be written, except for AoRs a
// newer Save noted meanwhile.
func (h *homeIndex) putBack(batch map[string]homeEntry) {
	for aor, at := range batch {
		sh := h.shard(aor)
		sh.mu.Lock()
		if _, newer := sh.pending[aor]; !newer {
			sh.pending[aor] = at
		}
		sh.mu.Unlock()
	}
}

// len is the number of pending entries (tests).
func (h *homeIndex) len() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		n += len(sh.pending)
		sh.mu.Unlock()
	}
	return n
}
