package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
)

// responseContext is RFC 3261 §16's response context for one forwarded
// request. All its state is owned by the goroutine running run(); branch
// watchers, timers and the CANCEL callback talk to it through channels.
type responseContext struct {
	p      *Proxy
	ctx    context.Context
	in     *sip.Request
	stx    sip.ServerTransaction
	plan   Plan
	invite bool

	events   chan event
	cancelCh chan struct{}
	quit     chan struct{}

	branches []*branch
	// inline is the one branch whose transaction the loop reads itself,
	// without a watch goroutine: usually the only one.
	inline    *branch
	group     int
	final     *sip.Response // sent upstream
	finalSent bool
	canceled  bool // the UAC cancelled: sipgo has answered 487 already
	stopped   bool // no more groups: a 2xx or 6xx was received, or CANCEL
}

type branch struct {
	t           Target
	req         *sip.Request
	tx          sip.ClientTransaction
	provisional bool
	alive       bool // may still deliver a final response
	decided     bool // has an outcome for best-response selection
	res         *sip.Response
	local       bool // res is synthesized by us
	wantCancel  bool // cancel as soon as a provisional response arrives
	cancelSent  bool
	timer       *time.Timer
	timerGen    int
}

type eventKind uint8

const (
	evResponse eventKind = iota
	evEnded
	evTimeout
)

type event struct {
	b    *branch
	kind eventKind
	res  *sip.Response
	err  error
	gen  int
}

func newResponseContext(p *Proxy, ctx context.Context, req *sip.Request, stx sip.ServerTransaction, plan Plan) *responseContext {
	return &responseContext{
		p: p, ctx: ctx, in: req, stx: stx, plan: plan,
		invite:   req.IsInvite(),
		events:   make(chan event, 4),
		cancelCh: make(chan struct{}, 1),
		quit:     make(chan struct{}),
	}
}

func (rc *responseContext) run() *sip.Response {
	defer close(rc.quit)
	defer rc.stopTimers()
	defer rc.handOff()
	if rc.invite {
		// Called by sipgo inside the server transaction's state machine,
		// which then answers 487 itself: only signal the loop here.
		// The callbacks below capture only what they use: sipgo keeps them
		// with its transactions for 32 s after the call is answered
		// (RFC 6026), and the whole context would stay on the heap.
		cancelCh := rc.cancelCh
		ok := rc.stx.OnCancel(func(*sip.Request) {
			select {
			case cancelCh <- struct{}{}:
			default:
			}
		})
		if !ok {
			return nil
		}
	}
	rc.startGroup(0)
	rc.progress()
	for !rc.done() {
		// The inline branch's channels; nil (never ready) without one.
		var responses <-chan *sip.Response
		var ended <-chan struct{}
		if b := rc.inline; b != nil {
			responses, ended = b.tx.Responses(), b.tx.Done()
		}
		select {
		case res := <-responses:
			b := rc.inline
			if res.StatusCode >= 200 {
				rc.inline = nil // as a watcher returns after a final response
			}
			rc.handle(event{b: b, kind: evResponse, res: res})
		case <-ended:
			b := rc.inline
			rc.inline = nil
			rc.handle(event{b: b, kind: evEnded, err: b.tx.Err()})
		case ev := <-rc.events:
			rc.handle(ev)
		case <-rc.cancelCh:
			rc.onCancel()
		case <-rc.ctx.Done():
			rc.abort()
			return rc.final
		}
		rc.progress()
	}
	return rc.final
}

// done: the final response is out and nothing can come that must still be
// passed on. For INVITE that means every branch has ended, since a branch
// we cancelled may still answer 2xx.
func (rc *responseContext) done() bool {
	if !rc.finalSent && !rc.canceled {
		return false
	}
	if !rc.invite {
		return true
	}
	for _, b := range rc.branches {
		if b.alive {
			return false
		}
	}
	return true
}

// progress starts the next group or sends the best final response once
// every branch of the current group has an outcome.
func (rc *responseContext) progress() {
	for !rc.finalSent && !rc.canceled {
		for _, b := range rc.branches {
			if !b.decided {
				return
			}
		}
		best, local := rc.best()
		code := sip.StatusTemporarilyUnavailable
		if best != nil {
			code = best.StatusCode
		}
		if !rc.stopped && rc.group+1 < len(rc.plan.Groups) && code < 600 && rc.plan.Next(code) {
			rc.startGroup(rc.group + 1)
			continue
		}
		rc.sendFinal(best, local)
		return
	}
}

func (rc *responseContext) startGroup(g int) {
	rc.group = g
	if g >= len(rc.plan.Groups) {
		return
	}
	for _, t := range rc.plan.Groups[g] {
		b := &branch{t: t}
		rc.branches = append(rc.branches, b)
		rc.send(b)
	}
}

// send starts the client transaction of a branch.
func (rc *responseContext) send(b *branch) {
	b.req = rc.p.prepare(rc.in, b.t, rc.plan, Branch(rc.p.cfg.Node, rc.plan.Loop, ""))
	tx, err := rc.p.request(b.req)
	if err != nil {
		rc.p.log.Debug("branch send failed", "dest", b.req.Destination(), "error", err)
		rc.decideLocal(b, rc.plan.FailCode)
		return
	}
	b.tx = tx
	b.alive = true
	if rc.invite {
		// 2xx retransmissions bypass the transaction's response channel:
		// pass them on so that the UAC's ACK stops them (RFC 6026).
		stx, p := rc.stx, rc.p
		tx.OnRetransmission(func(res *sip.Response) {
			if res.IsSuccess() && p.Ours(res.Via()) {
				res.RemoveHeader("Via")
				_ = stx.Respond(res)
			}
		})
	}
	rc.arm(b, rc.p.cfg.NoResponseTimeout)
	if rc.inline == nil {
		// Read by the loop itself: a goroutine and a channel hop less per
		// forwarded request in the usual case of one branch at a time.
		rc.inline = b
		return
	}
	rc.p.wg.Add(1)
	go rc.watch(b, tx)
}

// handOff gives a still open inline branch a watcher when the loop ends
// before it (a non-INVITE answered by another fork): sipgo blocks passing
// a response up until somebody reads it.
func (rc *responseContext) handOff() {
	if b := rc.inline; b != nil {
		rc.inline = nil
		rc.p.wg.Add(1)
		go rc.watch(b, b.tx)
	}
}

// watch relays one client transaction's responses to the loop until its
// final response or its end, for a branch other than the inline one.
func (rc *responseContext) watch(b *branch, tx sip.ClientTransaction) {
	defer rc.p.wg.Done()
	for {
		select {
		case res := <-tx.Responses():
			final := res.StatusCode >= 200 // the loop owns res once posted
			rc.post(event{b: b, kind: evResponse, res: res})
			if final {
				return
			}
		case <-tx.Done():
			rc.post(event{b: b, kind: evEnded, err: tx.Err()})
			return
		}
	}
}

func (rc *responseContext) post(ev event) {
	select {
	case rc.events <- ev:
	case <-rc.quit:
	}
}

func (rc *responseContext) arm(b *branch, d time.Duration) {
	if b.timer != nil {
		b.timer.Stop()
	}
	b.timerGen++
	gen := b.timerGen
	b.timer = time.AfterFunc(d, func() { rc.post(event{b: b, kind: evTimeout, gen: gen}) })
}

func (rc *responseContext) disarm(b *branch) {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.timerGen++
}

func (rc *responseContext) stopTimers() {
	for _, b := range rc.branches {
		rc.disarm(b)
	}
}

func (rc *responseContext) handle(ev event) {
	b := ev.b
	switch ev.kind {
	case evTimeout:
		if ev.gen != b.timerGen {
			return
		}
		rc.onTimeout(b)
	case evEnded:
		rc.disarm(b)
		b.alive = false
		if !b.decided {
			code := sip.StatusRequestTimeout
			switch {
			case errors.Is(ev.err, sip.ErrTransactionTransport):
				code = rc.plan.FailCode
			case rc.canceled:
				code = sip.StatusRequestTerminated
			}
			rc.decideLocal(b, code)
		}
	case evResponse:
		rc.onResponse(b, ev.res)
	}
}

func (rc *responseContext) onTimeout(b *branch) {
	b.timer = nil
	if !b.provisional {
		// Nothing at all from the next hop: consider it dead.
		rc.decideLocal(b, sip.StatusRequestTimeout)
		b.tx.Terminate()
		return
	}
	if rc.invite {
		// Ringing for too long (timer C): cancel the branch; it counts as
		// 408 whatever the 487 says.
		rc.decideLocal(b, sip.StatusRequestTimeout)
		rc.cancel(b)
	}
}

func (rc *responseContext) onResponse(b *branch, res *sip.Response) {
	// The top Via is ours (the transaction matched its branch): pop it.
	res.RemoveHeader("Via")
	code := res.StatusCode
	switch {
	case code < 200:
		if !b.provisional {
			b.provisional = true
			if rc.invite && !b.decided {
				rc.arm(b, rc.p.cfg.InviteTimeout)
			} else if !rc.invite {
				rc.disarm(b) // sipgo's timer F bounds the rest
			}
		}
		if b.wantCancel {
			rc.cancel(b)
		}
		if code > 100 && !rc.finalSent && !rc.canceled {
			_ = rc.stx.Respond(res)
		}
	case code < 300:
		rc.disarm(b)
		b.alive = false
		rc.decide(b, res, false)
		if !rc.invite {
			if !rc.finalSent && !rc.canceled {
				rc.respondFinal(res)
			}
			return
		}
		if rc.canceled || (rc.finalSent && !rc.final.IsSuccess()) {
			// The caller is gone or got a failure already: nobody will ACK
			// this 2xx, so end the callee's leg ourselves.
			rc.p.teardown(b.req, res, b.t)
			return
		}
		if !rc.finalSent {
			rc.respondFinal(res)
		} else {
			_ = rc.stx.Respond(res) // another fork answered too: pass it on
		}
		rc.stopped = true
		rc.cancelOthers(b)
	default:
		rc.disarm(b)
		b.alive = false
		rc.decide(b, res, false)
		if code >= 600 && rc.invite {
			// RFC 3261 §16.7 step 5: a 6xx ends the search.
			rc.stopped = true
			rc.cancelOthers(b)
		}
	}
}

// onCancel: the UAC cancelled. sipgo answers 200 to the CANCEL and 487 to
// the INVITE; we cancel every branch (RFC 3261 §16.10).
func (rc *responseContext) onCancel() {
	rc.canceled = true
	rc.stopped = true
	rc.cancelOthers(nil)
}

func (rc *responseContext) cancelOthers(except *branch) {
	for _, o := range rc.branches {
		if o != except && o.alive {
			rc.cancel(o)
			if !o.decided {
				rc.decideLocal(o, sip.StatusRequestTerminated)
			}
		}
	}
}

// cancel sends CANCEL for an INVITE branch once it is allowed: after a
// provisional response (RFC 3261 §9.1). A branch that never answers ends
// with its no-response timer.
func (rc *responseContext) cancel(b *branch) {
	if !rc.invite || b.cancelSent || !b.alive {
		return
	}
	if !b.provisional {
		b.wantCancel = true
		return
	}
	b.cancelSent = true
	rc.p.sendCancel(b.req)
}

func (rc *responseContext) decideLocal(b *branch, code int) {
	rc.decide(b, sip.NewResponse(code, reasonFor(code)), true)
}

// decide sets a branch's outcome, once.
func (rc *responseContext) decide(b *branch, res *sip.Response, local bool) {
	if b.decided {
		return
	}
	b.decided, b.res, b.local = true, res, local
	if rc.plan.OnDecided != nil {
		rc.plan.OnDecided(b.t, res.StatusCode, local)
	}
}

func (rc *responseContext) respondFinal(res *sip.Response) {
	rc.finalSent = true
	rc.final = res
	if err := rc.stx.Respond(res); err != nil {
		rc.p.log.Debug("respond upstream failed", "status", res.StatusCode, "error", err)
	}
}

// sendFinal sends the best final response (RFC 3261 §16.7 steps 6–7).
func (rc *responseContext) sendFinal(best *sip.Response, local bool) {
	if best == nil {
		best, local = sip.NewResponse(sip.StatusTemporarilyUnavailable, reasonFor(sip.StatusTemporarilyUnavailable)), true
	}
	out := best
	if local {
		out = sip.NewResponseFromRequest(rc.in, best.StatusCode, best.Reason, nil)
	} else if best.StatusCode == sip.StatusServiceUnavailable {
		// A 503 from downstream means that hop is overloaded, not that the
		// caller should avoid us: RFC 3261 §16.7 step 6 turns it into 500.
		out.StatusCode, out.Reason = sip.StatusInternalServerError, "Server Internal Error"
	}
	if c := out.StatusCode; c == sip.StatusUnauthorized || c == sip.StatusProxyAuthRequired {
		rc.mergeChallenges(out)
	}
	rc.respondFinal(out)
}

// mergeChallenges collects the challenges of every 401/407 branch into the
// response sent upstream (RFC 3261 §16.7 step 7).
func (rc *responseContext) mergeChallenges(out *sip.Response) {
	for _, b := range rc.branches {
		if b.res == nil || b.res == out || b.local {
			continue
		}
		for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
			for _, h := range b.res.GetHeaders(name) {
				out.AppendHeader(sip.HeaderClone(h))
			}
		}
	}
}

// best picks the final response to forward: a 6xx if any, else the lowest
// class; within a class, a specific answer beats a generic one (408, 480,
// 487, 500, 503) and a downstream answer beats one we made up.
func (rc *responseContext) best() (*sip.Response, bool) {
	var best *branch
	for _, b := range rc.branches {
		if b.res == nil || b.res.StatusCode < 300 {
			continue
		}
		if best == nil || better(b, best) {
			best = b
		}
	}
	if best == nil {
		return nil, true
	}
	return best.res, best.local
}

func better(a, b *branch) bool {
	ra, rb := rank(a), rank(b)
	return ra < rb
}

func rank(b *branch) int {
	c := b.res.StatusCode
	r := 0
	if c < 600 {
		r = (c / 100) * 100 // 300, 400, 500
	}
	switch c {
	case 408, 480, 487, 500, 503:
		r += 20
	}
	if b.local {
		r += 10
	}
	return r
}

// abort ends the context early (server shutdown).
func (rc *responseContext) abort() {
	for _, b := range rc.branches {
		if b.alive && b.tx != nil {
			b.tx.Terminate()
		}
	}
	if !rc.finalSent && !rc.canceled {
		rc.finalSent = true
		res := sip.NewResponseFromRequest(rc.in, sip.StatusServiceUnavailable, "Service Unavailable", nil)
		rc.final = res
		_ = rc.stx.Respond(res)
	}
}

func reasonFor(code int) string {
	switch code {
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 487:
		return "Request Terminated"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}
