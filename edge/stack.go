package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/nat"
	"github.com/anyedge/anyedge/edge/proxy"
	"github.com/anyedge/anyedge/edge/upstream"
)

// stack adapts sipgo's transaction and transport layers to
// proxy.Transport, and is the only way the server sends new messages. Once
// closed it refuses to send: sipgo would otherwise open a fresh socket on
// the port a closed listener just freed.
type stack struct {
	txl    *sip.TransactionLayer
	tp     *sip.TransportLayer
	index  txIndex
	mu     sync.RWMutex
	closed bool
}

var errClosed = errors.New("edge: server closed")

func (s *stack) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errClosed
	}
	tx, err := s.txl.Request(ctx, req)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	s.index.addClient(tx)
	return tx, nil
}

// txIndex finds this node's live transactions by sipgo's keys, so that a
// response, CANCEL or ACK relayed from another node (anycast.go) reaches
// its transaction exactly as one read from our socket does: sipgo keeps
// its own tables private.
type txIndex struct {
	mu      sync.Mutex
	clients map[string]*sip.ClientTx
	invites map[string]*sip.ServerTx
}

func (x *txIndex) addClient(tx *sip.ClientTx) {
	key := tx.Key()
	x.mu.Lock()
	if x.clients == nil {
		x.clients = map[string]*sip.ClientTx{}
	}
	x.clients[key] = tx
	x.mu.Unlock()
	// The callback only takes our lock: sipgo calls it outside the
	// transaction's own.
	if !tx.OnTerminate(func(string, error) { x.removeClient(key, tx) }) {
		x.removeClient(key, tx)
	}
}

func (x *txIndex) removeClient(key string, tx *sip.ClientTx) {
	x.mu.Lock()
	if x.clients[key] == tx {
		delete(x.clients, key)
	}
	x.mu.Unlock()
}

// client is the live client transaction res belongs to, or nil.
func (x *txIndex) client(res *sip.Response) *sip.ClientTx {
	key, err := sip.ClientTxKeyMake(res)
	if err != nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.clients[key]
}

// addInvite indexes an INVITE server transaction, for a relayed CANCEL or
// non-2xx ACK.
func (x *txIndex) addInvite(req *sip.Request, tx *sip.ServerTx) {
	key := tx.Key()
	x.mu.Lock()
	if x.invites == nil {
		x.invites = map[string]*sip.ServerTx{}
	}
	x.invites[key] = tx
	x.mu.Unlock()
	if !tx.OnTerminate(func(string, error) { x.removeInvite(key, tx) }) {
		x.removeInvite(key, tx)
	}
}

func (x *txIndex) removeInvite(key string, tx *sip.ServerTx) {
	x.mu.Lock()
	if x.invites[key] == tx {
		delete(x.invites, key)
	}
	x.mu.Unlock()
}

// invite is the INVITE server transaction that a CANCEL or ACK matches
// (RFC 3261 §9.2, §17.2.3: the INVITE's branch and sent-by), or nil.
func (x *txIndex) invite(req *sip.Request) *sip.ServerTx {
	m := req
	if req.IsCancel() {
		// sipgo keys by the CSeq method: match as the INVITE would.
		m = req.Clone()
		if cs := m.CSeq(); cs != nil {
			cs.MethodName = sip.INVITE
		}
	}
	key, err := sip.ServerTxKeyMake(m)
	if err != nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.invites[key]
}

func (s *stack) WriteRequest(req *sip.Request) error { return s.write(req) }

func (s *stack) WriteResponse(res *sip.Response) error { return s.write(res) }

func (s *stack) write(m sip.Message) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return s.tp.WriteMsg(m)
}

// close stops sending, then runs fn (closing listeners and sipgo) while no
// send is in progress.
func (s *stack) close(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	fn()
}

// socketByName finds a listener by its location.Binding.Socket name.
func (s *Server) socketByName(name string) *socket {
	for _, sock := range s.sockets {
		if sock.ps.Name == name {
			return sock
		}
	}
	return nil
}

// socketFor picks the listener for sending over transport to dest: same
// transport, same address family as dest when dest is an IP, the first
// configured one first.
func (s *Server) socketFor(transport, dest string) *socket {
	transport = strings.ToLower(transport)
	want6 := false
	if host, _, err := net.SplitHostPort(dest); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			want6 = a.Is6() && !a.Is4In6()
		}
	}
	var fallback *socket
	for _, sock := range s.sockets {
		if sock.cfg.Transport != transport {
			continue
		}
		if sock.ap.Addr().Is6() == want6 {
			return sock
		}
		if fallback == nil {
			fallback = sock
		}
	}
	return fallback
}

// soleListeners maps each transport with exactly one listener to it.
func soleListeners(socks []*socket) map[string]*socket {
	sole := map[string]*socket{}
	count := map[string]int{}
	for _, sock := range socks {
		count[sock.cfg.Transport]++
		sole[sock.cfg.Transport] = sock
	}
	for t, n := range count {
		if n > 1 {
			delete(sole, t)
		}
	}
	return sole
}

// inSocket is the listener a request came in on. sipgo does not record
// it, but its connection pools map the source address to the connection
// (the listener itself for UDP) that received from it.
func (s *Server) inSocket(req *sip.Request) *socket {
	transport := strings.ToLower(req.Transport())
	// The only listener of the transport needs no lookup, which costs a
	// pool lock and a formatted address per request.
	if only := s.sole[transport]; only != nil {
		return only
	}
	if c, err := s.tp.GetConnection(transport, req.Source()); err == nil {
		local := c.LocalAddr().String()
		_, _ = c.TryClose()
		if ap, err := netip.ParseAddrPort(local); err == nil {
			for _, sock := range s.sockets {
				if sock.cfg.Transport == transport && sock.ap == ap {
					return sock
				}
			}
			// A wildcard listener: match the port.
			for _, sock := range s.sockets {
				if sock.cfg.Transport == transport && sock.ap.Port() == ap.Port() && sock.ap.Addr().IsUnspecified() {
					return sock
				}
			}
		}
	}
	return s.socketFor(transport, req.Source())
}

// hasConnection reports whether a stream connection to addr is open.
func (s *Server) hasConnection(transport, addr string) bool {
	c, err := s.tp.GetConnection(transport, addr)
	if err != nil {
		return false
	}
	_, _ = c.TryClose()
	return true
}

// newOptions builds an OPTIONS request from sock to uri, sent to dest.
func (s *Server) newOptions(sock *socket, uri sip.Uri, dest string) *sip.Request {
	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(sock.ps.Via(proxy.Branch(s.node, 0, "")))
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "anyedge", Host: sock.ps.Host, Port: sock.ps.Port},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(16)}}}
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: uri.Scheme, User: uri.User, Host: uri.Host, Port: uri.Port}})
	cid := sip.CallIDHeader(sip.GenerateTagN(24))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	req.SetTransport(sip.NetworkToUpper(sock.cfg.Transport))
	req.SetDestination(dest)
	if sock.cfg.Transport == "udp" {
		req.Laddr = sock.ps.Laddr
	}
	return req
}

// options sends an OPTIONS and returns the first response (any class).
func (s *Server) options(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := s.stack.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	select {
	case res := <-tx.Responses():
		return res, nil
	case <-tx.Done():
		if err := tx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("transaction ended without a response")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// keepaliveProber sends NAT keepalives.
type keepaliveProber struct{ s *Server }

func (k keepaliveProber) Probe(ctx context.Context, b location.Binding, method string) error {
	s := k.s
	r := nat.RouteFor(b)
	sock := s.socketByName(r.Socket)
	if sock == nil {
		sock = s.socketFor(r.Transport, r.Dest)
	}
	if sock == nil {
		return fmt.Errorf("no %s listener", r.Transport)
	}
	if r.Transport != "udp" && !s.hasConnection(r.Transport, r.Dest) {
		// Never dial a UA: behind NAT its connection is the only way in,
		// and it is gone. It is dead until it reconnects and registers.
		return errors.New("connection to the UA is closed")
	}
	if method == nat.MethodCRLF {
		return s.writeCRLF(sock, r)
	}
	var uri sip.Uri
	if err := parseContact(b.Contact, &uri); err != nil {
		return err
	}
	_, err := s.options(ctx, s.newOptions(sock, uri, r.Dest))
	return err
}

// writeCRLF sends an RFC 5626 double-CRLF keepalive: from the listener for
// UDP, over the UA's own connection for TCP/TLS (a missing connection is a
// failure: the UA is unreachable until it reconnects).
func (s *Server) writeCRLF(sock *socket, r nat.Route) error {
	ping := []byte("\r\n\r\n")
	if sock.pc != nil {
		ua, err := net.ResolveUDPAddr("udp", r.Dest)
		if err != nil {
			return err
		}
		_, err = sock.pc.WriteTo(ping, ua)
		return err
	}
	c, err := s.tp.GetConnection(r.Transport, r.Dest)
	if err != nil {
		return err
	}
	defer func() { _, _ = c.TryClose() }()
	w, ok := c.(io.Writer)
	if !ok {
		return errors.New("connection cannot write raw bytes")
	}
	_, err = w.Write(ping)
	return err
}

// upstreamProber probes upstreams with OPTIONS: any answer but 408 or 503
// means up (a 404 or 405 still proves the element is alive and routing).
type upstreamProber struct{ s *Server }

func (u upstreamProber) Probe(ctx context.Context, t upstream.Target) error {
	s := u.s
	sock := s.socketFor(t.Transport, t.Addr)
	if sock == nil {
		return fmt.Errorf("no %s listener", t.Transport)
	}
	host, port, _ := net.SplitHostPort(t.Addr)
	uri := sip.Uri{Scheme: "sip", Host: host}
	uri.Port, _ = strconv.Atoi(port)
	res, err := s.options(ctx, s.newOptions(sock, uri, t.Addr))
	if err != nil {
		return err
	}
	if res.StatusCode == sip.StatusRequestTimeout || res.StatusCode == sip.StatusServiceUnavailable {
		return upstream.ErrUnhealthy
	}
	return nil
}

// parseContact parses a stored contact: a bare URI or a name-addr.
func parseContact(s string, uri *sip.Uri) error {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "<\"") {
		var params sip.HeaderParams
		_, err := sip.ParseAddressValue(s, uri, &params)
		return err
	}
	return sip.ParseUri(s, uri)
}
