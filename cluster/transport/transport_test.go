package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
	"go.uber.org/goleak"
)

func TestNewValidates(t *testing.T) {
	local := func() Hello { return Hello{} }
	for name, cfg := range map[string]Config{
		"no key":         {},
		"short key":      {Key: []byte("short")},
		"negative queue": {Key: testKey, SendQueue: -1},
	} {
		if _, err := New(cfg, local, newRecorder()); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(Config{Key: testKey}, nil, newRecorder()); err == nil {
		t.Error("New accepted a nil local func")
	}
}

// TestLinkUp brings links up in both directions and checks that each side
// sees the other's Hello, frames flow both ways at the negotiated version,
// and a close is seen exactly once on each side.
func TestLinkUp(t *testing.T) {
	a := startNode(t, 1)
	b := startNode(t, 2)

	lb, err := b.dial(t, a)
	if err != nil {
		t.Fatal(err)
	}
	la := recv(t, a.rec.ups, "LinkUp on a")
	if up := recv(t, b.rec.ups, "LinkUp on b"); up != lb {
		t.Fatal("b's LinkUp got a different link than Dial returned")
	}
	if !sameHello(lb.Peer(), a.hello) || !sameHello(la.Peer(), b.hello) {
		t.Fatalf("peers: b sees %+v, a sees %+v", lb.Peer(), la.Peer())
	}
	if !sameHello(recv(t, a.rec.admits, "a's Admit"), b.hello) || !sameHello(recv(t, b.rec.admits, "b's Admit"), a.hello) {
		t.Fatal("Admit saw the wrong Hello")
	}
	if !lb.Outbound() || la.Outbound() {
		t.Fatal("Outbound flags wrong")
	}
	if la.RemoteAddr().String() != lb.conn.LocalAddr().String() {
		t.Fatalf("a's RemoteAddr %v, b's local %v", la.RemoteAddr(), lb.conn.LocalAddr())
	}

	data := &wire.Frame{Type: 7, Src: 2, Cap: "usrloc", Body: []byte("contact")}
	ping := &wire.Frame{Type: wire.MsgPing, Flags: wire.FlagPriority, Src: 1, Body: []byte{1}}
	if err := lb.Send(data); err != nil {
		t.Fatal(err)
	}
	if err := la.Send(ping); err != nil {
		t.Fatal(err)
	}
	got := recv(t, a.rec.frames, "data frame on a")
	if got.Cap != "usrloc" || got.Type != 7 || string(got.Body) != "contact" || got.Version != wire.Version {
		t.Fatalf("a got %+v", got)
	}
	if got := recv(t, b.rec.frames, "ping on b"); got.Type != wire.MsgPing || got.Flags != wire.FlagPriority {
		t.Fatalf("b got %+v", got)
	}
	eventually(t, "stats count the frame", func() bool {
		s := lb.Stats()
		return s.FramesSent == 1 && s.BytesSent == uint64(wire.EncodedLen(data))
	})
	if s := la.Stats(); s.FramesReceived != 1 || s.BytesReceived != uint64(wire.EncodedLen(data)) || s.FramesSent != 1 {
		t.Fatalf("a's stats %+v", s)
	}

	// The other direction.
	la2, err := a.dial(t, b)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, a.rec.ups, "a's LinkUp for its dial")
	lb2 := recv(t, b.rec.ups, "b's LinkUp for a's dial")
	if !sameHello(la2.Peer(), b.hello) || !sameHello(lb2.Peer(), a.hello) || lb2.Outbound() {
		t.Fatal("reverse link has the wrong peers")
	}

	lb.Close()
	lb.Close() // idempotent
	if d := recv(t, b.rec.downs, "LinkDown on b"); d.l != lb || !errors.Is(d.err, ErrLinkClosed) {
		t.Fatalf("b's LinkDown: %v %v", d.l == lb, d.err)
	}
	if d := recv(t, a.rec.downs, "LinkDown on a"); d.l != la {
		t.Fatal("a's LinkDown for the wrong link")
	}
	if err := lb.Send(data); !errors.Is(err, ErrLinkClosed) {
		t.Fatalf("Send on a closed link: %v", err)
	}
	<-lb.Done()

	// Close takes the remaining links down, once each.
	a.tr.Close()
	b.tr.Close()
	recv(t, a.rec.downs, "a's LinkDown on Close")
	recv(t, b.rec.downs, "b's LinkDown on Close")
	none(t, a.rec.downs, "second LinkDown on a")
	none(t, b.rec.downs, "second LinkDown on b")
	none(t, a.rec.fails, "AuthFailed on a")
	none(t, b.rec.fails, "AuthFailed on b")
}

func TestWrongKey(t *testing.T) {
	a := startNode(t, 1)
	b := startNode(t, 2, func(c *Config, _ *recorder) { c.Key = []byte("another-cluster-key!") })

	_, err := b.dial(t, a)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("Dial: %v, want ErrAuth", err)
	}
	if err := recv(t, a.rec.fails, "AuthFailed on a"); !errors.Is(err, ErrAuth) {
		t.Fatalf("a's AuthFailed: %v", err)
	}
	if err := recv(t, b.rec.fails, "AuthFailed on b"); !errors.Is(err, ErrAuth) {
		t.Fatalf("b's AuthFailed: %v", err)
	}
	a.tr.Close()
	b.tr.Close()
	none(t, a.rec.ups, "LinkUp on a")
	none(t, b.rec.ups, "LinkUp on b")
	none(t, a.rec.admits, "Admit on a")
	none(t, b.rec.admits, "Admit on b")
}

func TestAdmitRefused(t *testing.T) {
	errDup := errors.New("duplicate node id 3")
	refuse := func(_ *Config, r *recorder) { r.admit = func(Hello, net.Addr) error { return errDup } }

	t.Run("by acceptor", func(t *testing.T) {
		a := startNode(t, 1, refuse)
		b := startNode(t, 3, dialOnly)
		_, err := b.dial(t, a)
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Reason != errDup.Error() {
			t.Fatalf("Dial: %v, want RefusedError %q", err, errDup)
		}
		a.tr.Close()
		b.tr.Close()
		none(t, a.rec.ups, "LinkUp on a")
		none(t, b.rec.ups, "LinkUp on b")
		none(t, b.rec.admits, "Admit on the refused dialer")
		none(t, a.rec.fails, "AuthFailed on a")
		none(t, b.rec.fails, "AuthFailed on b")
	})
	t.Run("by dialer", func(t *testing.T) {
		a := startNode(t, 1)
		b := startNode(t, 3, dialOnly, refuse)
		_, err := b.dial(t, a)
		if !errors.Is(err, errDup) {
			t.Fatalf("Dial: %v, want the Admit error", err)
		}
		recv(t, a.rec.admits, "a's Admit")
		a.tr.Close()
		b.tr.Close()
		none(t, a.rec.ups, "LinkUp on a although b refused")
		none(t, b.rec.ups, "LinkUp on b")
		none(t, a.rec.fails, "AuthFailed on a")
		none(t, b.rec.fails, "AuthFailed on b")
	})
}

// TestHandshakeCutOff: a client that does not complete the handshake is
// disconnected within HandshakeTimeout, and counted as AuthFailed.
func TestHandshakeCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	a := startNode(t, 1, func(c *Config, _ *recorder) { c.HandshakeTimeout = timeout })
	hello := encode(t, &wire.Frame{Type: wire.MsgHello, Body: []byte("short")})
	bigHello := encode(t, &wire.Frame{Type: wire.MsgHello, Body: make([]byte, maxHelloSize)})
	ping := encode(t, &wire.Frame{Type: wire.MsgPing})
	badMagic := append([]byte(nil), ping...)
	badMagic[4] = 'X'

	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"nothing", nil},
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")},
		{"bad magic", badMagic},
		{"truncated hello", hello[:len(hello)-2]},
		{"malformed hello", hello},
		{"hello over 64 KiB", bigHello},
		{"ping instead of hello", ping},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := net.Dial("tcp", a.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.send)
			c.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) &&
				!strings.Contains(err.Error(), "connection reset") {
				t.Fatalf("reading until the server hangs up: %v", err)
			}
			if elapsed := time.Since(start); elapsed > timeout+time.Second {
				t.Fatalf("cut off after %v, HandshakeTimeout is %v", elapsed, timeout)
			}
			if err := recv(t, a.rec.fails, "AuthFailed"); !errors.Is(err, ErrHandshake) {
				t.Fatalf("AuthFailed with %v, want ErrHandshake", err)
			}
		})
	}
	a.tr.Close()
	none(t, a.rec.ups, "LinkUp")
	none(t, a.rec.admits, "Admit")
}

// TestDialCancelled: cancelling Dial's context aborts a handshake with a
// silent peer at once, and that is not the peer's fault (no AuthFailed).
func TestDialCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b := startNode(t, 2, dialOnly, func(c *Config, _ *recorder) { c.HandshakeTimeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := b.tr.Dial(ctx, ln.Addr().String()); errc <- err }()
	c, err := ln.Accept() // b is connected and waits for our hello
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	if err := recv(t, errc, "Dial to return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial: %v, want context.Canceled", err)
	}
	b.tr.Close()
	none(t, b.rec.fails, "AuthFailed")
}

// TestBadFrameKeepsLink: a frame with a sane length and a bad magic is
// dropped and reported; the next frame still arrives on the same link.
func TestBadFrameKeepsLink(t *testing.T) {
	a := startNode(t, 1)
	conn, _, la := rawLink(t, a)
	bad := encode(t, &wire.Frame{Type: 9, Body: []byte("bad")})
	copy(bad[4:8], "P4CK")
	newer := encode(t, &wire.Frame{Type: 9})
	newer[8] = wire.Version + 1
	var stream []byte
	stream = append(stream, bad...)
	stream = append(stream, newer...)
	stream = append(stream, encode(t, &wire.Frame{Type: 10, Cap: "cps", Body: []byte("good")})...)
	if _, err := conn.Write(stream); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := recv(t, a.rec.bads, "BadFrame"); !errors.Is(err, wire.ErrBadFrame) {
			t.Fatalf("BadFrame with %v", err)
		}
	}
	if f := recv(t, a.rec.frames, "the good frame"); f.Type != 10 || string(f.Body) != "good" {
		t.Fatalf("got %+v", f)
	}
	none(t, a.rec.downs, "LinkDown")
	if s := la.Stats(); s.BadFrames != 2 || s.FramesReceived != 1 {
		t.Fatalf("stats %+v, want 2 bad frames and 1 good", s)
	}
}

// TestOversizeClosesLink: a length prefix past MaxFrameSize cannot be
// skipped, so the link is closed.
func TestOversizeClosesLink(t *testing.T) {
	a := startNode(t, 1)
	conn, fr, _ := rawLink(t, a)
	if _, err := conn.Write([]byte{0x7f, 0xff, 0xff, 0xff, 'A', 'E', 'D', 'G'}); err != nil {
		t.Fatal(err)
	}
	if d := recv(t, a.rec.downs, "LinkDown"); !errors.Is(d.err, wire.ErrTooLarge) {
		t.Fatalf("LinkDown with %v, want ErrTooLarge", d.err)
	}
	conn.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := fr.ReadFrame(); !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after the close we read %v, want EOF", err)
	}
}

// TestCloseNoLeaks closes transports with links up and handshakes in
// progress and checks that every goroutine is gone.
func TestCloseNoLeaks(t *testing.T) {
	a := startNode(t, 1)
	b := startNode(t, 2)
	if _, err := b.dial(t, a); err != nil {
		t.Fatal(err)
	}
	if _, err := a.dial(t, b); err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", a.addr()) // a is stuck in its handshake
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for range 2 {
		recv(t, a.rec.ups, "LinkUp on a")
		recv(t, b.rec.ups, "LinkUp on b")
	}
	eventually(t, "a accepted the silent conn", func() bool {
		a.tr.mu.Lock()
		defer a.tr.mu.Unlock()
		return len(a.tr.pending) == 1
	})
	a.tr.Close()
	b.tr.Close()
	a.tr.Close() // idempotent
	for range 2 {
		recv(t, a.rec.downs, "LinkDown on a")
		recv(t, b.rec.downs, "LinkDown on b")
	}
	none(t, a.rec.downs, "extra LinkDown on a")
	none(t, a.rec.fails, "AuthFailed for a handshake cut by Close")
	if _, err := b.dial(t, a); err == nil {
		t.Fatal("Dial after Close succeeded")
	}
	goleak.VerifyNone(t)
}
