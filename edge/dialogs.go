package edge

import (
	"context"
	"errors"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/dialog"
)

// ErrCallLimit is what a DialogTracker's Begin returns (wrapped or as is)
// when the caller has reached its concurrent-call limit: the INVITE gets
// 486 Busy Here.
var ErrCallLimit = dialog.ErrLimit

// DialogStart is a new INVITE about to be routed: its Call-ID, From tag,
// authenticated user (CallInfo.AuthUser, "" if none), From and To AoRs
// and CSeq.
type DialogStart = dialog.Start

// DialogID is an in-dialog request's Call-ID, From tag and To tag.
type DialogID = dialog.DialogID

// DialogTracker keeps call state for the calls through this node
// (edge/dialog's Service is one). The server calls it on the paths a
// dialog goes through; every call must be quick.
type DialogTracker interface {
	// Begin records a new INVITE before it is routed. ErrCallLimit
	// refuses it with 486; any other error lets it through untracked.
	Begin(c DialogStart) error
	// Provisional: a 1xx (To tag may be empty) of a tracked INVITE was
	// passed on; route is its Record-Route, top first.
	Provisional(callID, fromTag, toTag string, route []string)
	// Answer: a 2xx of a tracked INVITE was passed on.
	Answer(callID, fromTag, toTag string, route []string)
	// InviteEnded: the INVITE's transaction is over (a failure was sent,
	// it was cancelled, or every branch has ended).
	InviteEnded(callID, fromTag string)
	// Request: an in-dialog request (from either end) is forwarded; false
	// when no dialog, own or a partner's replica, matches.
	Request(id DialogID, cseq uint32) bool
	// Bye: a BYE was answered (2xx, or a failure that ends the dialog).
	Bye(id DialogID) bool
}

type dialogCtxKey struct{}

// trackedCall is a tracked INVITE, carried in the request's context from
// handleInitial to where it is forwarded.
type trackedCall struct {
	t               DialogTracker
	callID, fromTag string
}

// beginDialog records a new INVITE with the tracker. False means it was
// refused and answered (486).
func (s *Server) beginDialog(r *request) bool {
	t := s.hooks.Dialogs
	if t == nil || !r.req.IsInvite() {
		return true
	}
	req := r.req
	st := DialogStart{CallID: callID(req), FromTag: fromTagOf(req), User: r.user}
	if f := req.From(); f != nil {
		st.Caller = aorOf(f.Address)
	}
	if to := req.To(); to != nil {
		st.Callee = aorOf(to.Address)
	}
	if cs := req.CSeq(); cs != nil {
		st.CSeq = cs.SeqNo
	}
	if err := t.Begin(st); err != nil {
		if errors.Is(err, ErrCallLimit) {
			s.done(r)
			r.tx.reply(sip.StatusBusyHere, "Busy Here")
			return false
		}
		return true // forwarded untracked; the tracker counts why
	}
	r.ctx = context.WithValue(r.ctx, dialogCtxKey{}, &trackedCall{t: t, callID: st.CallID, fromTag: st.FromTag})
	return true
}

// endDialog: the INVITE's handling is over, whatever happened to it (a
// 404 before routing, a CANCEL, the branches done).
func (s *Server) endDialog(r *request) {
	if c, ok := r.ctx.Value(dialogCtxKey{}).(*trackedCall); ok {
		c.t.InviteEnded(c.callID, c.fromTag)
	}
}

// dialogTx is the server transaction a forwarded request answers on:
// for a tracked INVITE, one that reports the responses passed on.
func (s *Server) dialogTx(r *request) sip.ServerTransaction {
	c, ok := r.ctx.Value(dialogCtxKey{}).(*trackedCall)
	if !ok {
		return r.tx
	}
	// Recorded before it is sent: a caller may answer a 2xx with ACK and
	// BYE at once, and the BYE must find the confirmed dialog.
	return &trackedTx{srvTx: r.tx, before: true, on: func(res *sip.Response) {
		tag := toTagOf(res)
		switch code := res.StatusCode; {
		case code < 200:
			c.t.Provisional(c.callID, c.fromTag, tag, recordRouteOf(res))
		case code < 300:
			c.t.Answer(c.callID, c.fromTag, tag, recordRouteOf(res))
		default:
			c.t.InviteEnded(c.callID, c.fromTag)
		}
	}}
}

// inDialogTx tells the tracker of an in-dialog request and returns the
// transaction to forward it on: for a BYE, one that ends the dialog on
// its final response (RFC 5057: a 481 or 408 ends it too; only an auth
// challenge leaves it up).
func (s *Server) inDialogTx(r *request) sip.ServerTransaction {
	t := s.hooks.Dialogs
	if t == nil {
		return r.tx
	}
	req := r.req
	id := DialogID{CallID: callID(req), FromTag: fromTagOf(req), ToTag: toTagOf(req)}
	if req.Method != sip.BYE {
		var cseq uint32
		if cs := req.CSeq(); cs != nil {
			cseq = cs.SeqNo
		}
		t.Request(id, cseq)
		return r.tx
	}
	return &trackedTx{srvTx: r.tx, on: func(res *sip.Response) {
		if byeEnds(res.StatusCode) {
			t.Bye(id)
		}
	}}
}

// byeEnds: a final answer to a BYE ends the dialog, unless it is a
// challenge (the BYE comes again with credentials).
func byeEnds(code int) bool {
	return code >= 200 && code != sip.StatusUnauthorized && code != sip.StatusProxyAuthRequired
}

// trackedTx reports every response sent upstream.
type trackedTx struct {
	*srvTx
	on     func(*sip.Response)
	before bool // report each response before sending it, not after
}

func (t *trackedTx) Respond(res *sip.Response) error {
	if t.before {
		t.on(res)
		return t.srvTx.Respond(res)
	}
	err := t.srvTx.Respond(res)
	t.on(res)
	return err
}

func toTagOf(m interface{ To() *sip.ToHeader }) string {
	if to := m.To(); to != nil {
		tag, _ := to.Params.Get("tag")
		return tag
	}
	return ""
}

func recordRouteOf(res *sip.Response) []string {
	hs := res.GetHeaders("Record-Route")
	if len(hs) == 0 {
		return nil
	}
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Value())
	}
	return out
}

var _ DialogTracker = (*dialog.Service)(nil)
