package edge

import (
	"context"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/proxy"
	"github.com/anyedge/anyedge/edge/registrar"
)

// srvTx wraps a server transaction: it counts responses by class and
// remembers whether a final one was sent.
type srvTx struct {
	sip.ServerTransaction
	req   *sip.Request
	m     *metrics
	final atomic.Bool
	// deferred: the final response will be sent after the handler
	// returns (a REGISTER waiting for geo's replication ack).
	deferred atomic.Bool
}

func (t *srvTx) Respond(res *sip.Response) error {
	if res.MessageData.Destination() == "" {
		if d := viaDestination(res); d != "" {
			res.SetDestination(d)
		}
	}
	err := t.ServerTransaction.Respond(res)
	if err == nil {
		t.m.response(res.StatusCode)
	}
	if res.StatusCode >= 200 {
		t.final.Store(true)
	}
	return err
}

// viaDestination is sipgo's own destination for a response (its Via,
// RFC 3261 §18.2.2 and RFC 3581 received/rport) with an IPv6 host put in
// brackets: sipgo v1.7.3 joins host and port unbracketed and then fails
// to send ("too many colons"). "" leaves it to sipgo (IPv4, names).
func viaDestination(res *sip.Response) string {
	d := res.Destination()
	i := strings.LastIndexByte(d, ':')
	if i < 0 || !strings.Contains(d[:i], ":") || strings.HasPrefix(d, "[") {
		return ""
	}
	return net.JoinHostPort(d[:i], d[i+1:])
}

// reply answers with a response of our own.
func (t *srvTx) reply(code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(t.req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = t.Respond(res)
}

// request is one request being handled.
type request struct {
	ctx   context.Context
	req   *sip.Request
	tx    *srvTx
	in    *socket
	src   netip.Addr
	start time.Time
	loop  uint32
	user  string // the digest user, once authenticated
	relay bool   // relayed by a cluster peer: local bindings only
}

// onRequest is the transaction layer's handler: one call per new server
// transaction (retransmissions are absorbed before). It runs on a
// goroutine of its own and returns when the request is done.
func (s *Server) onRequest(req *sip.Request, tx *sip.ServerTx) { s.serve(req, tx, nil) }

// serve handles one request on its transaction: sipgo's, or a UDP
// REGISTER's own (regfast.go), which also names the listener in.
func (s *Server) serve(req *sip.Request, tx sip.ServerTransaction, in *socket) {
	if !s.enter() {
		tx.Terminate()
		return
	}
	defer s.leave()
	r := &request{ctx: s.ctx, req: req, tx: &srvTx{ServerTransaction: tx, req: req, m: s.m}, in: in, start: time.Now()}
	defer func() {
		if p := recover(); p != nil {
			s.m.panics.Inc()
			s.log.Error("panic in SIP request handler", "panic", p, "method", req.Method,
				"call_id", callID(req), "stack", string(debug.Stack()))
			if !req.IsAck() && !r.tx.final.Load() {
				func() {
					defer func() { _ = recover() }()
					r.tx.reply(sip.StatusInternalServerError, "Server Internal Error")
				}()
			}
		}
		if !r.tx.final.Load() && !r.tx.deferred.Load() {
			// Nothing was answered (ACK, dropped, aborted): end the
			// transaction now; with no final response sipgo has no timer
			// that would.
			tx.Terminate()
		}
	}()
	s.m.request(req.Method)
	if stx, ok := tx.(*sip.ServerTx); ok && req.IsInvite() {
		// Before fixVia touches the Via: a CANCEL or ACK relayed from
		// another node finds the transaction by its key (anycast.go).
		s.stack.index.addInvite(req, stx)
		// On CANCEL sipgo answers 487 itself: a final response, so the
		// transaction must live on to absorb the ACK, not be ended below.
		stx.OnCancel(func(*sip.Request) { r.tx.final.Store(true) })
	}
	fixVia(req)
	if req.IsInvite() {
		// At once rather than after sipgo's 200 ms: the UAC stops
		// retransmitting, and sipgo's own 100 timer, which reads the
		// request concurrently, is stopped before we modify anything.
		r.tx.reply(sip.StatusTrying, "Trying")
	}
	s.handle(r)
}

func (s *Server) handle(r *request) {
	req := r.req
	if code, reason, metric := s.validate(req); code != 0 {
		s.m.malformed.WithLabelValues(metric).Inc()
		if !req.IsAck() {
			r.tx.reply(code, reason)
		}
		return
	}
	if ap, err := netip.ParseAddrPort(req.Source()); err == nil {
		r.src = ap.Addr().Unmap()
	}
	if r.in == nil {
		r.in = s.inSocket(req)
	}
	switch req.Method {
	case sip.ACK:
		s.handleAck(r)
		return
	case sip.CANCEL:
		// A CANCEL matching a pending INVITE never gets here: sipgo's
		// transaction layer answers it and the proxy cancels the branches.
		// Behind anycast its INVITE may be on another node: relay it to
		// every node and answer 200 here (hop by hop; see anycast.go).
		s.done(r)
		if s.relayToAll(txCancel, req) {
			r.tx.reply(sip.StatusOK, "OK")
			return
		}
		r.tx.reply(sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	self := s.isSelf(req)
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 && !(self && req.Method == sip.OPTIONS) {
		s.done(r)
		r.tx.reply(sip.StatusTooManyHops, "Too Many Hops")
		return
	}
	r.loop = proxy.LoopHash(req)
	if s.px.Looped(req, r.loop) {
		s.done(r)
		r.tx.reply(sip.StatusLoopDetected, "Loop Detected")
		return
	}
	switch {
	case req.Method == sip.REGISTER:
		s.handleRegister(r)
	case hasToTag(req):
		s.handleInDialog(r)
	case self:
		s.handleSelf(r)
	default:
		s.handleInitial(r)
	}
}

// done records the processing time of a request answered or routed.
func (s *Server) done(r *request) { s.m.handled(r.req.Method, r.start) }

// handleSelf answers requests for the edge itself. OPTIONS is the
// keepalive and health check of phones, load balancers and upstreams.
func (s *Server) handleSelf(r *request) {
	s.done(r)
	allow := sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, PRACK, UPDATE, PUBLISH")
	if r.req.Method != sip.OPTIONS {
		r.tx.reply(sip.StatusMethodNotAllowed, "Method Not Allowed", allow)
		return
	}
	r.tx.reply(sip.StatusOK, "OK", allow, sip.NewHeader("Accept", "application/sdp"))
}

// isSelf: the Request-URI has no user and names one of our listeners,
// and the request is not being loose-routed through us.
func (s *Server) isSelf(req *sip.Request) bool {
	if req.Recipient.User != "" {
		return false
	}
	if _, lr := req.Recipient.UriParams.Get("lr"); lr {
		return false
	}
	return s.px.SocketFor(&req.Recipient) != nil || s.isLocalDomain(req.Recipient.Host)
}

// isLocalDomain: a configured domain, or the advertised or bound host of
// a listener.
func (s *Server) isLocalDomain(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	for _, d := range s.cfg.Domains {
		if d == host {
			return true
		}
	}
	for _, sock := range s.sockets {
		if strings.EqualFold(strings.Trim(sock.ps.Host, "[]"), host) || sock.ap.Addr().String() == host {
			return true
		}
	}
	return false
}

func (s *Server) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// onStrayResponse handles responses that match no client transaction:
// one whose Via names another node is relayed to that node (and only
// relayed); a 2xx retransmitted after our transaction ended is forwarded
// statelessly; anything else not ours is dropped.
func (s *Server) onStrayResponse(res *sip.Response) {
	if s.px == nil {
		return
	}
	if s.relayResponse(res) {
		return
	}
	s.absorbResponse(res)
}

// absorbResponse: a response of this node's with no transaction.
func (s *Server) absorbResponse(res *sip.Response) {
	if err := s.px.ForwardResponse(res); err != nil {
		s.log.Debug("stray response dropped", "status", res.StatusCode, "call_id", callID(res), "error", err)
		return
	}
	// Sent on, so counted like one a transaction sends: otherwise a 2xx
	// that overtook its transaction's own handling went uncounted.
	s.m.response(res.StatusCode)
	if cs := res.CSeq(); cs != nil && cs.MethodName == sip.BYE {
		// The answer to a BYE proxied statelessly (byefast.go) ends the
		// dialog, as trackedTx does for one proxied with a transaction.
		if t := s.hooks.Dialogs; t != nil && byeEnds(res.StatusCode) {
			t.Bye(DialogID{CallID: callID(res), FromTag: fromTagOf(res), ToTag: toTagOf(res)})
		}
	}
}

func hasToTag(req *sip.Request) bool {
	if to := req.To(); to != nil {
		if t, ok := to.Params.Get("tag"); ok && t != "" {
			return true
		}
	}
	return false
}

func callID(m sip.Message) string {
	if c := m.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

func fromTagOf(m interface{ From() *sip.FromHeader }) string {
	if f := m.From(); f != nil {
		t, _ := f.Params.Get("tag")
		return t
	}
	return ""
}

// aorOf is the canonical AoR of a SIP URI, the registrar's location key
// ("sip:alice@example.com"); "" when u cannot be an AoR.
func aorOf(u sip.Uri) string {
	aor, err := registrar.CanonicalAoR(&u)
	if err != nil {
		return ""
	}
	return aor
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
