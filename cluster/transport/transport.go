// Package transport carries cluster frames over authenticated TCP links.
//
// A link is one TCP (optionally TLS) connection between two nodes. Before
// any data flows, both sides prove knowledge of the shared cluster key with
// an HMAC-SHA256 challenge-response (see handshake.go), and both sides'
// Handler.Admit must accept the peer. After that each link has one reader
// and one writer goroutine; control frames (FlagPriority) bypass queued
// data so heartbeats never starve behind bulk sync traffic.
//
// The transport knows nothing of topology or routing: it is the thin shell
// around the cluster core that owns sockets and goroutines.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Errors returned by the transport. Match them with errors.Is.
var (
	// ErrAuth: the peer did not prove the cluster key (or its TLS
	// certificate), or it refused our proof.
	ErrAuth = errors.New("transport: authentication failed")
	// ErrHandshake: the peer broke the handshake protocol (garbage, silence
	// past HandshakeTimeout, no common protocol version).
	ErrHandshake = errors.New("transport: handshake failed")
	// ErrQueueFull: the link's send queue is full. The frame was not sent;
	// Send never blocks, so backpressure is the caller's decision.
	ErrQueueFull = errors.New("transport: send queue full")
	// ErrLinkClosed: the link was closed (by either side or by an error).
	ErrLinkClosed = errors.New("transport: link closed")
	// ErrTransportClosed: Close was called.
	ErrTransportClosed = errors.New("transport: closed")
)

// RefusedError is returned by Dial when the peer proved the key but its
// Handler.Admit refused us. Reason is the peer's text, e.g.
// "duplicate node id 3".
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "transport: refused by peer: " + e.Reason }

// MinKeyLen is the shortest cluster key accepted: 128 bits.
const MinKeyLen = 16

// Defaults for Config fields left zero.
const (
	// DefaultHandshakeTimeout bounds a whole handshake (TCP connect, TLS,
	// hello, auth, admit). A LAN handshake takes well under a millisecond;
	// 3 s rides out a congested WAN link yet frees a slot held by a silent
	// client quickly.
	DefaultHandshakeTimeout = 3 * time.Second
	// DefaultSendQueue is the per-link data queue in frames. At ~300 bytes
	// a frame it buffers about 1 MiB: enough to absorb a burst of
	// replication while the socket drains, small enough that a stuck peer
	// is noticed (ErrQueueFull) instead of eating memory.
	DefaultSendQueue = 4096
	// priorityQueueLen is the per-link priority queue. Priority frames are
	// heartbeats and other small control traffic, a few per second.
	priorityQueueLen = 256
	// maxHandshakes bounds concurrent inbound handshakes so a flood of
	// connections that never speak cannot exhaust memory.
	maxHandshakes = 256
	// maxHelloSize caps handshake frames from a peer that has not yet
	// proven the key.
	maxHelloSize = 64 << 10
)

// Config configures a Transport.
type Config struct {
	// Listen is the TCP address to accept links on ("host:port"; port 0
	// picks a free one, see Addr). Empty: dial only.
	Listen string
	// Key is the shared cluster key, at least MinKeyLen bytes. It is
	// required even with TLS: certificates say who may connect at all, the
	// key says who belongs to this cluster. It is never logged.
	Key []byte
	// TLS, when set, wraps every link in TLS, accepted and dialed alike. For
	// mutual TLS set Certificates, RootCAs, ClientCAs and
	// ClientAuth=tls.RequireAndVerifyClientCert. When ServerName is empty,
	// dials verify the server against the host part of the dialed address.
	TLS *tls.Config
	// HandshakeTimeout bounds connect plus handshake. Default 3 s.
	HandshakeTimeout time.Duration
	// SendQueue is the per-link data queue in frames; when full, Send
	// returns ErrQueueFull. Default 4096.
	SendQueue int
	// Logger receives link events. Default: discard.
	Logger *slog.Logger
}

// Hello is what a node says about itself in the handshake.
type Hello struct {
	NodeID uint32
	// Incarnation changes on every process start, so the peer can tell a
	// restarted node from a reconnecting one.
	Incarnation uint64
	// Meta is opaque to the transport: the caller's encoded node metadata.
	Meta []byte
}

// Handler receives link events. Callbacks for one link (LinkUp, Frame,
// BadFrame, LinkDown) all run on that link's reader goroutine, in that
// order, so a handler needs no per-link locking. Callbacks run while the
// transport holds no locks, but Close waits for them: a handler must not
// block on the goroutine that calls Close.
type Handler interface {
	// Admit is called on both sides once the peer proved the key. A non-nil
	// error refuses the link; its text is sent to the peer as the reason.
	// A nil return is not yet a link: the other side may still refuse, so
	// treat LinkUp, not Admit, as the commit point.
	Admit(peer Hello, remote net.Addr) error
	// LinkUp: both sides admitted the link. Called before any Frame.
	LinkUp(l *Link)
	// Frame delivers a frame. It runs on the link's reader goroutine and
	// must not block long: the link stops reading meanwhile. The frame is
	// the handler's to keep.
	Frame(l *Link, f *wire.Frame)
	// LinkDown is called exactly once for every link that was up, after its
	// goroutines stopped sending.
	LinkDown(l *Link, err error)
	// BadFrame: a frame with a sane length but bad contents was dropped;
	// the link stays up.
	BadFrame(l *Link, err error)
	// AuthFailed: a handshake failed (bad key or certificate, garbage,
	// timeout) on either side. Admit refusals do not count: the refusing
	// side already knows, and the dialer gets a *RefusedError.
	AuthFailed(remote net.Addr, err error)
}

// Transport accepts and dials links.
type Transport struct {
	cfg   Config
	local func() Hello
	h     Handler
	log   *slog.Logger

	sem     chan struct{} // inbound handshake slots
	closing chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	ln      net.Listener
	pending map[net.Conn]struct{} // conns still in the handshake
	links   map[*Link]struct{}
	wg      sync.WaitGroup // accept loop, inbound handshakes, link goroutines
}

// New validates cfg, fills defaults and returns a Transport. local is
// called once per handshake, so metadata changes reach later links.
func New(cfg Config, local func() Hello, h Handler) (*Transport, error) {
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("transport: key is %d bytes, need at least %d", len(cfg.Key), MinKeyLen)
	}
	if local == nil || h == nil {
		return nil, errors.New("transport: local and handler are required")
	}
	if cfg.HandshakeTimeout < 0 || cfg.SendQueue < 0 {
		return nil, errors.New("transport: negative HandshakeTimeout or SendQueue")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.SendQueue == 0 {
		cfg.SendQueue = DefaultSendQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Key = append([]byte(nil), cfg.Key...) // the caller may reuse its slice
	return &Transport{
		cfg:     cfg,
		local:   local,
		h:       h,
		log:     cfg.Logger,
		sem:     make(chan struct{}, maxHandshakes),
		closing: make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
		links:   make(map[*Link]struct{}),
	}, nil
}

// Start listens on cfg.Listen (if set) and accepts links in the background.
func (t *Transport) Start() error {
	if t.cfg.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", t.cfg.Listen)
	if err != nil {
		return fmt.Errorf("transport: listen: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		ln.Close()
		return ErrTransportClosed
	}
	if t.ln != nil {
		ln.Close()
		return errors.New("transport: already started")
	}
	t.ln = ln
	t.wg.Add(1)
	go t.acceptLoop(ln)
	t.log.Info("cluster transport listening", "addr", ln.Addr().String(), "tls", t.cfg.TLS != nil)
	return nil
}

// Addr is the listen address (useful with port 0), or nil before Start or
// without Listen.
func (t *Transport) Addr() net.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ln == nil {
		return nil
	}
	return t.ln.Addr()
}

func (t *Transport) acceptLoop(ln net.Listener) {
	defer t.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("cluster transport accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-t.closing:
				return
			}
		}
		backoff = 0
		select {
		case t.sem <- struct{}{}:
		default:
			t.log.Warn("too many cluster handshakes in progress, dropping connection", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if !t.track(c) {
			<-t.sem
			c.Close()
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer func() { <-t.sem }()
			t.serve(c)
		}()
	}
}

// serve runs the acceptor side of a handshake on c.
func (t *Transport) serve(c net.Conn) {
	remote := c.RemoteAddr()
	l, err := t.handshake(context.Background(), c, false, "")
	if err != nil {
		t.handshakeFailed(remote, err)
		return
	}
	t.startLink(l)
}

// Dial connects to addr and runs the handshake. It returns the link once
// both sides admitted it; LinkUp is called on the link's own goroutine and
// may run shortly after Dial returns. Errors: a *RefusedError when the peer
// refused us, ErrAuth when authentication failed, ErrHandshake for
// protocol failures, or the connect/context error.
func (t *Transport) Dial(ctx context.Context, addr string) (*Link, error) {
	d := net.Dialer{Timeout: t.cfg.HandshakeTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	if !t.track(c) {
		c.Close()
		return nil, ErrTransportClosed
	}
	remote := c.RemoteAddr()
	host, _, _ := net.SplitHostPort(addr)
	l, err := t.handshake(ctx, c, true, host)
	if err != nil {
		t.handshakeFailed(remote, err)
		return nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	if !t.startLink(l) {
		return nil, ErrTransportClosed
	}
	return l, nil
}

// handshakeFailed reports a failed handshake to the handler unless it was
// an Admit refusal or the transport is shutting down.
func (t *Transport) handshakeFailed(remote net.Addr, err error) {
	var refused *RefusedError
	var local *localRefusal
	switch {
	case errors.As(err, &refused):
		t.log.Info("cluster link refused by peer", "remote", remote.String(), "reason", refused.Reason)
	case errors.As(err, &local):
		t.log.Info("cluster link refused", "remote", remote.String(), "reason", local.err.Error())
	case errors.Is(err, ErrTransportClosed), errors.Is(err, context.Canceled):
	default:
		t.log.Warn("cluster link handshake failed", "remote", remote.String(), "err", err)
		t.h.AuthFailed(remote, err)
	}
}

// track registers a conn in the handshake so Close can cut it. It reports
// false once the transport is closed.
func (t *Transport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.pending[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.pending, c)
	t.mu.Unlock()
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// startLink registers l and starts its goroutines. On a closed transport
// it closes the connection instead (the peer sees the link go down).
func (t *Transport) startLink(l *Link) bool {
	t.mu.Lock()
	delete(t.pending, l.raw)
	if t.closed {
		t.mu.Unlock()
		l.raw.Close()
		return false
	}
	t.links[l] = struct{}{}
	t.wg.Add(2)
	t.mu.Unlock()
	t.log.Info("cluster link up", "peer", l.peer.NodeID, "remote", l.remote.String(), "outbound", l.outbound)
	go l.writeLoop()
	go l.readLoop()
	return true
}

func (t *Transport) removeLink(l *Link) {
	t.mu.Lock()
	delete(t.links, l)
	t.mu.Unlock()
}

// Close stops listening, closes every link and handshake in progress, and
// waits until all goroutines have exited (LinkDown has been called for
// every link that was up). It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.closing)
		if t.ln != nil {
			t.ln.Close()
		}
		for c := range t.pending {
			c.Close()
		}
		for l := range t.links {
			l.closeWith(ErrTransportClosed)
		}
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}
