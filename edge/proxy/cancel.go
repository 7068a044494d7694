package proxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// sendCancel cancels a forwarded INVITE (RFC 3261 §9.1): same Request-URI,
// top Via (so the same branch), Route, From, To, Call-ID and CSeq number,
// sent the same way. Its responses are only drained.
func (p *Proxy) sendCancel(inv *sip.Request) {
	c := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	c.SipVersion = inv.SipVersion
	if v := inv.Via(); v != nil {
		c.AppendHeader(v.Clone())
	}
	for _, r := range inv.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(r))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	copyHeaders(c, inv, "From", "To", "Call-ID")
	if cs := inv.CSeq(); cs != nil {
		c.AppendHeader(&sip.CSeqHeader{SeqNo: cs.SeqNo, MethodName: sip.CANCEL})
	}
	c.SetBody(nil)
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	c.Laddr = inv.Laddr
	p.fireAndDrain(c)
}

// fireAndDrain sends req in a client transaction and discards its
// responses: CANCEL and the BYE of a teardown, whose outcome changes
// nothing for us.
func (p *Proxy) fireAndDrain(req *sip.Request) {
	tx, err := p.request(req)
	if err != nil {
		p.log.Debug("send failed", "method", req.Method, "dest", req.Destination(), "error", err)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-tx.Responses():
			case <-tx.Done():
				return
			}
		}
	}()
}

// request starts a client transaction for req. Connecting (a stream
// transport) or resolving a name is bounded by the no-response timeout;
// UDP to an address needs neither, nor the timer of a deadline.
func (p *Proxy) request(req *sip.Request) (sip.ClientTransaction, error) {
	if strings.EqualFold(req.Transport(), "udp") {
		if _, err := netip.ParseAddrPort(req.Destination()); err == nil {
			return p.tp.Request(context.Background(), req)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.NoResponseTimeout)
	defer cancel()
	return p.tp.Request(ctx, req)
}

func copyHeaders(dst, src *sip.Request, names ...string) {
	for _, n := range names {
		if h := src.GetHeader(n); h != nil {
			dst.AppendHeader(sip.HeaderClone(h))
		}
	}
}

// teardown ends the callee's leg of a 2xx that cannot be passed upstream
// (the caller cancelled, or already got a final failure): ACK it, so that
// the callee stops retransmitting, then BYE it. Without this the callee
// would ring into a dead call until its own timers give up.
func (p *Proxy) teardown(inv *sip.Request, res *sip.Response, t Target) {
	to := res.To()
	if to == nil {
		return
	}
	target := inv.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	// The callee's route set seen from the caller side: the Record-Route
	// of the 2xx reversed, without our own entries.
	rrs := res.GetHeaders("Record-Route")
	var routes []sip.Uri
	for i := len(rrs) - 1; i >= 0; i-- {
		rr, ok := rrs[i].(*sip.RecordRouteHeader)
		if !ok || p.socketOf(rr.Address.Host, portOr(rr.Address.Port, 5060), "") != nil {
			continue
		}
		routes = append(routes, rr.Address)
	}
	build := func(method sip.RequestMethod, seq uint32) *sip.Request {
		r := sip.NewRequest(method, *target.Clone())
		r.AppendHeader(t.Socket.Via(Branch(p.cfg.Node, 0, "")))
		for _, u := range routes {
			r.AppendHeader(&sip.RouteHeader{Address: *u.Clone()})
		}
		mf := sip.MaxForwardsHeader(70)
		r.AppendHeader(&mf)
		copyHeaders(r, inv, "From", "Call-ID")
		r.AppendHeader(sip.HeaderClone(to))
		r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		r.SetBody(nil)
		dest := t.Dest
		if len(routes) > 0 {
			dest = ""
		}
		p.address(r, t.Socket, dest)
		return r
	}
	seq := uint32(1)
	if cs := inv.CSeq(); cs != nil {
		seq = cs.SeqNo
	}
	if err := p.tp.WriteRequest(build(sip.ACK, seq)); err != nil {
		p.log.Debug("teardown ACK failed", "error", err)
	}
	p.fireAndDrain(build(sip.BYE, seq+1))
}

func portOr(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}
