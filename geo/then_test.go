package geo

import (
	"bytes"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// SaveDeferred's callbacks run once their generation resolves, by ack,
// ack timeout or stop, or at once if it already has; and outside the
// outbox lock: a callback that saves again (it sends a response, which
// may do anything) must not deadlock.
func TestOutboxThen(t *testing.T) {
	o := newOutbox()
	var got []string
	note := func(s string) func() {
		return func() {
			got = append(got, s)
			o.add(1, outRec{kind: recMeta, aor: s}) // takes o.mu
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Acked: a sent batch's generation.
		g := o.add(1, outRec{kind: recBind, aor: "a"})
		o.then(g, note("acked"))
		sendBatch(o, g)
		if len(got) != 0 {
			t.Errorf("ran before the ack: %v", got)
		}
		o.acked(o.batch)
		o.then(g, note("late")) // already resolved: at once

		// Timed out.
		g = o.add(1, outRec{kind: recBind, aor: "b"})
		o.then(g, note("expired"))
		o.mu.Lock()
		o.cur = nil
		g.sent, g.pending, g.deadline = true, 1, 10
		o.live = append(o.live, g)
		o.mu.Unlock()
		o.expire(5)
		if len(got) != 2 {
			t.Errorf("ran before its deadline: %v", got)
		}
		o.expire(10)

		// Stopped before it was sent.
		g = o.add(1, outRec{kind: recBind, aor: "c"})
		o.then(g, note("stopped"))
		o.stop()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: a callback ran under the outbox lock")
	}
	want := []string{"acked", "late", "expired", "stopped"}
	if len(got) != len(want) {
		t.Fatalf("callbacks %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("callbacks %v, want %v", got, want)
		}
	}
}

// With the confirm goroutine open (Run), fired callbacks run there, not on
// the goroutine that resolved them (the cluster loop, for an ack); closing
// it runs what stop fired before it returns.
func TestOutboxConfirmGoroutine(t *testing.T) {
	o := newOutbox()
	closeConfirm := o.openConfirm()
	ran := make(chan int64, 2)
	here := goid()
	g := o.add(1, outRec{kind: recBind, aor: "a"})
	o.then(g, func() { ran <- goid() })
	sendBatch(o, g)
	o.acked(o.batch)
	select {
	case id := <-ran:
		if id == here {
			t.Fatal("the callback ran on the goroutine that took the ack")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the callback never ran")
	}
	g = o.add(1, outRec{kind: recBind, aor: "b"})
	o.then(g, func() { ran <- 0 })
	o.stop()
	closeConfirm()
	select {
	case <-ran:
	default:
		t.Fatal("closeConfirm returned before the callback stop fired had run")
	}
	o.then(g, func() { ran <- 1 }) // closed: runs inline
	if len(ran) != 1 {
		t.Fatal("a callback after closeConfirm did not run at once")
	}
}

// sendBatch does to g what flush does: one batch sent, awaiting its ack.
func sendBatch(o *outbox, g *gen) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cur = nil
	o.batch++
	o.outstanding[o.batch] = g
	g.pending, g.sent = 1, true
	o.live = append(o.live, g)
}

// goid is the current goroutine's id (for telling goroutines apart in a
// test only).
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseInt(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}
