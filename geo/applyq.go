package geo

import (
	"sync"
	"sync/atomic"
)

// applyQueue applies one capability's snapshot chunks on a goroutine of
// its own, so that a new node's two snapshots (metadata and bindings) are
// applied in parallel with each other and with the cluster's loop, which
// only copies each chunk and goes back to reading. Before, both were
// applied one chunk after the other on that loop: the receiver of a
// 1M-binding sync used one core for the whole sync and was its bottleneck.
//
// Order is kept: one goroutine at a time applies, in arrival order, and
// whatever the capability does inline (a live update, an anti-entropy
// delta once synced) first waits for the queue to empty. The cluster calls
// wait (Capability.Settle) before it declares the capability synced, so
// nothing counts as synced, and no anycast is announced, before every
// record is applied.
type applyQueue struct {
	apply   func(recs [][]byte)
	jobs    chan *chunkCopy
	free    chan *chunkCopy // applied copies, for reuse
	pending atomic.Int32    // chunks queued or being applied
	queued  atomic.Int64    // chunks ever queued (tests)
	wg      sync.WaitGroup
}

// applyDepth bounds the chunks queued per capability (about 64 KiB each):
// past it, push blocks the cluster's loop, which then stops acknowledging
// chunks, and the donor's window stops the stream.
const applyDepth = 8

func newApplyQueue(apply func(recs [][]byte)) *applyQueue {
	return &applyQueue{
		apply: apply,
		jobs:  make(chan *chunkCopy, applyDepth),
		free:  make(chan *chunkCopy, applyDepth+1),
	}
}

// chunkCopy holds the records of one chunk: Apply's records are the
// transport's read buffer, reused once Apply returns.
type chunkCopy struct {
	buf  []byte
	recs [][]byte
}

func (c *chunkCopy) fill(recs [][]byte) {
	n := 0
	for _, r := range recs {
		n += len(r)
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, 0, max(n, 64<<10))
	}
	buf := c.buf[:0]
	c.recs = c.recs[:0]
	for _, r := range recs {
		at := len(buf)
		buf = append(buf, r...)
		c.recs = append(c.recs, buf[at:len(buf):len(buf)])
	}
	c.buf = buf
}

// push queues a copy of recs. It blocks while applyDepth chunks wait.
// Called from one goroutine (the cluster's loop).
func (q *applyQueue) push(recs [][]byte) {
	var c *chunkCopy
	select {
	case c = <-q.free:
	default:
		c = &chunkCopy{}
	}
	c.fill(recs)
	q.queued.Add(1)
	q.wg.Add(1)
	if q.pending.Add(1) == 1 {
		go q.run() // the previous worker, if any, has applied everything
	}
	q.jobs <- c
}

func (q *applyQueue) run() {
	for {
		c := <-q.jobs
		q.apply(c.recs)
		select {
		case q.free <- c:
		default:
		}
		q.wg.Done()
		if q.pending.Add(-1) == 0 {
			return
		}
	}
}

// wait returns once every queued chunk is applied.
func (q *applyQueue) wait() {
	if q.pending.Load() > 0 {
		q.wg.Wait()
	}
}
