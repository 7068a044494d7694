package edge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/nat"
	"github.com/anyedge/anyedge/edge/proxy"
	"github.com/anyedge/anyedge/edge/registrar"
)

// handleInitial routes an out-of-dialog request: to a local user through
// the location store, or to the upstreams. Who may do what:
//
//   - trusted sources (config trusted, the upstreams): anything;
//   - with auth.invite: everybody else must authenticate (407);
//   - local domain without auth.invite: anybody may reach a local user;
//   - other domains: only authenticated users, or, with auth disabled,
//     users whose REGISTER came from the same IP. Anything else is 403:
//     an edge is never an open relay.
func (s *Server) handleInitial(r *request) {
	req := r.req
	r.relay = req.GetHeader(RelayHeader) != nil && s.hooks.RelayPeer != nil && s.hooks.RelayPeer(r.src)
	trusted := r.relay || s.isTrusted(r.src)
	local := req.Recipient.User != "" && !strings.EqualFold(req.Recipient.Scheme, "tel") && s.isLocalDomain(req.Recipient.Host)
	authed := false
	if !trusted && s.auth != nil && (s.cfg.Auth.inviteAuth() || !local) {
		if !s.authenticate(r, true) {
			return
		}
		authed = true
	}
	if !local && !trusted && !authed {
		if !s.registeredSource(r) {
			s.done(r)
			s.m.denied.WithLabelValues("relay").Inc()
			r.tx.reply(sip.StatusForbidden, "Relaying Denied")
			return
		}
	}
	if req.IsInvite() && s.hooks.BeforeNewDialog != nil {
		if res := s.hooks.BeforeNewDialog(req, CallInfo{Source: r.src, AuthUser: r.user}); res != nil {
			s.done(r)
			_ = r.tx.Respond(res)
			return
		}
	}
	if !s.beginDialog(r) {
		return
	}
	defer s.endDialog(r)
	if local {
		s.routeLocal(r)
		return
	}
	s.routeUpstream(r)
}

// registeredSource reports whether the sender is a registered local user
// calling from the address it registered from (used with auth disabled).
func (s *Server) registeredSource(r *request) bool {
	from := r.req.From()
	if from == nil || !s.isLocalDomain(from.Address.Host) {
		return false
	}
	bs, err := s.store.Lookup(r.ctx, aorOf(from.Address))
	if err != nil {
		return false
	}
	for _, b := range bs {
		if hostOf(b.Received) == r.src.String() {
			return true
		}
	}
	return false
}

// routeLocal forks a request for a local AoR to its contacts.
func (s *Server) routeLocal(r *request) {
	req := r.req
	aor := aorOf(req.Recipient)
	var bs []location.Binding
	var err error
	if ll, ok := s.store.(LocalLookup); ok && r.relay {
		bs, err = ll.LookupLocal(r.ctx, aor)
	} else {
		bs, err = s.store.Lookup(r.ctx, aor)
	}
	if err != nil {
		s.done(r)
		if errors.Is(err, location.ErrUnavailable) {
			r.tx.reply(sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
			return
		}
		s.log.Error("location lookup failed", "aor", aor, "error", err)
		r.tx.reply(sip.StatusInternalServerError, "Server Internal Error")
		return
	}
	if len(bs) == 0 {
		s.done(r)
		// 404 vs 480: only the subscriber list knows whether an AoR that
		// has no binding exists. Without auth there is no such list and
		// an AoR with no binding is indistinguishable from a typo: 404.
		if s.auth != nil && s.auth.known(req.Recipient.User, strings.ToLower(req.Recipient.Host)) {
			r.tx.reply(sip.StatusTemporarilyUnavailable, "Temporarily Unavailable")
			return
		}
		r.tx.reply(sip.StatusNotFound, "Not Found")
		return
	}
	groups := s.bindingGroups(bs, req.Recipient, r.relay)
	if len(groups) == 0 {
		s.done(r)
		r.tx.reply(sip.StatusTemporarilyUnavailable, "Temporarily Unavailable")
		return
	}
	plan := proxy.Plan{
		Groups:      groups,
		In:          r.in.ps,
		RecordRoute: recordRoutes(req.Method),
		RRParams:    s.rrParams(r),
		Loop:        r.loop,
		FailCode:    sip.StatusTemporarilyUnavailable,
	}
	s.done(r)
	s.px.Forward(r.ctx, req, s.dialogTx(r), plan)
}

// bindingGroups turns bindings into proxy targets, forked in parallel (one
// group) or serially by q (one group per q-value, highest first; the store
// returns them sorted).
func (s *Server) bindingGroups(bs []location.Binding, ruri sip.Uri, relayed bool) [][]proxy.Target {
	var groups [][]proxy.Target
	lastQ := -1
	for _, b := range bs {
		if relayed && b.Home != 0 && b.Home != s.node {
			continue // never relay twice
		}
		t, ok := s.bindingTarget(b, ruri)
		if !ok {
			continue
		}
		if len(groups) == 0 || (s.cfg.Forking == ForkSerial && b.Q != lastQ) {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], t)
		lastQ = b.Q
	}
	return groups
}

// bindingTarget is where a request for one binding goes. A NATed contact
// is reached at its received address over the listener and transport its
// REGISTER used; the Contact stays the Request-URI.
func (s *Server) bindingTarget(b location.Binding, ruri sip.Uri) (proxy.Target, bool) {
	if b.Home != 0 && b.Home != s.node {
		// Homed on another node: relay there with the Request-URI as it
		// is and a relay mark; the home looks up its own bindings and
		// reaches the UA over its NAT binding.
		if s.hooks.HomeAddr == nil {
			return proxy.Target{}, false
		}
		addr, ok := s.hooks.HomeAddr(b.Home)
		if !ok {
			return proxy.Target{}, false
		}
		// From this node's own address when it has one: the home holds
		// the anycast address too and drops a packet from it as a martian.
		sock := s.ownSocket("udp")
		if sock == nil {
			sock = s.socketFor("udp", addr)
		}
		if sock == nil {
			return proxy.Target{}, false
		}
		s.m.relayed.Inc()
		mark := sip.NewHeader(RelayHeader, strconv.FormatUint(uint64(s.node), 10))
		return proxy.Target{URI: *ruri.Clone(), Dest: addr, Socket: sock.ps, Headers: []sip.Header{mark}}, true
	}
	var uri sip.Uri
	if err := parseContact(b.Contact, &uri); err != nil {
		s.log.Warn("unusable contact in location store", "aor", b.AoR, "contact", b.Contact, "error", err)
		return proxy.Target{}, false
	}
	route := nat.RouteFor(b)
	sock := s.socketByName(route.Socket)
	if sock == nil || sock.cfg.Transport != route.Transport {
		sock = s.socketFor(route.Transport, route.Dest)
	}
	if sock == nil {
		return proxy.Target{}, false
	}
	t := proxy.Target{URI: uri, Dest: route.Dest, Socket: sock.ps}
	if route.Transport != "udp" && route.Dest != "" && !s.hasConnection(route.Transport, route.Dest) {
		if b.NATed {
			return proxy.Target{}, false // its connection is gone: unreachable
		}
		t.Dest = "" // dial the contact itself
	}
	for _, p := range b.Path {
		var pu sip.Uri
		if err := parseContact(p, &pu); err == nil {
			t.Routes = append(t.Routes, pu)
		}
	}
	if len(t.Routes) > 0 {
		t.Dest = ""
	}
	if f, ok := nat.FlowOf(b); ok && t.Dest != "" && (b.NATed || route.Transport != "udp") {
		t.RRParams = sip.HeaderParams{{K: rrCalleeFlow, V: f.String()}}
	}
	return t, true
}

// routeUpstream sends a request to the upstreams, one after the other:
// the next one on timeout, transport failure or 503.
func (s *Server) routeUpstream(r *request) {
	if s.upstreams == nil || s.upstreams.Len() == 0 {
		s.done(r)
		r.tx.reply(sip.StatusNotFound, "Not Found")
		return
	}
	var groups [][]proxy.Target
	for _, u := range s.upstreams.Order() {
		sock := s.socketFor(u.Transport, u.Addr)
		if sock == nil {
			continue
		}
		groups = append(groups, []proxy.Target{{URI: r.req.Recipient, Dest: u.Addr, Socket: sock.ps}})
	}
	if len(groups) == 0 {
		s.done(r)
		r.tx.reply(sip.StatusServiceUnavailable, "Service Unavailable")
		return
	}
	plan := proxy.Plan{
		Groups:      groups,
		Next:        failover,
		In:          r.in.ps,
		RecordRoute: recordRoutes(r.req.Method),
		RRParams:    s.rrParams(r),
		Loop:        r.loop,
		FailCode:    sip.StatusServiceUnavailable,
		OnDecided: func(t proxy.Target, code int, local bool) {
			ok := !(code == sip.StatusRequestTimeout && local) && code != sip.StatusServiceUnavailable
			s.upstreams.Observe(t.Dest, ok)
			if !ok {
				s.m.failovers.Inc()
			}
		},
	}
	s.done(r)
	s.px.Forward(r.ctx, r.req, s.dialogTx(r), plan)
}

// failover: an upstream that timed out, could not be reached or is
// overloaded (503) is replaced by the next; any other answer is the
// core's final word (a 486 Busy is not retried elsewhere).
func failover(code int) bool {
	return code == sip.StatusRequestTimeout || code == sip.StatusServiceUnavailable
}

// recordRoutes: methods that create dialogs keep us on their route set.
func recordRoutes(m sip.RequestMethod) bool {
	switch m {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER, sip.NOTIFY:
		return true
	}
	return false
}

// Record-Route parameters of ours.
const (
	rrFromTag    = "ftag" // From tag of the initial request: tells the direction
	rrCallerFlow = "nc"   // caller's NAT flow (nat.Flow)
	rrCalleeFlow = "ne"   // callee's NAT flow
	rrSig        = "sg"   // signature: the route was made by us for this dialog
)

// rrParams are the Record-Route parameters of a new dialog: the from-tag,
// the caller's flow when it is behind NAT or on a stream transport (so
// requests from the callee reach it), and a signature.
func (s *Server) rrParams(r *request) sip.HeaderParams {
	req := r.req
	ftag := fromTagOf(req)
	p := sip.HeaderParams{{K: rrFromTag, V: ftag}}
	transport := strings.ToLower(req.Transport())
	natted := false
	if c := req.Contact(); c != nil {
		natted = registrar.DetectNAT(c.Address.Host, c.Address.Port, req.Via(), req.Source())
	}
	if !s.isTrusted(r.src) && (natted || transport != "udp") {
		p = append(p, sip.HeaderKV{K: rrCallerFlow, V: nat.Flow{Transport: transport, Addr: req.Source()}.String()})
	}
	p = append(p, sip.HeaderKV{K: rrSig, V: s.sign(callID(req), ftag)})
	return p
}

// sign binds a Record-Route to its dialog (Call-ID and from-tag) with the
// node's key: a forged or borrowed Route does not make us relay.
func (s *Server) sign(callID, ftag string) string {
	g, _ := signers.Get().(*signer)
	if g == nil || !bytes.Equal(g.key, s.rrKey) {
		g = &signer{key: s.rrKey, h: hmac.New(sha256.New, s.rrKey)}
	} else {
		g.h.Reset()
	}
	g.buf = append(append(append(g.buf[:0], callID...), 0), ftag...)
	g.h.Write(g.buf)
	sig := hex.EncodeToString(g.h.Sum(g.sum[:0])[:8])
	signers.Put(g)
	return sig
}

// signers are keyed HMACs kept for sign, which runs for every INVITE,
// ACK and BYE: hmac.New allocates and keys two SHA-256 states each time.
// A pooled one is used only with the key it was made with (each server
// of a process has its own).
var signers sync.Pool

type signer struct {
	key []byte
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}
