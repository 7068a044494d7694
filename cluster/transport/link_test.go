package transport

import (
	"errors"
	"sync/atomic"
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

// TestFramesOfEverySizeAndRelease: small frames go through the write
// buffer, large ones (a plain TCP link writes them with writev) around it;
// either way they arrive whole and in order, and the writer gives each
// frame's body back through Release exactly once.
func TestFramesOfEverySizeAndRelease(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name string
		opts []option
	}{
		{"tcp", nil},
		{"tls", []option{withTLS(ca.mutualTLS(ca.issue(t, 20, "node-1")))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dialOpts []option
			if tc.name == "tls" {
				dialOpts = []option{withTLS(ca.mutualTLS(ca.issue(t, 21, "node-2")))}
			}
			a := startNode(t, 1, tc.opts...)
			b := startNode(t, 2, append(dialOpts, dialOnly)...)
			l, err := b.dial(t, a)
			if err != nil {
				t.Fatal(err)
			}
			sizes := []int{10, directWrite - 1, directWrite, 3 * writeBuffer, 0, writeBuffer - 30, 100, wire.MaxFrameSize - 200}
			released := make([]atomic.Int32, len(sizes))
			for i, n := range sizes {
				body := make([]byte, n)
				for j := range body {
					body[j] = byte(i + j)
				}
				f := &wire.Frame{Type: 1, Cap: "bulk", Src: uint32(i), Body: body,
					Release: func([]byte) { released[i].Add(1) }}
				if err := l.Send(f); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range sizes {
				f := recv(t, a.rec.frames, "frame")
				if int(f.Src) != i || len(f.Body) != n {
					t.Fatalf("frame %d: got src %d with %d bytes, want %d", i, f.Src, len(f.Body), n)
				}
				for j, c := range f.Body {
					if c != byte(i+j) {
						t.Fatalf("frame %d: byte %d is %d", i, j, c)
					}
				}
			}
			// The writer releases a frame just after the socket took it,
			// which may be after the peer read it.
			eventually(t, "every frame is released", func() bool {
				return released[len(sizes)-1].Load() > 0
			})
			for i := range sizes {
				if n := released[i].Load(); n != 1 {
					t.Fatalf("frame %d released %d times", i, n)
				}
			}
		})
	}
}
