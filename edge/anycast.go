package edge

// Anycast transactions. Every node behind an anycast address advertises it
// in its Via and Record-Route, so after a routing change a response, a
// CANCEL or an ACK can reach a node that does not hold the transaction.
//
//   - A response carries our Via, whose branch names the owner node
//     (proxy.Branch): the receiver relays it to that node only, and never
//     also forwards it itself (OpenSIPS bug #2445 did both for failure
//     replies). The owner hands it to its client transaction exactly as
//     sipgo's transaction layer does with a response read from a socket.
//   - A CANCEL, and the ACK of a non-2xx final response, carry the UAC's
//     branch, which names nobody. When one matches no transaction here it
//     is sent to every up node; the node holding the INVITE server
//     transaction feeds it to that transaction (487 to the INVITE over its
//     own socket, CANCEL of the branches, or the end of the 4xx-6xx
//     retransmissions), the others ignore it.
//   - The receiver answers 200 to the CANCEL itself: a CANCEL's response
//     is hop by hop and only stops the UAC's retransmissions of the
//     CANCEL; the owner's 487 is what ends the call attempt. Waiting for
//     the owner would make the answer depend on a cluster round trip and
//     on which node replies first, and over UDP the receiving node is the
//     one the UAC's retransmissions reach anyway. With no node up to
//     relay to, the receiver answers 481 as before.
//   - Loops are impossible: a relayed message is injected into a
//     transaction or dropped, never relayed again, and relays only arrive
//     over the authenticated cluster link (the TxRelay hook).
//
// The ACK of a 2xx is a new transaction routed statelessly along the
// Record-Route (handleAck); any node holding the anycast address can route
// it, so it needs no relay.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TxRelay carries misdelivered transaction messages to other nodes over
// the cluster. The daemon implements it with a cluster capability; the
// messages it delivers are passed to Server.HandleTxRelay on the
// receiving node.
type TxRelay interface {
	// SendTx sends msg to node. The error wraps ErrNodeUnknown or
	// ErrNodeDown when the node is not known or not reachable.
	SendTx(node uint32, msg []byte) error
	// BroadcastTx sends msg to every reachable node but this one and
	// returns how many it sent to.
	BroadcastTx(msg []byte) int
	// SelfAddr is this node's own SIP address ("host:port"), not shared
	// with any other node; "" when unknown.
	SelfAddr() string
	// IsPeer reports whether a is the SIP address of another node.
	IsPeer(a netip.Addr) bool
}

// Errors a TxRelay returns.
var (
	ErrNodeUnknown = errors.New("edge: unknown cluster node")
	ErrNodeDown    = errors.New("edge: cluster node unreachable")
)

// txKind is what a relayed message is; the wire values are part of the
// cluster protocol: only append.
type txKind uint8

const (
	txResponse txKind = 1
	txCancel   txKind = 2
	txAck      txKind = 3
)

func (k txKind) String() string {
	switch k {
	case txResponse:
		return "response"
	case txCancel:
		return "cancel"
	case txAck:
		return "ack"
	}
	return "unknown"
}

// txFrame is a relayed message with what the receiving node's transport
// layer knew about it: transport and source address. (Not the destination:
// sipgo derives a message's from its Via unless told otherwise.)
type txFrame struct {
	kind      txKind
	origin    uint32 // the relaying node
	sent      int64  // unix nanos at the relaying node (relay latency)
	transport string
	source    string
	sip       []byte
}

const txFrameVersion = 1

// maxTxField bounds the address fields (one length byte each).
const maxTxField = 255

var errTxFrame = errors.New("malformed anycast transaction frame")

// encode: version, kind, origin (4), sent (8), then transport and source
// as length-prefixed strings, then the SIP message; network
// byte order.
func (f *txFrame) encode() ([]byte, error) {
	if len(f.transport) > maxTxField || len(f.source) > maxTxField {
		return nil, errTxFrame
	}
	b := make([]byte, 0, 2+4+8+2+len(f.transport)+len(f.source)+len(f.sip))
	b = append(b, txFrameVersion, byte(f.kind))
	b = binary.BigEndian.AppendUint32(b, f.origin)
	b = binary.BigEndian.AppendUint64(b, uint64(f.sent))
	for _, s := range []string{f.transport, f.source} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return append(b, f.sip...), nil
}

func decodeTxFrame(b []byte) (txFrame, error) {
	var f txFrame
	if len(b) < 2+4+8 || b[0] != txFrameVersion {
		return f, errTxFrame
	}
	f.kind = txKind(b[1])
	if f.kind < txResponse || f.kind > txAck {
		return f, errTxFrame
	}
	f.origin = binary.BigEndian.Uint32(b[2:])
	f.sent = int64(binary.BigEndian.Uint64(b[6:]))
	b = b[14:]
	var fields [2]string
	for i := range fields {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return f, errTxFrame
		}
		n := int(b[0])
		fields[i] = string(b[1 : 1+n])
		b = b[1+n:]
	}
	f.transport, f.source = fields[0], fields[1]
	if len(b) == 0 {
		return f, errTxFrame
	}
	f.sip = bytes.Clone(b)
	return f, nil
}

// relayResponse relays a response that matched no client transaction here
// and whose Via names another node. It reports whether the response was
// another node's (then it is relayed or dropped, never processed here).
func (s *Server) relayResponse(res *sip.Response) bool {
	owner, ok := s.px.Owner(res.Via())
	if !ok || owner == s.node {
		return false
	}
	r := s.hooks.TxRelay
	if r == nil {
		s.txm.drop("no_cluster")
		return true
	}
	msg, err := s.txFrameOf(txResponse, res)
	if err != nil {
		s.txm.drop("malformed")
		return true
	}
	switch err := r.SendTx(owner, msg); {
	case err == nil:
		s.txm.relay(txResponse)
	case errors.Is(err, ErrNodeUnknown):
		s.txm.drop("unknown_node")
	case errors.Is(err, ErrNodeDown):
		s.txm.drop("node_down")
	default:
		s.txm.drop("send_failed")
	}
	if err != nil {
		s.log.Debug("misdelivered response dropped", "owner", owner, "status", res.StatusCode,
			"call_id", callID(res), "error", err)
	}
	return true
}

// relayToAll sends a CANCEL or a non-2xx ACK that matched no transaction
// here to every up node, one of which may hold its INVITE. It reports
// whether any node was sent to.
func (s *Server) relayToAll(kind txKind, req *sip.Request) bool {
	r := s.hooks.TxRelay
	if r == nil {
		return false
	}
	if !s.fanout.take(time.Now()) {
		// Anybody can send CANCELs to the anycast address; each one that
		// matches nothing here goes to every node, so bound them.
		s.txm.drop("overload")
		return false
	}
	msg, err := s.txFrameOf(kind, req)
	if err != nil {
		s.txm.drop("malformed")
		return false
	}
	if r.BroadcastTx(msg) == 0 {
		s.txm.drop("no_node_up")
		return false
	}
	s.txm.relay(kind)
	return true
}

func (s *Server) txFrameOf(kind txKind, m sip.Message) ([]byte, error) {
	f := txFrame{kind: kind, origin: s.node, sent: time.Now().UnixNano(),
		transport: m.Transport(), source: m.Source(), sip: []byte(m.String())}
	return f.encode()
}

// maxTxInjecting bounds the relayed messages being handled at once; more
// are dropped and counted (a peer flooding us must not pile up goroutines).
const maxTxInjecting = 1024

// HandleTxRelay takes a message another node relayed with its TxRelay
// (from is the cluster node it came from). It copies body and returns at
// once: the cluster calls it from its loop goroutine, which must not wait
// on a SIP transaction. Malformed frames are dropped and counted.
func (s *Server) HandleTxRelay(from uint32, body []byte) {
	f, err := decodeTxFrame(body)
	if err != nil {
		s.txm.drop("malformed")
		s.log.Debug("bad anycast transaction frame", "from", from, "error", err)
		return
	}
	if !s.enterTx() {
		s.txm.drop("not_running")
		return
	}
	select {
	case s.txSlots <- struct{}{}:
	default:
		s.leaveTx()
		s.txm.drop("overload")
		return
	}
	go func() {
		defer func() { <-s.txSlots; s.leaveTx() }()
		s.inject(from, f)
	}()
}

// inject hands a relayed message to the transaction it belongs to, as
// sipgo's transaction layer would had it been read from our socket.
func (s *Server) inject(from uint32, f txFrame) {
	msg, err := s.parser.ParseSIP(f.sip)
	if err != nil {
		s.txm.drop("malformed")
		s.log.Debug("relayed SIP message unparsable", "from", from, "error", err)
		return
	}
	msg.SetTransport(f.transport)
	msg.SetSource(f.source)
	if f.sent > 0 {
		s.txm.latency.Observe(max(time.Since(time.Unix(0, f.sent)), 0).Seconds())
	}
	switch m := msg.(type) {
	case *sip.Response:
		if f.kind != txResponse {
			s.txm.drop("malformed")
			return
		}
		s.injectResponse(m)
	case *sip.Request:
		if !(f.kind == txCancel && m.IsCancel() || f.kind == txAck && m.IsAck()) {
			s.txm.drop("malformed")
			return
		}
		s.injectRequest(f.kind, m)
	}
}

func (s *Server) injectResponse(res *sip.Response) {
	if owner, ok := s.px.Owner(res.Via()); !ok || owner != s.node {
		// Relayed here by mistake (or a forged frame): never relay twice.
		s.txm.drop("not_owner")
		return
	}
	if tx := s.stack.index.client(res); tx != nil {
		s.txm.inject(txResponse)
		tx.Receive(res)
		return
	}
	// Ours but no transaction (a 2xx retransmitted after the INVITE
	// transaction ended): absorbed as a stray arriving here would be.
	s.txm.inject(txResponse)
	s.absorbResponse(res)
}

// injectRequest feeds a relayed CANCEL or ACK to the INVITE server
// transaction it matches; a node without it ignores it (the relay went to
// every node, the owner is one of them).
func (s *Server) injectRequest(kind txKind, req *sip.Request) {
	tx := s.stack.index.invite(req)
	if tx == nil {
		s.txm.ignored.Inc()
		return
	}
	s.txm.inject(kind)
	if err := tx.Receive(req); err != nil {
		s.log.Debug("relayed request not taken by its transaction", "method", req.Method, "call_id", callID(req), "error", err)
	}
}

func (s *Server) enterTx() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || !s.ready.Load() { // ready: Start has built the stack
		return false
	}
	s.handlers.Add(1)
	return true
}

func (s *Server) leaveTx() { s.handlers.Done() }

// towardPeer picks the socket for a request whose next hop is another
// node of the cluster (an in-dialog request routed to the node that
// record-routed it): that node's kernel drops a packet whose source is one
// of its own addresses, so it must not leave from the anycast address
// every node holds, but from this node's own. Elsewhere sock is kept (a
// carrier may accept only the anycast address).
func (s *Server) towardPeer(next *sip.Uri, sock *socket) *socket {
	r := s.hooks.TxRelay
	if r == nil || next == nil {
		return sock
	}
	a, err := netip.ParseAddr(strings.Trim(next.Host, "[]"))
	if err != nil || !r.IsPeer(a.Unmap()) {
		return sock
	}
	if own := s.ownSocket(sock.cfg.Transport); own != nil {
		return own
	}
	return sock
}

// ownSocket is the listener on this node's own (not shared) SIP address
// for transport, or nil. Requests to other nodes leave from it: see
// towardPeer.
func (s *Server) ownSocket(transport string) *socket {
	r := s.hooks.TxRelay
	if r == nil {
		return nil
	}
	own, err := netip.ParseAddrPort(r.SelfAddr())
	if err != nil {
		return nil
	}
	for _, so := range s.sockets {
		if so.cfg.Transport == transport && so.ap.Addr().Unmap() == own.Addr().Unmap() {
			return so
		}
	}
	return nil
}

// Stray CANCELs and ACKs relayed to every node, per second and in a burst.
// A real misdelivery follows a routing change and comes in far lower
// numbers (one per call being set up or torn down through the moved path).
const (
	fanoutRate  = 2000
	fanoutBurst = 500
)

// bucket is a token bucket (the fan-out of stray CANCELs and ACKs).
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	rate   float64
	burst  float64
}

func newBucket(rate, burst float64) *bucket { return &bucket{tokens: burst, rate: rate, burst: burst} }

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
