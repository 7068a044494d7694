package location

// index maps AoR hashes to slots: open addressing with linear probing and
// backward-shift deletion (no tombstones), in a pointer-free slice the
// collector does not scan. Equal hashes are told apart by comparing the
// AoR in the slot's blob (shard.find). 8 bytes an entry, at most 3/4 full.
type index struct {
	ents []ient // power-of-two length, or nil
	n    int
}

type ient struct {
	h    uint32 // high half of the AoR's maphash (the low half picks the shard)
	slot uint32 // 0: empty
}

const minIndex = 16

func (x *index) insert(h, slot uint32) {
	if (x.n+1)*4 > len(x.ents)*3 {
		x.resize(max(minIndex, 2*len(x.ents)))
	}
	mask := uint32(len(x.ents) - 1)
	i := h & mask
	for x.ents[i].slot != 0 {
		i = (i + 1) & mask
	}
	x.ents[i] = ient{h, slot}
	x.n++
}

// remove deletes the entry of slot, whose hash is h.
func (x *index) remove(h, slot uint32) {
	mask := uint32(len(x.ents) - 1)
	i := h & mask
	for x.ents[i].slot != slot {
		if x.ents[i].slot == 0 {
			panic("location: index entry missing") // a bug: every live slot is indexed
		}
		i = (i + 1) & mask
	}
	// Shift back the entries after i that probed past it, so lookups
	// never meet a hole before their entry.
	for j := (i + 1) & mask; x.ents[j].slot != 0; j = (j + 1) & mask {
		home := x.ents[j].h & mask
		if (j-home)&mask >= (j-i)&mask {
			x.ents[i] = x.ents[j]
			i = j
		}
	}
	x.ents[i] = ient{}
	x.n--
	if len(x.ents) > minIndex && x.n*8 < len(x.ents) {
		x.resize(len(x.ents) / 2)
	}
}

func (x *index) resize(n int) {
	old := x.ents
	x.ents = make([]ient, n)
	mask := uint32(n - 1)
	for _, e := range old {
		if e.slot == 0 {
			continue
		}
		i := e.h & mask
		for x.ents[i].slot != 0 {
			i = (i + 1) & mask
		}
		x.ents[i] = e
	}
}
