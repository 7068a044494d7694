package edge

import (
	"net"

	"github.com/emiago/sipgo/sip"
)

// A BYE over UDP is proxied statelessly (RFC 3261 §16.11).
//
// A stateful BYE cost a sipgo server and client transaction, each kept for
// Timer J or K (32 s over UDP) after the 200: most of the heap a call held
// and a large share of its CPU. A stateless proxy keeps nothing: the BYE
// is forwarded with a branch derived from the incoming one, so a
// retransmission is forwarded again under the same branch and absorbed by
// the next hop's transaction; the response, which matches no transaction
// of ours, is forwarded along its Via (absorbResponse), where the dialog
// tracker sees the BYE answered. What is lost is the proxy's own 408 when
// the next hop never answers; the UAC's transaction times out instead.

// fastBye takes a UDP BYE inside a dialog (a To tag) from the read filter;
// false leaves the datagram to sipgo.
func (s *Server) fastBye(props sip.TransportReadProps, data []byte) bool {
	if s.px == nil {
		return false
	}
	sock, req := s.fastRequest(props, data, sip.BYE)
	if req == nil || !hasToTag(req) || !rfc3261Branch(req.Via()) {
		return false // sipgo matches those without a branch by other rules
	}
	// The response will match no transaction and be sent through sipgo's
	// pool, by the address it goes to: map that address to the listener,
	// as sipgo's read loop does for every datagram it takes itself.
	if pool := s.tp.Pool("udp"); pool != nil {
		if c := pool.Get(sock.pc.LocalAddr().String()); c != nil {
			pool.Add(req.Source(), c)
			_, _ = c.TryClose() // a listener is never closed by its pool refs
		}
	}
	go s.serve(req, &statelessTx{sock: sock, src: props.RemoteAddr}, sock)
	return true
}

// statelessTx answers a request handled without a transaction (a BYE the
// proxy rejects): the response goes from the listener that received the
// request; a retransmission is handled again.
type statelessTx struct {
	noTx
	sock *socket
	src  net.Addr
}

func (t *statelessTx) Respond(res *sip.Response) error {
	_, err := t.sock.pc.WriteTo([]byte(res.String()), udpDest(res, t.src))
	return err
}
