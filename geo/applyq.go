package geo

import (
	"sync"
	"sync/atomic"
)

// applyQueue applies one capability's snapshot chunks on goroutines of
// its own, so that a new node's two snapshots (metadata and bindings) are
// applied in parallel with each other and with the cluster's loop, which
// only copies each chunk and goes back to reading. Before, both were
// applied one chunk after the other on that loop: the receiver of a
// 1M-binding sync used one core for the whole sync and was its bottleneck.
//
// Order is kept per AoR: a queue has lanes, each the AoRs of some shards,
// and one goroutine at a time applies a lane's records in arrival order;
// whatever the capability does inline (a live update, an anti-entropy
// delta once synced) first waits for the queue to empty. The cluster calls
// wait (Capability.Settle) before it declares the capability synced, so
// nothing counts as synced, and no anycast is announced, before every
// record is applied.
type applyQueue struct {
	lanes []*applyLane
	// route names the lane of a record: the same for every record of an
	// AoR, so that each AoR's records are applied in arrival order.
	route  func(rec []byte) int
	split  [][][]byte   // push's records per lane, reused
	queued atomic.Int64 // chunks ever queued (tests)
}

// applyLane applies, in order, the records queued to it, on a goroutine
// that runs while it has some.
type applyLane struct {
	apply   func(recs [][]byte)
	jobs    chan *chunkCopy
	free    chan *chunkCopy // applied copies, for reuse
	pending atomic.Int32    // chunks queued or being applied
	wg      sync.WaitGroup
}

// applyDepth bounds the chunks queued per lane (about 64 KiB each): past
// it, push blocks the cluster's loop, which then stops acknowledging
// chunks, and the donor's window stops the stream.
const applyDepth = 8

// applyLanes is how many goroutines apply one capability's snapshot, each
// the AoRs of its shards. With one, the binding snapshot, 2.5 times as
// many chunks as the metadata one, was applied by a single goroutine for
// its last second or so, while a core stood idle once the metadata was
// in; the queue was full for most chunks.
const applyLanes = 2

// newApplyQueue returns a queue of lanes lanes; route is only called
// with more than one.
func newApplyQueue(apply func(recs [][]byte), lanes int, route func(rec []byte) int) *applyQueue {
	q := &applyQueue{route: route, split: make([][][]byte, max(lanes, 1))}
	for range max(lanes, 1) {
		q.lanes = append(q.lanes, &applyLane{
			apply: apply,
			jobs:  make(chan *chunkCopy, applyDepth),
			free:  make(chan *chunkCopy, applyDepth+1),
		})
	}
	return q
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

// push queues a copy of recs, each record to its lane. It blocks while
// applyDepth chunks wait in a lane. Called from one goroutine (the
// cluster's loop).
func (q *applyQueue) push(recs [][]byte) {
	q.queued.Add(1)
	if len(q.lanes) == 1 {
		q.lanes[0].push(recs)
		return
	}
	for i := range q.split {
		q.split[i] = q.split[i][:0]
	}
	for _, r := range recs {
		i := q.route(r) % len(q.lanes)
		q.split[i] = append(q.split[i], r)
	}
	for i, part := range q.split {
		if len(part) > 0 {
			q.lanes[i].push(part)
		}
		clear(part) // pins no chunk
	}
}

func (l *applyLane) push(recs [][]byte) {
	var c *chunkCopy
	select {
	case c = <-l.free:
	default:
		c = &chunkCopy{}
	}
	c.fill(recs)
	l.wg.Add(1)
	if l.pending.Add(1) == 1 {
		go l.run() // the previous worker, if any, has applied everything
	}
	l.jobs <- c
}

func (l *applyLane) run() {
	for {
		c := <-l.jobs
		l.apply(c.recs)
		select {
		case l.free <- c:
		default:
		}
		l.wg.Done()
		if l.pending.Add(-1) == 0 {
			return
		}
	}
}

// wait returns once every queued chunk is applied, in every lane.
func (q *applyQueue) wait() {
	for _, l := range q.lanes {
		if l.pending.Load() > 0 {
			l.wg.Wait()
		}
	}
}
