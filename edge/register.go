package edge

import (
	"runtime/debug"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/registrar"
)

// handleRegister authenticates a REGISTER (when auth is on) and hands it
// to the registrar. Only our own domains are registered here: a REGISTER
// for another domain is not relayed (403).
func (s *Server) handleRegister(r *request) {
	req := r.req
	if !s.isLocalDomain(req.Recipient.Host) {
		s.done(r)
		s.m.denied.WithLabelValues("register_domain").Inc()
		r.tx.reply(sip.StatusForbidden, "Domain Not Served Here")
		return
	}
	if s.auth != nil && !s.authenticate(r, false) {
		return
	}
	// With geo, the 200 leaves when the HA partner has the binding: send
	// may run later, on the goroutine that took the partner's ack.
	r.tx.deferred.Store(true)
	s.registrar.HandleAsync(r.ctx, req, registrar.Source{
		Addr:      req.Source(),
		Transport: strings.ToLower(req.Transport()),
		Socket:    r.in.ps.Name,
	}, func(res *sip.Response) {
		defer func() {
			if p := recover(); p != nil { // not on a handler goroutine: serve's recover is not there
				s.m.panics.Inc()
				s.log.Error("panic sending a REGISTER response", "panic", p, "call_id", callID(req), "stack", string(debug.Stack()))
			}
		}()
		s.done(r)
		if res == nil {
			r.tx.reply(sip.StatusInternalServerError, "Server Internal Error")
			return
		}
		_ = r.tx.Respond(res)
		if res.StatusCode == sip.StatusOK && s.trackAoRs {
			if to := req.To(); to != nil {
				s.tracker.Add(aorOf(to.Address))
			}
		}
	})
}

// authenticate runs digest auth on a request; it answers the request
// itself and returns false unless the sender is authenticated. proxy
// selects 407/Proxy-Authorization (requests relayed) over 401/
// Authorization (REGISTER).
func (s *Server) authenticate(r *request, proxy bool) bool {
	out := s.auth.check(r.req, r.req.Source(), proxy)
	switch out.verdict {
	case authOK:
		r.user = out.user
		return true
	case authChallenge:
		s.done(r)
		_ = r.tx.Respond(out.res)
	case authForbidden:
		s.done(r)
		s.m.authFail.WithLabelValues("forbidden").Inc()
		if out.res != nil {
			_ = r.tx.Respond(out.res)
		} else {
			r.tx.reply(sip.StatusForbidden, "Forbidden")
		}
	case authDrop:
		// A blocked source gets nothing: answering would confirm to a
		// scanner that a SIP server is here.
		s.done(r)
		s.m.authFail.WithLabelValues("blocked").Inc()
	}
	return false
}
