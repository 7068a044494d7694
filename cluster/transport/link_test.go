package transport

import (
	"errors"
	"testing"

	"github.com/anyedge/anyedge/cluster/wire"
)

// TestPriorityOvertakesData: with the receiver stalled and the data queue
// full, a priority frame is written ahead of the data still queued.
func TestPriorityOvertakesData(t *testing.T) {
	const queue = 64
	gate := make(chan struct{})
	a := startNode(t, 1, func(_ *Config, r *recorder) {
		first := true
		r.onFrame = func(*Link, *wire.Frame) { // a slow reader: stalls on the first frame
			if first {
				first = false
				<-gate
			}
		}
	})
	b := startNode(t, 2, dialOnly, func(c *Config, _ *recorder) { c.SendQueue = queue })
	l, err := b.dial(t, a)
	if err != nil {
		t.Fatal(err)
	}
	defer close(gate) // if we fail before releasing it, a's Close still finishes

	// Send until the queue stays full: the socket buffers are full, the
	// writer is blocked in Write, and nothing leaves the queue any more.
	// A long run of refusals without a single success shows that.
	body := make([]byte, 16<<10)
	sent, streak := 0, 0
	for streak < 100_000 {
		err := l.Send(&wire.Frame{Type: 1, Cap: "bulk", Src: uint32(sent), Body: body})
		switch {
		case err == nil:
			sent++
			streak = 0
		case errors.Is(err, ErrQueueFull):
			streak++
		default:
			t.Fatal(err)
		}
		if sent > 100_000 {
			t.Fatal("the data queue never filled")
		}
	}
	if err := l.Send(&wire.Frame{Type: wire.MsgPing, Flags: wire.FlagPriority}); err != nil {
		t.Fatal(err)
	}
	// Everything still queued now can only leave after the ping (give or
	// take the one frame the writer may pick in the same instant).
	queued := l.Stats().QueueDepth
	if queued < 2 {
		t.Fatalf("only %d data frames queued behind the ping", queued)
	}
	if s := l.Stats(); s.QueueFull == 0 || s.PriorityDepth+s.QueueDepth == 0 {
		t.Fatalf("stats %+v", s)
	}

	gate <- struct{}{}
	pingAt := -1
	for i := range sent + 1 {
		f := recv(t, a.rec.frames, "frames after the reader resumed")
		if f.Type == wire.MsgPing {
			pingAt = i
		} else if f.Src != uint32(i-boolInt(pingAt >= 0)) {
			t.Fatalf("data frame %d arrived out of order at %d", f.Src, i)
		}
	}
	if limit := sent - queued + 1; pingAt < 0 || pingAt > limit {
		t.Fatalf("ping arrived as frame %d of %d; with %d data frames queued behind it, want at most %d",
			pingAt, sent+1, queued, limit)
	}
	t.Logf("ping overtook %d of %d data frames", sent-pingAt, sent)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSendValidates: an unencodable frame is refused by Send itself, not
// silently dropped by the writer.
func TestSendValidates(t *testing.T) {
	a := startNode(t, 1)
	b := startNode(t, 2, dialOnly)
	l, err := b.dial(t, a)
	if err != nil {
		t.Fatal(err)
	}
	long := make([]byte, wire.MaxCapName+1)
	if err := l.Send(&wire.Frame{Cap: string(long)}); !errors.Is(err, wire.ErrBadFrame) {
		t.Fatalf("Send with a long cap name: %v", err)
	}
	if err := l.Send(&wire.Frame{Body: make([]byte, wire.MaxFrameSize)}); !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("Send of an oversize frame: %v", err)
	}
}
