package edge

import (
	"errors"

	"github.com/emiago/sipgo/sip"
)

// An ACK over UDP that no transaction of ours waits for bypasses sipgo's
// transaction layer.
//
// The ACK of a 2xx has a branch of its own and matches no transaction: a
// proxy forwards it statelessly along the route set (RFC 3261 §16.11).
// sipgo still builds a whole server transaction for it (a context with a
// timer, two channels, a map entry, a goroutine), only for the handler to
// end it at once (bypassing it saved 6 % of the CPU per call in
// BenchmarkCallUDP). Here it is parsed in the read filter and handled on a goroutine
// of its own with a transaction that does nothing. An ACK that matches an
// INVITE server transaction (the ACK of a non-2xx, same branch) is left to
// sipgo, which absorbs it.

// fastAck takes a UDP ACK from the read filter; false leaves the datagram
// to sipgo (not an ACK, unparsable, or one its INVITE transaction absorbs).
func (s *Server) fastAck(props sip.TransportReadProps, data []byte) bool {
	sock, req := s.fastRequest(props, data, sip.ACK)
	if req == nil {
		return false
	}
	if s.stack.index.invite(req) != nil {
		return false // the ACK of a non-2xx: its transaction's
	}
	go s.serve(req, noTx{}, sock)
	return true
}

// noTx is the transaction of a request handled without one (the fast
// paths): it keeps no state, so it has nothing to end or wait for. Only
// sipgo's INVITE server transactions are ever watched for their end. As
// the transaction of an ACK, which gets no response, it sends none.
type noTx struct{}

func (noTx) Respond(*sip.Response) error        { return errNoResponse }
func (noTx) Acks() <-chan *sip.Request          { return nil }
func (noTx) OnCancel(sip.FnTxCancel) bool       { return false }
func (noTx) Terminate()                         {}
func (noTx) OnTerminate(sip.FnTxTerminate) bool { return false }
func (noTx) Done() <-chan struct{}              { return closedCh }
func (noTx) Err() error                         { return nil }

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

var errNoResponse = errors.New("edge: an ACK gets no response")
