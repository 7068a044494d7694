package proxy

import (
	"github.com/emiago/sipgo/sip"
)

// SocketFor returns our socket that uri names (host, port and transport),
// or nil when uri is not ours.
func (p *Proxy) SocketFor(uri *sip.Uri) *Socket {
	var any *Socket
	tp, hasTP := uri.UriParams.Get("transport")
	for _, s := range p.cfg.Sockets {
		if !s.Owns(uri) {
			continue
		}
		if hasTP && tp != "" {
			return s
		}
		if any == nil {
			any = s
		}
	}
	return any
}

// PopRoutes applies RFC 3261 §16.4 to req, which must be the proxy's own
// copy. When the Request-URI is one of our Record-Route URIs (the previous
// hop was a strict router), the last Route becomes the Request-URI. Then
// every leading Route naming us is removed: two of them for a double
// Record-Route. It returns the removed URIs in order; the socket of the
// last one faces the next hop.
func (p *Proxy) PopRoutes(req *sip.Request) []sip.Uri {
	if _, lr := req.Recipient.UriParams.Get("lr"); lr && p.SocketFor(&req.Recipient) != nil {
		if routes := req.GetHeaders("Route"); len(routes) > 0 {
			if last, ok := routes[len(routes)-1].(*sip.RouteHeader); ok {
				req.Recipient = *last.Address.Clone()
				removeLast(req, "Route")
			}
		}
	}
	var popped []sip.Uri
	for {
		r := req.Route()
		if r == nil || p.SocketFor(&r.Address) == nil {
			return popped
		}
		popped = append(popped, *r.Address.Clone())
		req.RemoveHeader("Route")
	}
}

// OwnRoutes reads what PopRoutes would remove without changing req: the
// number of leading Routes naming us, the last of them (nil when none)
// and the Route after them (nil when none). strict is true when the
// Request-URI is one of our Record-Route URIs (the previous hop was a
// strict router): only PopRoutes on a copy can rewrite that request.
func (p *Proxy) OwnRoutes(req *sip.Request) (n int, last, next *sip.Uri, strict bool) {
	if _, lr := req.Recipient.UriParams.Get("lr"); lr && p.SocketFor(&req.Recipient) != nil && req.Route() != nil {
		return 0, nil, nil, true
	}
	for _, h := range req.GetHeaders("Route") {
		r, ok := h.(*sip.RouteHeader)
		if !ok {
			return n, last, nil, false
		}
		if p.SocketFor(&r.Address) == nil {
			return n, last, &r.Address, false
		}
		n++
		last = &r.Address
	}
	return n, last, nil, false
}

// removeLast removes the last header called name.
func removeLast(req *sip.Request, name string) {
	hs := req.GetHeaders(name)
	if len(hs) == 0 {
		return
	}
	keep := make([]sip.Header, 0, len(hs)-1)
	for _, h := range hs[:len(hs)-1] {
		keep = append(keep, h)
	}
	for req.RemoveHeader(name) {
	}
	for _, h := range keep {
		req.AppendHeader(h)
	}
}
