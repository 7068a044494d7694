package geo

import (
	"sync"
	"unsafe"

	"github.com/anyedge/anyedge/edge/location"
)

// recAlloc hands out the memory of the records one merge keeps, in small
// blocks instead of one allocation per record, string and AoR: a new
// node's sync decodes two million records, and allocating them one by one
// was most of its apply time. A block lives as long as anything taken
// from it; blocks are small (a few KiB) so that an old record kept alone
// pins little.
type recAlloc struct {
	strs   []byte // AoRs, keys
	claims []claim
	states []aorState
	binds  []brec
	metas  []mrec

	// Region names: own is returned as is, others come from regions
	// (copied into the string block when nil).
	own     string
	regions *interner

	// left is how many records the caller has yet to decode (itself
	// included): blocks are sized for them, so that a live frame of a
	// few records neither allocates nor pins full blocks.
	left int
}

// blockLen is the length of a new block of up to max elements, per for
// each record left.
func (a *recAlloc) blockLen(max, per int) int {
	return min(max, per*a.left)
}

// Records per slab. A slab of records holds pointers, so the allocator
// adds an 8-byte header and rounds up to its size class: 32 brecs of 112
// bytes took 4096 bytes, 128 per record. These counts fill a class (4096,
// 2688 and 4096 bytes, TestSlabsFillSizeClasses): a new node's 1M-binding
// sync writes about 45 MB less of fresh memory.
const (
	allocStrBlock   = 4 << 10
	allocBindBlock  = 39 // 104-byte brecs
	allocStateBlock = 37 // 72-byte aorStates
	allocMetaBlock  = 46 // 88-byte mrecs
)

// str copies s into the string block.
func (a *recAlloc) str(s string) string {
	b := a.bytes(len(s))
	copy(b, s)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// bytes returns n fresh bytes of the string block. They become a string
// once written and are never written again.
func (a *recAlloc) bytes(n int) []byte {
	if n == 0 {
		return nil
	}
	if n > cap(a.strs)-len(a.strs) {
		size := a.blockLen(allocStrBlock, 128)
		if n > size/2 {
			return make([]byte, n)
		}
		a.strs = make([]byte, 0, size)
	}
	at := len(a.strs)
	a.strs = a.strs[:at+n]
	return a.strs[at : at+n : at+n]
}

// key is location.Binding.Key of a binding with these fields, built in
// the string block.
func (a *recAlloc) key(instance string, regID int, contact string) string {
	var tmp [128]byte
	k := location.AppendKey(tmp[:0], instance, regID, contact)
	b := a.bytes(len(k))
	copy(b, k)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// claimSlice returns n claims of the claim block.
func (a *recAlloc) claimSlice(n int) []claim {
	if n > cap(a.claims)-len(a.claims) {
		size := a.blockLen(256, 2)
		if n > size/2 {
			return make([]claim, n)
		}
		a.claims = make([]claim, 0, size)
	}
	at := len(a.claims)
	a.claims = a.claims[:at+n]
	return a.claims[at : at+n : at+n]
}

// state returns a new AoR state for aor (copied).
func (a *recAlloc) state(aor string) *aorState {
	if len(a.states) == 0 {
		a.states = make([]aorState, max(a.blockLen(allocStateBlock, 1), 1))
	}
	st := &a.states[0]
	a.states = a.states[1:]
	st.aor = a.str(aor)
	return st
}

// bindSlot and metaSlot give an AoR room for its first record; a second
// one moves it to an array of its own (append).
func (a *recAlloc) bindSlot() []brec {
	if len(a.binds) == 0 {
		a.binds = make([]brec, max(a.blockLen(allocBindBlock, 1), 1))
	}
	s := a.binds[:0:1]
	a.binds = a.binds[1:]
	return s
}

func (a *recAlloc) metaSlot() []mrec {
	if len(a.metas) == 0 {
		a.metas = make([]mrec, max(a.blockLen(allocMetaBlock, 1), 1))
	}
	s := a.metas[:0:1]
	a.metas = a.metas[1:]
	return s
}

func (a *recAlloc) region(r string) string {
	switch {
	case r == a.own:
		return a.own
	case a.regions != nil:
		return a.regions.get(r, a)
	}
	return a.str(r)
}

// interner keeps one copy of each region name that metadata carries, so
// that a metadata record pins neither its frame nor a string of its own.
// Bounded: names past the bound are copied each time.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const maxInterned = 1024

func (t *interner) get(s string, a *recAlloc) string {
	if s == "" {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[s]; ok {
		return v
	}
	v := cloneString(s)
	if t.m == nil {
		t.m = map[string]string{}
	}
	if len(t.m) < maxInterned {
		t.m[v] = v
	} else {
		v = a.str(s)
	}
	return v
}
