package edge

import (
	"crypto/hmac"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/nat"
	"github.com/anyedge/anyedge/edge/proxy"
)

// dialogRoute is where an in-dialog request goes after our Routes are
// popped (RFC 3261 §16.4 and §16.12).
type dialogRoute struct {
	fwd    *sip.Request // the request to forward: target.Pop Routes of ours lead it
	target proxy.Target
	// byURI: no route of ours was on it; a trusted peer has us relay it
	// along its Request-URI.
	byURI bool
}

// routeInDialog preprocesses the routes of an in-dialog request (or an ACK)
// and decides its next hop; ok is false when we must not relay it: it is
// not on a route set of ours, or the route's signature is wrong and the
// sender is not trusted. The request itself is left untouched, since
// sipgo reads it concurrently (for its automatic responses): our Routes
// are counted here and left off the branch's copy (Target.Pop).
func (s *Server) routeInDialog(r *request) (dialogRoute, bool) {
	fwd := r.req
	pop, last, next, strict := s.px.OwnRoutes(fwd)
	if strict {
		// The previous hop strict-routed to us (rare): rewrite a copy.
		fwd = fwd.Clone()
		popped := s.px.PopRoutes(fwd)
		pop, last, next = 0, nil, nil
		if len(popped) > 0 {
			last = &popped[len(popped)-1]
		}
		if rt := fwd.Route(); rt != nil {
			next = &rt.Address
		}
	}
	trusted := s.isTrusted(r.src)
	if last == nil {
		// Not through our Record-Route: only trusted peers may have us
		// relay along the Request-URI.
		if !trusted {
			return dialogRoute{}, false
		}
		return dialogRoute{fwd: fwd, target: proxy.Target{URI: fwd.Recipient, Socket: r.in.ps}, byURI: true}, true
	}
	params := last.UriParams
	ftag, _ := params.Get(rrFromTag)
	if !trusted {
		sig, _ := params.Get(rrSig)
		if !hmac.Equal([]byte(sig), []byte(s.sign(callID(fwd), ftag))) {
			return dialogRoute{}, false
		}
	}
	out := s.px.SocketFor(last)
	var sock *socket
	for _, so := range s.sockets {
		if so.ps == out {
			sock = so
		}
	}
	if sock == nil {
		sock = r.in
	}
	sock = s.towardPeer(next, sock) // anycast.go
	t := proxy.Target{URI: fwd.Recipient, Socket: sock.ps, Pop: pop}
	if next == nil {
		// The next hop is the remote target itself: use its NAT flow when
		// we recorded one. From the caller (its from-tag) the request goes
		// to the callee, else to the caller.
		key := rrCallerFlow
		if fromTagOf(fwd) == ftag {
			key = rrCalleeFlow
		}
		if tok, ok := params.Get(key); ok {
			if f, err := nat.ParseFlow(tok); err == nil {
				t.Dest = f.Addr
				if f.Transport != sock.cfg.Transport {
					if o := s.socketFor(f.Transport, f.Addr); o != nil {
						t.Socket = o.ps
					}
				}
			}
		}
	}
	return dialogRoute{fwd: fwd, target: t}, true
}

// handleInDialog relays a request within a dialog along its route set.
func (s *Server) handleInDialog(r *request) {
	dr, ok := s.routeInDialog(r)
	s.done(r)
	if !ok {
		s.m.denied.WithLabelValues("dialog_route").Inc()
		r.tx.reply(sip.StatusForbidden, "Not On Route Set")
		return
	}
	if _, ok := r.tx.ServerTransaction.(*statelessTx); ok {
		// A UDP BYE (byefast.go): forwarded statelessly; its response
		// finds its way back through absorbResponse.
		if err := s.px.ForwardStateless(dr.fwd, dr.target, r.loop); err != nil {
			s.log.Debug("stateless forward failed", "method", r.req.Method, "call_id", callID(r.req), "error", err)
		}
		return
	}
	s.px.Forward(r.ctx, dr.fwd, s.inDialogTx(r), proxy.Plan{
		Groups:   [][]proxy.Target{{dr.target}},
		In:       r.in.ps,
		Loop:     r.loop,
		FailCode: sip.StatusRequestTimeout,
	})
}

// handleAck forwards an ACK that matched no transaction: the ACK of a 2xx,
// end to end along the route set (RFC 3261 §16.11 stateless). An ACK for a
// non-2xx is absorbed by the INVITE server transaction and never gets
// here, unless that transaction is gone or on another node.
//
// Every dialog through us is record-routed, so a 2xx ACK carries our
// Route. One without it, even from a trusted peer, is forwarded along its
// Request-URI only when the dialog tracker knows the dialog as answered:
// otherwise it is the hop-by-hop ACK of a failure (its transaction ended,
// or lives on another node behind the same anycast address), which must
// never travel on.
func (s *Server) handleAck(r *request) {
	if mf := r.req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return
	}
	r.loop = proxy.LoopHash(r.req)
	dr, ok := s.routeInDialog(r)
	s.done(r)
	if ok && dr.byURI && !s.answered(r.req) {
		ok = false
	}
	if !ok {
		// Perhaps the ACK of a non-2xx answered by another node behind
		// the same anycast address: that node's transaction absorbs it.
		if !s.relayToAll(txAck, r.req) {
			s.m.denied.WithLabelValues("stray_ack").Inc()
		}
		return
	}
	if err := s.px.ForwardStateless(dr.fwd, dr.target, r.loop); err != nil {
		s.log.Debug("ACK forward failed", "call_id", callID(r.req), "error", err)
	}
}

// dialogConfirmer is a DialogTracker that knows which dialogs were
// answered (edge/dialog's Service is one).
type dialogConfirmer interface {
	Confirmed(id DialogID) bool
}

// answered reports whether the tracker knows req's dialog as answered by
// a 2xx. Without a tracker that can tell, it is false.
func (s *Server) answered(req *sip.Request) bool {
	c, ok := s.hooks.Dialogs.(dialogConfirmer)
	return ok && c.Confirmed(DialogID{CallID: callID(req), FromTag: fromTagOf(req), ToTag: toTagOf(req)})
}
