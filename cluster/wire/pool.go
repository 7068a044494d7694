package wire

// BufPool is a bounded free list of body buffers, safe for concurrent use.
//
// A sender that builds many large bodies (snapshot chunks) takes them with
// Get and sets Frame.Release to Put; the link writer hands each one back
// once it is on the wire. A sync then cycles through a window's worth of
// buffers instead of allocating a fresh one per chunk: on a donor holding
// gigabytes, fresh chunk garbage grows the heap by up to its live size
// before the collector runs, and every new page costs a fault.
type BufPool struct {
	size int
	free chan []byte
}

// NewBufPool returns a pool that keeps up to keep buffers of at least size
// bytes each.
func NewBufPool(size, keep int) *BufPool {
	return &BufPool{size: size, free: make(chan []byte, max(keep, 0))}
}

// Get returns an empty buffer with room for at least n bytes: a pooled one
// when n fits the pool's size, else a new one.
func (p *BufPool) Get(n int) []byte {
	if n <= p.size {
		select {
		case b := <-p.free:
			return b[:0]
		default:
		}
		n = p.size
	}
	return make([]byte, 0, n)
}

// Put gives b back. Buffers smaller than the pool's size, and any beyond
// what the pool keeps, are left to the garbage collector.
func (p *BufPool) Put(b []byte) {
	if cap(b) < p.size {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}
