package transport

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// The handshake, over the raw TCP or the TLS connection, in wire frames of
// capability wire.SystemCap (D = dialer, A = acceptor):
//
//	D → A  Hello(D)
//	A → D  Hello(A), AuthResponse(A)        (A has both nonces now)
//	D → A  AuthResponse(D)                  (after D verified A)
//	A → D  AuthResult(A)                    (A verified D and ran Admit)
//	D → A  AuthResult(D)                    (only after A said ok; D ran Admit)
//
// AuthResponse is HMAC-SHA256(key, "anyedge-link-v1" | role | own nonce |
// peer nonce | own id | peer id). The role byte stops a peer from
// reflecting our own response back at us; the two fresh 32-byte nonces stop
// replays of a recorded handshake.
//
// The link is up when A has sent ok and D has sent ok: D decides last, so
// both sides reach the same decision and LinkUp runs on both only when both
// admitted. (A connection lost after D's ok shows up on A as a failed
// handshake and on D as a link that goes down at once.)
//
// Hellos are sent in turn rather than at once so that neither side writes a
// 64 KiB hello into a socket nobody reads yet. A refusal at any step is an
// AuthResult with a non-ok code, sent best-effort before closing.
//
// The handshake frames are encoded at wire.MinVersion so that any peer
// whose range overlaps ours can decode them; the link then runs at the
// highest version both speak.

const (
	authLabel = "anyedge-link-v1"
	nonceLen  = 32

	roleDialer   byte = 'D'
	roleAcceptor byte = 'A'
)

// AuthResult codes.
const (
	resultOK         uint8 = 0
	resultAuthFailed uint8 = 1 // "authentication failed"
	resultRefused    uint8 = 2 // Admit refused; reason from the handler
	resultProtocol   uint8 = 3 // handshake protocol error
)

const reasonAuthFailed = "authentication failed"

// maxReason bounds a refusal reason sent to the peer.
const maxReason = 1024

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// localRefusal marks a link our own Handler.Admit refused.
type localRefusal struct{ err error }

func (e *localRefusal) Error() string { return "transport: link refused: " + e.err.Error() }
func (e *localRefusal) Unwrap() error { return e.err }

// helloMsg is the body of MsgHello.
type helloMsg struct {
	minVer, maxVer uint8
	Hello
	nonce []byte
}

func (m *helloMsg) encode() []byte {
	w := wire.Writer{}
	w.U8(m.minVer)
	w.U8(m.maxVer)
	w.U32(m.NodeID)
	w.U64(m.Incarnation)
	w.Bytes(m.nonce)
	w.Bytes(m.Meta)
	return w.B
}

func decodeHello(b []byte) (*helloMsg, error) {
	r := wire.Reader{B: b}
	m := &helloMsg{minVer: r.U8(), maxVer: r.U8()}
	m.NodeID = r.U32()
	m.Incarnation = r.U64()
	m.nonce = r.Bytes()
	m.Meta = r.Bytes()
	// Trailing bytes are fields from a newer version: ignored.
	if r.Err != nil {
		return nil, fmt.Errorf("%w: hello: %v", ErrHandshake, r.Err)
	}
	if len(m.nonce) != nonceLen {
		return nil, fmt.Errorf("%w: hello nonce is %d bytes", ErrHandshake, len(m.nonce))
	}
	if len(m.Meta) == 0 {
		m.Meta = nil
	}
	return m, nil
}

// authMAC proves the key and binds both hellos: a man in the middle who
// rewrites a node's id, incarnation or metadata breaks the MAC, even
// without TLS.
func authMAC(key []byte, role byte, ownNonce, peerNonce []byte, ownID, peerID uint32, ownHello, peerHello []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(authLabel))
	m.Write([]byte{role})
	m.Write(ownNonce)
	m.Write(peerNonce)
	var ids [8]byte
	binary.BigEndian.PutUint32(ids[0:], ownID)
	binary.BigEndian.PutUint32(ids[4:], peerID)
	m.Write(ids[:])
	oh, ph := sha256.Sum256(ownHello), sha256.Sum256(peerHello)
	m.Write(oh[:])
	m.Write(ph[:])
	return m.Sum(nil)
}

// hs is one handshake in progress.
type hs struct {
	t        *Transport
	conn     net.Conn
	fr       *wire.FrameReader
	outbound bool
	tls      bool
	me       helloMsg
	peer     *helloMsg
	meRaw    []byte // hello bodies as sent and received: the MAC covers them
	peerRaw  []byte
}

// handshake authenticates raw and returns a link that is not started yet.
// On error raw is closed and untracked. serverName is the dialed host, used
// to verify the server certificate when cfg.TLS has no ServerName.
func (t *Transport) handshake(ctx context.Context, raw net.Conn, outbound bool, serverName string) (l *Link, err error) {
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // heartbeats must not wait for Nagle
	}
	raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // cancelled just as we finished: the deadline is poisoned
		}
		if err == nil {
			raw.SetDeadline(time.Time{})
			return
		}
		raw.Close()
		t.untrack(raw)
		if t.isClosed() {
			err = ErrTransportClosed
		} else if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
	}()

	conn := raw
	if t.cfg.TLS != nil {
		if conn, err = t.tlsHandshake(ctx, raw, outbound, serverName); err != nil {
			return nil, err
		}
	}
	h := &hs{t: t, conn: conn, fr: wire.NewFrameReader(conn), outbound: outbound, tls: t.cfg.TLS != nil}
	h.fr.SetMaxSize(maxHelloSize)
	local := t.local()
	h.me = helloMsg{minVer: wire.MinVersion, maxVer: wire.Version, Hello: local, nonce: make([]byte, nonceLen)}
	rand.Read(h.me.nonce) // never fails (crypto/rand panics instead)

	if outbound {
		err = h.dial()
	} else {
		err = h.accept()
	}
	if err != nil {
		return nil, err
	}
	h.fr.SetMaxSize(wire.MaxFrameSize)
	return newLink(t, raw, conn, h.fr, h.peer.Hello, outbound, min(wire.Version, h.peer.maxVer)), nil
}

func (t *Transport) tlsHandshake(ctx context.Context, raw net.Conn, outbound bool, serverName string) (net.Conn, error) {
	var tc *tls.Conn
	if outbound {
		cfg := t.cfg.TLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = serverName
		}
		tc = tls.Client(raw, cfg)
	} else {
		tc = tls.Server(raw, t.cfg.TLS)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		if isTimeout(err) {
			return nil, fmt.Errorf("%w: tls: %w", ErrHandshake, err)
		}
		return nil, fmt.Errorf("%w: tls: %w", ErrAuth, err)
	}
	return tc, nil
}

func (h *hs) dial() error {
	if err := h.send(h.helloFrame()); err != nil {
		return err
	}
	if err := h.readHello(); err != nil {
		return err
	}
	if err := h.verify(); err != nil {
		return err
	}
	if err := h.send(h.responseFrame()); err != nil {
		return err
	}
	if err := h.readResult(); err != nil {
		return err
	}
	return h.admit()
}

func (h *hs) accept() error {
	if err := h.readHello(); err != nil {
		return err
	}
	if err := h.send(h.helloFrame(), h.responseFrame()); err != nil {
		return err
	}
	if err := h.verify(); err != nil {
		return err
	}
	if err := h.admit(); err != nil {
		return err
	}
	return h.readResult()
}

// readHello reads and checks the peer's hello: a nonce of its own and a
// protocol version range that overlaps ours.
func (h *hs) readHello() error {
	f, err := h.read(wire.MsgHello)
	if err != nil {
		return err
	}
	h.peerRaw = f.Body
	if h.peer, err = decodeHello(f.Body); err != nil {
		h.refuse(resultProtocol, "malformed hello")
		return err
	}
	if max(h.me.minVer, h.peer.minVer) > min(h.me.maxVer, h.peer.maxVer) {
		reason := fmt.Sprintf("no common protocol version: ours [%d, %d], peer's [%d, %d]",
			h.me.minVer, h.me.maxVer, h.peer.minVer, h.peer.maxVer)
		h.refuse(resultProtocol, reason)
		return fmt.Errorf("%w: %s", ErrHandshake, reason)
	}
	if bytes.Equal(h.peer.nonce, h.me.nonce) {
		h.refuse(resultAuthFailed, reasonAuthFailed)
		return fmt.Errorf("%w: peer echoed our nonce", ErrAuth)
	}
	return nil
}

func (h *hs) role() (own, peer byte) {
	if h.outbound {
		return roleDialer, roleAcceptor
	}
	return roleAcceptor, roleDialer
}

// verify reads the peer's AuthResponse and checks it in constant time.
func (h *hs) verify() error {
	f, err := h.read(wire.MsgAuthResponse)
	if err != nil {
		return err
	}
	_, peerRole := h.role()
	want := authMAC(h.t.cfg.Key, peerRole, h.peer.nonce, h.me.nonce, h.peer.NodeID, h.me.NodeID, h.peerRaw, h.meRaw)
	if !hmac.Equal(f.Body, want) {
		h.refuse(resultAuthFailed, reasonAuthFailed)
		return fmt.Errorf("%w: peer's response does not match the cluster key", ErrAuth)
	}
	return nil
}

// admit asks the handler and tells the peer. Only the dialer's ok, sent
// last, completes the link.
func (h *hs) admit() error {
	if err := h.t.h.Admit(h.peer.Hello, h.conn.RemoteAddr()); err != nil {
		h.refuse(resultRefused, err.Error())
		return &localRefusal{err: err}
	}
	w := wire.Writer{}
	w.U8(resultOK)
	w.String("")
	return h.send(h.frame(wire.MsgAuthResult, w.B))
}

// readResult reads the peer's AuthResult, which must be ok.
func (h *hs) readResult() error {
	f, err := h.read(wire.MsgAuthResult)
	if err != nil {
		return err
	}
	return resultError(f.Body)
}

// resultError turns an AuthResult body into nil (ok) or the error it means.
func resultError(body []byte) error {
	r := wire.Reader{B: body}
	code, reason := r.U8(), r.String()
	if r.Err != nil {
		return fmt.Errorf("%w: malformed auth result", ErrHandshake)
	}
	switch code {
	case resultOK:
		return nil
	case resultAuthFailed:
		return fmt.Errorf("%w: peer says: %s", ErrAuth, reason)
	case resultRefused:
		return &RefusedError{Reason: reason}
	default:
		return fmt.Errorf("%w: peer says: %s", ErrHandshake, reason)
	}
}

// read reads the next handshake frame, which must be want or a refusal.
func (h *hs) read(want wire.MsgType) (*wire.Frame, error) {
	f, err := h.fr.ReadFrame()
	if err != nil {
		if h.tls && isTLSAlert(err) {
			// TLS 1.3 clients finish their handshake before the server
			// checks the client certificate; the rejection arrives here.
			return nil, fmt.Errorf("%w: tls: %w", ErrAuth, err)
		}
		return nil, fmt.Errorf("%w: waiting for message %d: %w", ErrHandshake, want, err)
	}
	if f.Cap != wire.SystemCap {
		return nil, fmt.Errorf("%w: got capability %q frame, want message %d", ErrHandshake, f.Cap, want)
	}
	if f.Type == wire.MsgAuthResult && want != wire.MsgAuthResult {
		if err := resultError(f.Body); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: early auth result", ErrHandshake)
	}
	if f.Type != want {
		return nil, fmt.Errorf("%w: got message %d, want %d", ErrHandshake, f.Type, want)
	}
	return f, nil
}

func (h *hs) frame(typ wire.MsgType, body []byte) *wire.Frame {
	return &wire.Frame{Version: wire.MinVersion, Type: typ, Src: h.me.NodeID, Cap: wire.SystemCap, Body: body}
}

func (h *hs) helloFrame() *wire.Frame {
	if h.meRaw == nil {
		h.meRaw = h.me.encode()
	}
	return h.frame(wire.MsgHello, h.meRaw)
}

func (h *hs) responseFrame() *wire.Frame {
	own, _ := h.role()
	mac := authMAC(h.t.cfg.Key, own, h.me.nonce, h.peer.nonce, h.me.NodeID, h.peer.NodeID, h.meRaw, h.peerRaw)
	return h.frame(wire.MsgAuthResponse, mac)
}

// send writes frames in one write.
func (h *hs) send(frames ...*wire.Frame) error {
	var buf []byte
	for _, f := range frames {
		if f.Type == wire.MsgHello && wire.EncodedLen(f)-4 > maxHelloSize {
			return fmt.Errorf("%w: our hello is %d bytes, max %d (node metadata too big)", ErrHandshake, wire.EncodedLen(f), maxHelloSize)
		}
		var err error
		if buf, err = wire.AppendFrame(buf, f); err != nil {
			return fmt.Errorf("%w: %w", ErrHandshake, err)
		}
	}
	if _, err := h.conn.Write(buf); err != nil {
		return fmt.Errorf("%w: write: %w", ErrHandshake, err)
	}
	return nil
}

// refuse tells the peer why we are closing, best-effort: the peer may be
// gone or not reading, and the deadline bounds the attempt.
func (h *hs) refuse(code uint8, reason string) {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	w := wire.Writer{}
	w.U8(code)
	w.String(reason)
	h.send(h.frame(wire.MsgAuthResult, w.B))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isTLSAlert reports an alert received from the TLS peer (crypto/tls
// reports those as a net.OpError with Op "remote error").
func isTLSAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}
