package location

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// arena is one shard's allocator for AoR blobs, outside the Go heap.
//
// A million bindings as Go objects cost about twice their live size in
// RSS: the collector lets the heap grow to twice what it marked live
// (GOGC=100) and the scavenger returns freed pages slowly. Blobs here are
// invisible to the collector, as Kamailio's usrloc lives in its own shared
// memory allocator: the Go heap keeps only pointer-free indexes (index,
// slots, expiryHeap).
//
// Memory comes in chunks of chunkSize from anonymous mmap (a plain Go
// slice off Linux); the kernel faults pages in as blocks are carved, so a
// mostly empty chunk costs address space, not RSS. Blocks are carved in
// size classes (16-byte steps up to 256 bytes, then about 12.5 % apart) and
// freed blocks go on their class's free list, threaded through the blocks
// themselves. There is no coalescing and nothing is returned to the OS:
// after a peak the arena keeps its size and reuses it, as Kamailio's
// f_malloc does. Blobs larger than maxBlock (a binding with kilobytes of
// Path) live on the Go heap instead.
//
// Every method runs under the owning shard's lock.
type arena struct {
	chunks  [][]byte
	next    int      // bump offset in the last chunk
	free    [256]ref // free list head per class (0: empty)
	large   [][]byte // blobs over maxBlock, on the Go heap (nil: free)
	largeFr []uint32 // free indexes of large

	carved int64 // bytes carved from chunks: in use plus free lists
	inUse  int64 // bytes in allocated blocks (chunks)
	lgUse  int64 // bytes in large blobs
}

// ref names a block: chunk number + 1 in bits 16..30 and the offset in
// 16-byte units in bits 0..15, or refLarge | index into arena.large. 0 is
// no block.
type ref uint32

const (
	chunkSize  = 1 << 20
	blockAlign = 16
	maxBlock   = 16 << 10
	maxChunks  = 1<<15 - 1
	refLarge   = ref(1) << 31
	classLarge = 0xff // class byte of a large blob
)

var errArenaFull = errors.New("location: arena: address space of the shard exhausted")

// classSize is the block size of each class; classOf maps a size in
// 16-byte units (rounded up) to the smallest class that holds it.
var (
	classSize []int
	classOf   [maxBlock/blockAlign + 1]uint8
)

func init() {
	for s := blockAlign; s < maxBlock; {
		classSize = append(classSize, s)
		step := blockAlign
		if s >= 256 {
			step = s / 8 / blockAlign * blockAlign
		}
		s += step
	}
	classSize = append(classSize, maxBlock)
	c := 0
	for u := range classOf {
		for classSize[c] < u*blockAlign {
			c++
		}
		classOf[u] = uint8(c)
	}
}

// alloc returns a block of at least n bytes whose first byte holds its
// class. The rest of the block is not cleared.
func (a *arena) alloc(n int) (ref, []byte, error) {
	if n > maxBlock {
		b := make([]byte, n)
		b[0] = classLarge
		a.lgUse += int64(n)
		if k := len(a.largeFr); k > 0 {
			i := a.largeFr[k-1]
			a.largeFr = a.largeFr[:k-1]
			a.large[i] = b
			return refLarge | ref(i), b, nil
		}
		a.large = append(a.large, b)
		return refLarge | ref(len(a.large)-1), b, nil
	}
	c := classOf[(n+blockAlign-1)/blockAlign]
	size := classSize[c]
	if r := a.free[c]; r != 0 {
		b := a.block(r, size)
		a.free[c] = ref(binary.LittleEndian.Uint32(b[4:]))
		a.inUse += int64(size)
		return r, b, nil
	}
	if len(a.chunks) == 0 || a.next+size > chunkSize {
		if len(a.chunks) >= maxChunks {
			return 0, nil, errArenaFull
		}
		ch, err := mapChunk(chunkSize)
		if err != nil {
			return 0, nil, fmt.Errorf("location: arena: %w", err)
		}
		a.chunks = append(a.chunks, ch) // the old chunk's tail stays unused (and mostly untouched)
		a.next = 0
	}
	r := ref(len(a.chunks))<<16 | ref(a.next/blockAlign)
	a.next += size
	a.carved += int64(size)
	a.inUse += int64(size)
	b := a.block(r, size)
	b[0] = c
	return r, b, nil
}

func (a *arena) block(r ref, size int) []byte {
	ch := a.chunks[r>>16-1]
	off := int(r&0xffff) * blockAlign
	return ch[off : off+size : off+size]
}

// bytes is the whole block of r (its blob may be shorter).
func (a *arena) bytes(r ref) []byte {
	if r&refLarge != 0 {
		return a.large[r&^refLarge]
	}
	ch := a.chunks[r>>16-1]
	off := int(r&0xffff) * blockAlign
	size := classSize[ch[off]]
	return ch[off : off+size : off+size]
}

// release puts r's block on its free list. Its contents become garbage
// (the next-free link overwrites bytes 4..7): nothing may alias it.
func (a *arena) release(r ref) {
	if r&refLarge != 0 {
		i := uint32(r &^ refLarge)
		a.lgUse -= int64(len(a.large[i]))
		a.large[i] = nil
		a.largeFr = append(a.largeFr, i)
		return
	}
	b := a.bytes(r)
	c := b[0]
	binary.LittleEndian.PutUint32(b[4:], uint32(a.free[c]))
	a.free[c] = r
	a.inUse -= int64(len(b))
}

// unmap returns the chunks to the OS. Only for an arena nothing uses any
// more (the Memory's cleanup).
func (a *arena) unmap() {
	for _, ch := range a.chunks {
		unmapChunk(ch)
	}
	a.chunks = nil
}
