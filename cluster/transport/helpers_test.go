package transport

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("0123456789abcdef-cluster-key")

// waitFor bounds every wait in these tests. Waits end as soon as the event
// arrives; the bound only turns a hang into a failure.
const waitFor = 10 * time.Second

type down struct {
	l   *Link
	err error
}

// recorder is a Handler that turns every callback into a channel message.
// The channels are deep enough that callbacks never block the transport.
type recorder struct {
	admit   func(Hello, net.Addr) error // nil: accept
	onFrame func(*Link, *wire.Frame)    // runs first; may block (slow reader)
	admits  chan Hello
	ups     chan *Link
	downs   chan down
	frames  chan *wire.Frame
	bads    chan error
	fails   chan error
}

func newRecorder() *recorder {
	const depth = 1 << 14
	return &recorder{
		admits: make(chan Hello, depth),
		ups:    make(chan *Link, depth),
		downs:  make(chan down, depth),
		frames: make(chan *wire.Frame, depth),
		bads:   make(chan error, depth),
		fails:  make(chan error, depth),
	}
}

func (r *recorder) Admit(p Hello, remote net.Addr) error {
	r.admits <- p
	if r.admit != nil {
		return r.admit(p, remote)
	}
	return nil
}
func (r *recorder) LinkUp(l *Link) { r.ups <- l }
func (r *recorder) Frame(l *Link, f *wire.Frame) {
	if r.onFrame != nil {
		r.onFrame(l, f)
	}
	r.frames <- f
}
func (r *recorder) LinkDown(l *Link, err error)      { r.downs <- down{l, err} }
func (r *recorder) BadFrame(_ *Link, err error)      { r.bads <- err }
func (r *recorder) AuthFailed(_ net.Addr, err error) { r.fails <- err }

// node is a started Transport with its recorder.
type node struct {
	tr    *Transport
	rec   *recorder
	hello Hello
}

type option func(*Config, *recorder)

func dialOnly(c *Config, _ *recorder) { c.Listen = "" }

func startNode(t *testing.T, id uint32, opts ...option) *node {
	t.Helper()
	rec := newRecorder()
	hello := Hello{NodeID: id, Incarnation: uint64(id)<<32 | 7, Meta: fmt.Appendf(nil, "region=r%d", id)}
	cfg := Config{Listen: "127.0.0.1:0", Key: testKey, HandshakeTimeout: 2 * time.Second}
	for _, o := range opts {
		o(&cfg, rec)
	}
	tr, err := New(cfg, func() Hello { return hello }, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &node{tr: tr, rec: rec, hello: hello}
}

func (n *node) addr() string { return n.tr.Addr().String() }

func (n *node) dial(t *testing.T, to *node) (*Link, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return n.tr.Dial(ctx, to.addr())
}

// recv waits for one message on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// none checks that nothing is queued on ch. Call it once the events it
// guards against can no longer happen (after Transport.Close, or after the
// callback that would have preceded them).
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	default:
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func sameHello(a, b Hello) bool {
	return a.NodeID == b.NodeID && a.Incarnation == b.Incarnation && string(a.Meta) == string(b.Meta)
}

// rawLink completes a handshake with to as a dialer, but does not start
// the link's goroutines: the test gets the authenticated connection to
// write crafted bytes to, the FrameReader to read what to sends, and the
// acceptor's side of the link.
func rawLink(t *testing.T, to *node) (net.Conn, *wire.FrameReader, *Link) {
	t.Helper()
	from := startNode(t, 99, dialOnly)
	c, err := net.Dial("tcp", to.addr())
	if err != nil {
		t.Fatal(err)
	}
	if !from.tr.track(c) { // from's Close now closes c
		t.Fatal("transport closed")
	}
	l, err := from.tr.handshake(context.Background(), c, true, "")
	if err != nil {
		t.Fatal(err)
	}
	up := recv(t, to.rec.ups, "LinkUp on the acceptor")
	return l.conn, l.fr, up
}

func encode(t *testing.T, f *wire.Frame) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
