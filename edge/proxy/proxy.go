// Package proxy is anyedge's stateful SIP proxy core (RFC 3261 §16): it
// forwards one request to a set of targets, in parallel or in groups one
// after the other, collects the responses in a response context, forwards
// provisional and 2xx responses at once, picks the best final response,
// and propagates CANCEL. It also forwards statelessly what has no
// transaction: ACK for 2xx and responses that match no client transaction.
//
// The proxy does no routing decisions: the edge server resolves targets
// (user location, NAT flows, upstreams) and hands a Plan to Forward. The
// transaction and transport layers are sipgo's, behind the small Transport
// interface so that the core can be tested with a fake network.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Transport is what the proxy needs from the SIP stack.
type Transport interface {
	// Request starts a client transaction for req (sent at once).
	Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error)
	// WriteRequest sends a request without a transaction (ACK).
	WriteRequest(req *sip.Request) error
	// WriteResponse sends a response without a transaction.
	WriteResponse(res *sip.Response) error
}

// Config tunes the proxy. Zero values take the defaults documented on
// each field.
type Config struct {
	// Node is this node's cluster id, encoded into every Via branch so
	// that messages landing on another anycast node can be relayed to us.
	Node uint32
	// NoResponseTimeout ends a branch that has sent no response at all
	// (not even 100 Trying) in this time: the next hop is considered dead
	// and the next group, for example the next upstream, is tried. Default
	// 4 s: long enough for two UDP retransmissions, well inside the 32 s a
	// UAC waits (Kamailio's fr_timer is 5 s for the same reason).
	NoResponseTimeout time.Duration
	// InviteTimeout ends an INVITE branch that got a provisional response
	// but no final one in this time (RFC 3261 timer C, at least 3 min; we
	// default to 120 s like Kamailio's fr_inv_timer): the branch is
	// cancelled and counts as 408.
	InviteTimeout time.Duration
	// Sockets are our listeners: a Via or Route naming one of them is ours.
	Sockets []*Socket
}

// Proxy forwards requests statefully. It is safe for concurrent use.
type Proxy struct {
	cfg Config
	tp  Transport
	log *slog.Logger
	wg  sync.WaitGroup
}

// New returns a proxy over tp. log may be nil (discard).
func New(cfg Config, tp Transport, log *slog.Logger) *Proxy {
	if cfg.NoResponseTimeout <= 0 {
		cfg.NoResponseTimeout = 4 * time.Second
	}
	if cfg.InviteTimeout <= 0 {
		cfg.InviteTimeout = 120 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, tp: tp, log: log}
}

// Wait blocks until every goroutine the proxy started has returned. They
// end with their transactions, so call it after the transaction layer is
// closed.
func (p *Proxy) Wait() { p.wg.Wait() }

// Node is the node id the proxy writes into branches.
func (p *Proxy) Node() uint32 { return p.cfg.Node }

// Target is one place a request is forwarded to.
type Target struct {
	// URI becomes the Request-URI (a registered Contact, an upstream's
	// URI, or the unchanged Request-URI).
	URI sip.Uri
	// Dest is the "host:port" the request is sent to. Empty means the
	// next hop of RFC 3263: the first Route, else the Request-URI. It is
	// set for NATed contacts (the address the REGISTER came from) and for
	// upstreams.
	Dest string
	// Socket is the listener the request leaves from. Required.
	Socket *Socket
	// Routes are pushed as Route headers in front of the request's own
	// (a binding's Path, RFC 3327).
	Routes []sip.Uri
	// RRParams are added to our Record-Route for this branch only (the
	// callee's NAT flow).
	RRParams sip.HeaderParams
	// Headers replace same-named headers on this branch only (the relay
	// mark for a request sent on to a binding's home node).
	Headers []sip.Header
	// Pop is the number of leading Route headers of the request that name
	// us (Proxy.OwnRoutes): they are left off the copy (RFC 3261 §16.4).
	Pop int
}

// Plan says how one request is forwarded.
type Plan struct {
	// Groups are tried one after the other; the targets of a group are
	// forked in parallel. Parallel forking is one group; serial forking by
	// q-value is one group per q; upstream failover one group per upstream.
	Groups [][]Target
	// Next decides, when a group has failed with best final response code,
	// whether the next group is tried. nil: for any 3xx–5xx (RFC 3261
	// §16.6 sequential search); a 6xx ends the search in any case.
	Next func(code int) bool
	// In is the socket the request came in on: when a branch leaves from a
	// different one (another transport or address family), the request
	// gets a double Record-Route, one for each side.
	In *Socket
	// RecordRoute puts us on the route set of the dialog.
	RecordRoute bool
	// RRParams are added to every Record-Route (the dialog's from-tag and
	// the caller's NAT flow).
	RRParams sip.HeaderParams
	// Loop is the request's LoopHash, carried in our branches.
	Loop uint32
	// FailCode is the response a branch counts as when the request cannot
	// be sent at all (no connection). Default 503.
	FailCode int
	// OnDecided, when set, is told the outcome of every branch: its final
	// status, and whether we made it up (timeout, transport failure,
	// cancel). The edge feeds upstream health with it.
	OnDecided func(t Target, code int, local bool)
}

// Forward forwards req, received on stx, according to plan and returns
// when the response context is done: a final response has been sent
// upstream and, for INVITE, every branch has ended (so that a late 2xx of
// a cancelled branch is still passed on). It returns the final response
// sent upstream, nil when the request was cancelled.
//
// req is not modified: every branch is a copy.
func (p *Proxy) Forward(ctx context.Context, req *sip.Request, stx sip.ServerTransaction, plan Plan) *sip.Response {
	if plan.FailCode == 0 {
		plan.FailCode = sip.StatusServiceUnavailable
	}
	if plan.Next == nil {
		plan.Next = func(code int) bool { return code >= 300 && code < 600 }
	}
	rc := newResponseContext(p, ctx, req, stx, plan)
	return rc.run()
}

// nextHop is where a request goes when the target gives no address: the
// first Route (loose routing), else the Request-URI.
func nextHop(req *sip.Request, transport string) string {
	uri := &req.Recipient
	if r := req.Route(); r != nil {
		uri = &r.Address
	}
	port := uri.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
		if uri.IsEncrypted() {
			port = sip.DefaultTlsPort
		}
	}
	return net.JoinHostPort(strings.Trim(uri.Host, "[]"), strconv.Itoa(port))
}

// prepare builds the copy of req sent on one branch (RFC 3261 §16.6).
func (p *Proxy) prepare(req *sip.Request, t Target, plan Plan, branch string) *sip.Request {
	out := shallowCopy(req, t.URI)
	for range t.Pop {
		out.RemoveHeader("Route")
	}
	// The copy shares the Max-Forwards header with the original: replace
	// it, never decrement it in place.
	if mf := out.MaxForwards(); mf != nil {
		m := sip.MaxForwardsHeader(max(mf.Val(), 1) - 1)
		out.ReplaceHeader(&m)
	} else {
		m := sip.MaxForwardsHeader(70)
		out.AppendHeader(&m)
	}
	if len(t.Routes) > 0 {
		hs := make([]sip.Header, 0, len(t.Routes))
		for _, r := range t.Routes {
			hs = append(hs, &sip.RouteHeader{Address: *r.Clone()})
		}
		out.PrependHeader(hs...)
	}
	if plan.RecordRoute {
		params := append(append(sip.HeaderParams{}, plan.RRParams...), t.RRParams...)
		if plan.In != nil && plan.In != t.Socket {
			// Double Record-Route: the top entry faces the callee (its
			// route set is the list as is), the next the caller (its route
			// set is the list reversed).
			out.PrependHeader(t.Socket.RecordRoute(params), plan.In.RecordRoute(params))
		} else {
			out.PrependHeader(t.Socket.RecordRoute(params))
		}
	}
	for _, h := range t.Headers {
		out.RemoveHeader(h.Name())
		out.AppendHeader(h)
	}
	out.PrependHeader(t.Socket.Via(branch))
	p.address(out, t.Socket, t.Dest)
	return out
}

// shallowCopy is req with uri as its Request-URI, sharing req's header
// values and body: deep copies (sip.Request.Clone, here and for popping
// Routes) were a tenth of the CPU of a proxied call. Safe because nothing changes a header of a request
// once it is being forwarded: prepare only adds, replaces and removes
// headers of the copy, and sipgo's transaction layer only reads the ones
// it copies (non-2xx ACK, CANCEL), building new ones where they differ.
func shallowCopy(req *sip.Request, uri sip.Uri) *sip.Request {
	out := sip.NewRequest(req.Method, uri) // copies the URI's parameters
	out.SipVersion = req.SipVersion
	for _, h := range req.Headers() {
		out.AppendHeader(h)
	}
	out.SetBody(req.Body())
	out.SetTransport(req.Transport())
	out.SetSource(req.Source())
	out.SetDestination(req.Destination())
	out.Laddr = req.Laddr
	return out
}

// address sets where and from which socket out is sent.
func (p *Proxy) address(out *sip.Request, s *Socket, dest string) {
	out.SetTransport(sip.NetworkToUpper(s.Transport))
	if dest == "" {
		dest = nextHop(out, s.Transport)
	}
	out.SetDestination(dest)
	if s.Transport == "udp" {
		// Send from the listener itself: sipgo's UDP pool keys the listener
		// by its bound address.
		out.Laddr = s.Laddr
	} else {
		// Stream transports reuse the connection to dest when there is one
		// (a UA registered over TCP); never bind to the listener's port.
		out.Laddr = sip.Addr{}
	}
}

// Ours reports whether v is a Via we added: one of our sockets as sent-by
// and a branch owned by this node.
func (p *Proxy) Ours(v *sip.ViaHeader) bool {
	if v == nil {
		return false
	}
	b, _ := v.Params.Get("branch")
	node, _, ok := ParseBranch(b)
	if !ok || node != p.cfg.Node {
		return false
	}
	return p.socketOf(v.Host, v.Port, v.Transport) != nil
}

func (p *Proxy) socketOf(host string, port int, transport string) *Socket {
	host = strings.Trim(host, "[]")
	for _, s := range p.cfg.Sockets {
		if strings.EqualFold(strings.Trim(s.Host, "[]"), host) && s.Port == port &&
			(transport == "" || strings.EqualFold(transport, s.Transport)) {
			return s
		}
	}
	return nil
}

// Looped reports whether req already went through this node with the same
// loop hash: one of its Vias is ours and its branch carries loop.
func (p *Proxy) Looped(req *sip.Request, loop uint32) bool {
	for _, h := range req.GetHeaders("Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok || !p.Ours(v) {
			continue
		}
		b, _ := v.Params.Get("branch")
		if _, l, _ := ParseBranch(b); l == loop {
			return true
		}
	}
	return false
}

// ForwardStateless forwards a request that has no transaction (an ACK for
// a 2xx) to t. The branch is derived from the incoming top Via so that a
// retransmission gets the same one (RFC 3261 §16.11).
func (p *Proxy) ForwardStateless(req *sip.Request, t Target, loop uint32) error {
	seed := ""
	if v := req.Via(); v != nil {
		seed, _ = v.Params.Get("branch")
		seed += "|" + v.Host + "|" + strconv.Itoa(v.Port)
	}
	out := p.prepare(req, t, Plan{Loop: loop}, Branch(p.cfg.Node, loop, seed))
	return p.tp.WriteRequest(out)
}

// ErrNotOurs: a response whose top Via we did not add; it is dropped
// (RFC 3261 §18.1.2).
var ErrNotOurs = errors.New("proxy: response top Via is not ours")

// ForwardResponse forwards a response that matched no client transaction
// (for example a retransmitted 2xx after the transaction ended): it pops
// our Via and sends the response to the next one (RFC 3261 §16.7 when no
// context is found: act as a stateless proxy).
func (p *Proxy) ForwardResponse(res *sip.Response) error {
	if !p.Ours(res.Via()) {
		return ErrNotOurs
	}
	res.RemoveHeader("Via")
	v := res.Via()
	if v == nil {
		return errors.New("proxy: response has no Via left")
	}
	res.SetTransport(v.Transport)
	res.SetDestination(viaDestination(v))
	return p.tp.WriteResponse(res)
}

// viaDestination is where a response to v goes (RFC 3261 §18.2.2, RFC 3581):
// received (else sent-by host) and rport (else sent-by port).
func viaDestination(v *sip.ViaHeader) string {
	host := v.Host
	port := v.Port
	if r, ok := v.Params.Get("received"); ok && r != "" {
		host = r
	}
	if rp, ok := v.Params.Get("rport"); ok && rp != "" {
		if n, err := strconv.Atoi(rp); err == nil {
			port = n
		}
	}
	if port == 0 {
		port = sip.DefaultPort(v.Transport)
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}
