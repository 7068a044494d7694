package geo

import (
	"sync"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/wire"
)

// Message types, per capability. ONLY APPEND: the values are part of the
// protocol.
const (
	// msgUpdate carries records (geo.bind: bindings and the metadata of
	// their AoRs, to the home's region; geo.meta: metadata, to the other
	// regions).
	msgUpdate cluster.MsgType = 1
	// msgAck (geo.bind) confirms that a partner merged an update batch.
	msgAck cluster.MsgType = 2
)

// frameVersion is the first byte of every update body.
const frameVersion = 1

// AckResult says how far a change had got when Save returned.
type AckResult uint8

const (
	// AckPending: not resolved yet (only seen by simulations).
	AckPending AckResult = iota
	// AckReplicated: at least one other node of the home's region merged
	// the change before Save returned.
	AckReplicated
	// AckDegraded: a partner was reachable but none confirmed within
	// AckTimeout; the change is on the home only for now.
	AckDegraded
	// AckAlone: no other node of the region was reachable; the change is
	// on the home only (a single-node region, or a partner down).
	AckAlone
	// AckStopped: the service stopped before the change went out.
	AckStopped
)

func (a AckResult) String() string {
	switch a {
	case AckReplicated:
		return "replicated"
	case AckDegraded:
		return "degraded"
	case AckAlone:
		return "alone"
	case AckStopped:
		return "stopped"
	}
	return "pending"
}

// gen is one generation of the outbox: the changes flushed together. Every
// Save whose changes are in it waits for it.
type gen struct {
	done     chan struct{}
	result   AckResult // written before done is closed
	pending  int       // bind frames sent and not acknowledged yet
	deadline int64     // unix ns
	sent     bool
	alone    bool     // a frame of it went to no node
	thens    []func() // SaveDeferred callbacks, run once it resolves
}

// Result is the generation's outcome (AckPending until it resolves).
func (g *gen) Result() AckResult {
	select {
	case <-g.done:
		return g.result
	default:
		return AckPending
	}
}

// outRec is one record waiting to go out. Bindings and claims are never
// modified once stored, so the copy can be encoded later without locks.
type outRec struct {
	aor  string
	kind uint8
	b    brec
	m    mrec
}

type ackOut struct {
	to    uint32
	batch uint64
}

// outbox coalesces changes until the sender flushes them: while one flush
// is on the wire the next batch fills, so the batch size follows the load
// and an idle node sends at once.
type outbox struct {
	mu     sync.Mutex
	recs   []outRec
	spare  []outRec // the previous batch's array, reused once sent
	oldest int64
	cur    *gen
	acks   []ackOut
	signal chan struct{}

	batch       uint64
	outstanding map[uint64]*gen // bind batch id -> its generation
	live        []*gen          // sent, unresolved
	onResolve   func(AckResult)
	lastFlush   int64
	// fired are the callbacks of generations resolved under mu, run by
	// unlock once mu is released: a callback sends a SIP response, and
	// holding mu through that would stall every Save.
	fired []func()
	// confirm, while Run runs, takes fired callbacks to a goroutine of
	// their own: an ack is resolved on the cluster's loop, and a SIP send
	// per REGISTER there delays the loop's replication frames (lag p99 at
	// 4,500/s: 3.1 and 3.9 ms on the loop, 2.8 and 2.8 ms off it, two runs
	// each). Written under mu.
	confirm chan []func()
}

// minFlushGap spaces flushes so that a busy node batches even without a
// partner to wait for (at most 10,000 frames a second per destination).
const minFlushGap = 100 * time.Microsecond

// wait says when the sender should flush: -1 nothing to send, 0 now, else
// after that long. Acks leave at once; changes wait for the previous
// batch's ack (group commit), for at most delay after the oldest change.
func (o *outbox) wait(now int64, delay time.Duration) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case len(o.acks) > 0:
		return 0
	case len(o.recs) == 0:
		return -1
	}
	t := o.lastFlush + int64(minFlushGap)
	for _, g := range o.live {
		if g.result == AckPending {
			t = max(t, o.oldest+int64(delay))
			break
		}
	}
	if now >= t {
		return 0
	}
	return time.Duration(t - now)
}

func newOutbox() *outbox {
	return &outbox{signal: make(chan struct{}, 1), outstanding: map[uint64]*gen{}}
}

// add queues records (in order) and returns the generation the caller
// waits for (nil when there is no binding record: metadata is never
// waited for). Call it under the AoR's shard lock so that each AoR's
// changes leave in order.
func (o *outbox) add(now int64, recs ...outRec) *gen {
	if len(recs) == 0 {
		return nil
	}
	o.mu.Lock()
	if len(o.recs) == 0 {
		o.oldest = now
	}
	o.recs = append(o.recs, recs...)
	var g *gen
	for i := range recs {
		if recs[i].kind == recBind {
			if o.cur == nil {
				o.cur = &gen{done: make(chan struct{})}
			}
			g = o.cur
		}
	}
	o.mu.Unlock()
	o.kick()
	return g
}

func (o *outbox) ack(to uint32, batch uint64) {
	o.mu.Lock()
	o.acks = append(o.acks, ackOut{to, batch})
	o.mu.Unlock()
	o.kick()
}

func (o *outbox) kick() {
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

func (o *outbox) resolve(g *gen, r AckResult) {
	if g.result != AckPending {
		return
	}
	g.result = r
	close(g.done)
	o.fired = append(o.fired, g.thens...)
	g.thens = nil
	if o.onResolve != nil {
		o.onResolve(r)
	}
}

// unlock releases mu, and hands the callbacks fired under it to the
// confirm goroutine, or runs them once mu is released when there is none
// or its queue is full.
func (o *outbox) unlock() {
	f := o.fired
	o.fired = nil
	if len(f) > 0 && o.confirm != nil {
		select {
		case o.confirm <- f: // under mu: never after closeConfirm
			f = nil
		default:
		}
	}
	o.mu.Unlock()
	for _, fn := range f {
		fn()
	}
}

// openConfirm starts the confirm goroutine; closeConfirm stops it once it
// has run everything queued, and returns when it has.
func (o *outbox) openConfirm() (closeConfirm func()) {
	ch := make(chan []func(), 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range ch {
			for _, fn := range f {
				fn()
			}
		}
	}()
	o.mu.Lock()
	o.confirm = ch
	o.mu.Unlock()
	return func() {
		o.mu.Lock()
		close(ch)
		o.confirm = nil
		o.mu.Unlock()
		<-done
	}
}

// then runs fn once g resolves (at once if it has).
func (o *outbox) then(g *gen, fn func()) {
	o.mu.Lock()
	if g.result != AckPending {
		o.fired = append(o.fired, fn)
	} else {
		g.thens = append(g.thens, fn)
	}
	o.unlock()
}

// acked takes a partner's confirmation of a batch.
func (o *outbox) acked(batch uint64) (AckResult, bool) {
	o.mu.Lock()
	defer o.unlock()
	g, ok := o.outstanding[batch]
	if !ok {
		return 0, false
	}
	delete(o.outstanding, batch)
	g.pending--
	if g.pending == 0 && g.result == AckPending && g.sent {
		o.resolve(g, AckReplicated)
		if len(o.recs) > 0 {
			o.kick() // the next batch was waiting for this ack
		}
		return AckReplicated, true
	}
	return 0, false
}

// expire resolves the generations whose partners did not answer in time.
func (o *outbox) expire(now int64) (n int) {
	o.mu.Lock()
	defer o.unlock()
	live := o.live[:0]
	for _, g := range o.live {
		switch {
		case g.result != AckPending:
		case g.deadline <= now:
			o.resolve(g, AckDegraded)
			n++
		default:
			live = append(live, g)
		}
	}
	clear(o.live[len(live):])
	o.live = live
	if len(o.live) == 0 {
		clear(o.outstanding)
	} else {
		for id, g := range o.outstanding {
			if g.result != AckPending {
				delete(o.outstanding, id)
			}
		}
	}
	return n
}

// nextDeadline is the earliest ack deadline (0: none).
func (o *outbox) nextDeadline() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var d int64
	for _, g := range o.live {
		if g.result == AckPending && (d == 0 || g.deadline < d) {
			d = g.deadline
		}
	}
	return d
}

// stop resolves everything still waiting.
func (o *outbox) stop() {
	o.mu.Lock()
	defer o.unlock()
	for _, g := range o.live {
		o.resolve(g, AckStopped)
	}
	o.live = nil
	if o.cur != nil {
		o.resolve(o.cur, AckStopped)
		o.cur = nil
	}
	clear(o.outstanding)
}

// frameWriter accumulates records into update frames of bounded size.
type frameWriter struct {
	max   int
	hint  int // expected bytes, to allocate once
	stamp int64
	w     wire.Writer
	n     int
	send  func([]byte) // takes each frame as it is closed
}

// frameHead is the size of an update frame's header.
const frameHead = 1 + 8 + 8 + 4

func (f *frameWriter) begin() {
	// hint is exact for the first frame; a split burst overshoots by
	// one record at most.
	f.w = wire.Writer{B: make([]byte, 0, min(f.max+f.max/4, max(f.hint, 64)))}
	f.w.U8(frameVersion)
	f.w.I64(f.stamp)
	f.w.U64(0) // batch id, patched at send time
	f.w.U32(0) // count, patched at close
	f.n = 0
}

func (f *frameWriter) add(enc func(w *wire.Writer)) {
	if f.w.B == nil {
		f.begin()
	}
	// Records are length-prefixed so that a receiver can skip one it
	// cannot read and so that snapshot and update records are the same
	// bytes.
	at := len(f.w.B)
	f.w.U32(0)
	enc(&f.w)
	n := len(f.w.B) - at - 4
	f.w.B[at], f.w.B[at+1], f.w.B[at+2], f.w.B[at+3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	f.n++
	if len(f.w.B) >= f.max {
		f.hint -= len(f.w.B) - frameHead
		f.close()
	}
}

func (f *frameWriter) close() {
	if f.w.B == nil {
		return
	}
	b := f.w.B
	const countAt = 1 + 8 + 8
	b[countAt], b[countAt+1], b[countAt+2], b[countAt+3] = byte(f.n>>24), byte(f.n>>16), byte(f.n>>8), byte(f.n)
	f.w.B = nil
	f.send(b)
}

func setBatch(b []byte, id uint64) {
	for i := range 8 {
		b[1+8+i] = byte(id >> (56 - 8*i))
	}
}

// frameHeader is the decoded head of an update body.
type frameHeader struct {
	stamp int64
	batch uint64
	recs  [][]byte
}

func decodeFrame(body []byte) (frameHeader, error) {
	r := wire.Reader{B: body}
	var h frameHeader
	if v := r.U8(); v != frameVersion {
		return h, errBadRecord
	}
	h.stamp = r.I64()
	h.batch = r.U64()
	n := r.Count(4)
	h.recs = make([][]byte, 0, n)
	for i := 0; i < n && r.Err == nil; i++ {
		h.recs = append(h.recs, r.Bytes())
	}
	if r.Err != nil {
		return h, errBadRecord
	}
	return h, nil
}

// flush sends what the outbox holds.
func (s *Service) flush() {
	o := s.out
	o.mu.Lock()
	recs, acks, g, oldest := o.recs, o.acks, o.cur, o.oldest
	o.recs, o.acks, o.cur = o.spare[:0], nil, nil
	o.spare = nil
	o.lastFlush = s.now()
	o.mu.Unlock()
	defer func() {
		// Hand the array back for the next batch (the sender is the only
		// flusher: Run's goroutine, or the caller when inline).
		clear(recs)
		o.mu.Lock()
		o.spare = recs[:0]
		o.mu.Unlock()
	}()
	if len(recs) > 0 {
		sendBind := func(f []byte) {
			var id uint64
			if g != nil {
				// Registered before sending: the ack may come back before
				// the send is done.
				o.mu.Lock()
				o.batch++
				id = o.batch
				o.outstanding[id] = g
				g.pending++
				o.mu.Unlock()
				setBatch(f, id)
			}
			s.m.sentBind.Inc()
			s.sendMatching(s.bindCap, msgUpdate, s.regionF, f, func(n int) {
				if n == 0 && g != nil {
					o.nowhere(g, id)
				}
			})
		}
		sendMeta := func(f []byte) {
			s.sendMatching(MetaCap, msgUpdate, s.otherF, f, nil)
			s.m.sentMeta.Inc()
		}
		bsize, msize := 0, 0
		for i := range recs {
			if r := &recs[i]; r.kind == recBind {
				bsize += 4 + bindSize(r.aor, &r.b)
			} else {
				n := 4 + metaSize(r.aor, &r.m)
				bsize += n
				msize += n
			}
		}
		bf := frameWriter{max: s.cfg.MaxFrameBytes, stamp: oldest, hint: frameHead + bsize, send: sendBind}
		mf := frameWriter{max: s.cfg.MaxFrameBytes, stamp: oldest, hint: frameHead + msize, send: sendMeta}
		for i := range recs {
			r := &recs[i]
			switch r.kind {
			case recBind:
				bf.add(func(w *wire.Writer) { encodeBind(w, r.aor, &r.b) })
			case recMeta:
				bf.add(func(w *wire.Writer) { encodeMeta(w, r.aor, &r.m) })
				if !s.cfg.ReplicateContactsCrossRegion {
					mf.add(func(w *wire.Writer) { encodeMeta(w, r.aor, &r.m) })
				}
			}
		}
		bf.close()
		mf.close()
		if g != nil {
			o.mu.Lock()
			g.sent = true
			switch {
			case g.result != AckPending:
			case g.alone:
				o.resolve(g, AckAlone)
			case g.pending == 0:
				o.resolve(g, AckReplicated)
			default:
				g.deadline = s.now() + int64(s.cfg.AckTimeout)
				o.live = append(o.live, g)
			}
			o.unlock()
		}
	}
	for _, a := range acks {
		var w wire.Writer
		w.U64(a.batch)
		s.sendOne(s.bindCap, msgAck, a.to, w.B)
		s.m.sentAck.Inc()
	}
}

// nowhere takes the news that g's frame id went to no node (no other node
// of the region was reachable): g resolves as alone once all its frames
// are out.
func (o *outbox) nowhere(g *gen, id uint64) {
	o.mu.Lock()
	defer o.unlock()
	if _, ok := o.outstanding[id]; ok {
		delete(o.outstanding, id)
		g.pending--
	}
	g.alone = true
	if g.sent && g.result == AckPending {
		o.resolve(g, AckAlone)
	}
}
