package geo

import (
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
		o.mu.Lock()
		o.cur = nil
		o.batch++
		o.outstanding[o.batch] = g
		g.pending, g.sent = 1, true
		o.live = append(o.live, g)
		o.mu.Unlock()
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
