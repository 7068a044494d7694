package edge

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// REGISTER over UDP bypasses sipgo's transaction layer.
//
// A registrar's only transaction duty is to absorb retransmissions: its
// final answer is computed once and resent as it is (RFC 3261 §17.2.2).
// sipgo keeps a whole server transaction for that (parsed request and
// response, state machine, timer, channels) for Timer J, 32 s over UDP:
// about 7 KB of pointer-rich heap per REGISTER, over 2 GB at 10,000/s,
// which the collector marks on every cycle. Here a UDP REGISTER is parsed
// in the read filter and handled on a goroutine of its own, and only its
// transaction key and the bytes of its final response are kept for
// Timer J: a retransmission gets those bytes again, and one that arrives
// while the first copy is still being handled is dropped.
//
// Everything else (other methods, stream transports, requests sipgo must
// answer as malformed) takes sipgo's path unchanged.

// regCacheMax bounds the entries kept; beyond it the oldest generation
// goes early (absorption then covers less than Timer J). At 10,000
// REGISTER/s, Timer J holds 320,000.
const regCacheMax = 1 << 20

// regCache keeps REGISTER transactions by key in nine generations, the
// newest first, rotated every eighth of Timer J: an entry lives between
// Timer J and 9/8 of it, and expiry costs one map drop per rotation, not a
// scan or a timer per entry. Server.Start sweeps it every rotation, so an
// idle node lets go of the last burst's responses too.
type regCache struct {
	mu      sync.Mutex
	gens    [9]map[string]*regEntry
	rotated time.Time
	span    time.Duration
	max     int
	now     func() time.Time
}

// regEntry is one REGISTER transaction: resp is its final response as
// sent, nil while the request is being handled.
type regEntry struct {
	resp []byte
	dest *net.UDPAddr
}

func newRegCache(now func() time.Time, timerJ time.Duration, max int) *regCache {
	c := &regCache{now: now, span: timerJ / 8, max: max, rotated: now()}
	for i := range c.gens {
		c.gens[i] = map[string]*regEntry{}
	}
	return c
}

// begin returns the entry of key and whether the caller created it (a new
// transaction) rather than found it (a retransmission).
func (c *regCache) begin(key string) (e *regEntry, created bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked()
	for _, g := range c.gens {
		if e := g[key]; e != nil {
			return e, false
		}
	}
	if len(c.gens[0]) >= c.max/len(c.gens) {
		c.rotateLocked()
	}
	e = &regEntry{}
	c.gens[0][key] = e
	return e, true
}

// finish records e's final response; the first one wins.
func (c *regCache) finish(e *regEntry, resp []byte, dest *net.UDPAddr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.resp != nil {
		return false
	}
	e.resp, e.dest = resp, dest
	return true
}

// answer is e's final response and its destination, nil while pending.
func (c *regCache) answer(e *regEntry) ([]byte, *net.UDPAddr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.resp, e.dest
}

// sweep drops the generations past Timer J.
func (c *regCache) sweep() {
	c.mu.Lock()
	c.expireLocked()
	c.mu.Unlock()
}

func (c *regCache) expireLocked() {
	now := c.now()
	for n := 0; now.Sub(c.rotated) >= c.span && n < len(c.gens); n++ {
		c.rotateLocked()
		c.rotated = c.rotated.Add(c.span)
	}
	if now.Sub(c.rotated) >= c.span {
		c.rotated = now // a long idle gap: everything is gone already
	}
}

func (c *regCache) rotateLocked() {
	last := len(c.gens) - 1
	copy(c.gens[1:], c.gens[:last])
	c.gens[0] = map[string]*regEntry{}
}

// len is the number of transactions kept.
func (c *regCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, g := range c.gens {
		n += len(g)
	}
	return n
}

// regMetrics count what the cache did with retransmissions, and what
// the in-flight bound shed.
type regMetrics struct {
	resent   prometheus.Counter
	absorbed prometheus.Counter
	shed     prometheus.Counter
}

func newRegMetrics(reg prometheus.Registerer, c *regCache) *regMetrics {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "anyedge_sip_register_retransmissions_total",
		Help: "Retransmitted UDP REGISTERs absorbed without a new transaction: resent (the final response sent again) or pending (dropped: the first copy was still being handled).",
	}, []string{"outcome"})
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "anyedge_sip_register_transactions",
		Help: "UDP REGISTER transactions kept to absorb retransmissions (for Timer J, 32 s, to 36 s).",
	}, func() float64 { return float64(c.len()) })
	shed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "anyedge_sip_register_shed_total",
		Help: "UDP REGISTERs dropped unread because max_registers_in_flight were being handled (overload; the UA retransmits).",
	})
	reg.MustRegister(v, g, shed)
	return &regMetrics{resent: v.WithLabelValues("resent"), absorbed: v.WithLabelValues("pending"), shed: shed}
}

// fastRegister takes a UDP REGISTER from the read filter. It returns false
// to leave the datagram to sipgo: not a REGISTER, unparsable, or without
// what a transaction key needs (sipgo answers those 400).
func (s *Server) fastRegister(props sip.TransportReadProps, data []byte) bool {
	if !startsWithMethod(data, sip.REGISTER) || s.regs == nil {
		return false
	}
	if s.regInflight.Load() >= int64(s.cfg.MaxRegistersInFlight) {
		// Before any parsing: shedding must cost less than handling.
		s.regm.shed.Inc()
		return true
	}
	sock, req := s.fastRequest(props, data, sip.REGISTER)
	if req == nil {
		return false
	}
	key, ok := regKey(req)
	if !ok {
		return false
	}
	e, created := s.regs.begin(key)
	if !created {
		if resp, dest := s.regs.answer(e); resp != nil {
			s.regm.resent.Inc()
			_, _ = sock.pc.WriteTo(resp, dest)
		} else {
			s.regm.absorbed.Inc()
		}
		return true
	}
	tx := &regTx{s: s, sock: sock, entry: e, src: props.RemoteAddr}
	s.regInflight.Add(1)
	go func() {
		defer s.regInflight.Add(-1)
		s.serve(req, tx, sock)
	}()
	return true
}

// sweepRegisters expires REGISTER transactions while no REGISTER comes
// in to do it.
func (s *Server) sweepRegisters(ctx context.Context) {
	t := time.NewTicker(s.regs.span)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.regs.sweep()
		}
	}
}

// fastRequest parses a UDP datagram for a read-filter fast path: the
// listener it came in on and the request, if it is a method request with
// a Via and a CSeq, with its transport and source set as sipgo would;
// nil leaves the datagram to sipgo, which answers what it cannot parse.
func (s *Server) fastRequest(props sip.TransportReadProps, data []byte, method sip.RequestMethod) (*socket, *sip.Request) {
	if !startsWithMethod(data, method) {
		return nil, nil
	}
	sock := s.socketByLocal(props.LocalAddr)
	if sock == nil {
		return nil, nil
	}
	msg, err := s.parser.ParseSIP(data)
	if err != nil {
		return nil, nil
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Method != method || req.Via() == nil || req.CSeq() == nil {
		return nil, nil
	}
	req.SetTransport("UDP")
	req.SetSource(props.RemoteAddr.String())
	return sock, req
}

// startsWithMethod: data's request line starts with method and a space.
func startsWithMethod(data []byte, method sip.RequestMethod) bool {
	n := len(method)
	return len(data) > n && data[n] == ' ' && string(data[:n]) == string(method)
}

// regKey is the server transaction key of RFC 3261 §17.2.3: the top Via's
// branch and sent-by (the method is always REGISTER here). Requests
// without an RFC 3261 branch are left to sipgo.
func regKey(req *sip.Request) (string, bool) {
	v := req.Via()
	cs := req.CSeq()
	if v == nil || cs == nil || cs.MethodName != sip.REGISTER {
		return "", false
	}
	if !rfc3261Branch(v) {
		return "", false
	}
	branch, _ := v.Params.Get("branch")
	return branch + "|" + strings.ToLower(v.Host) + "|" + strconv.Itoa(v.Port), true
}

// rfc3261Branch: v's branch has the magic cookie and more.
func rfc3261Branch(v *sip.ViaHeader) bool {
	if v == nil {
		return false
	}
	branch, _ := v.Params.Get("branch")
	return strings.HasPrefix(branch, sip.RFC3261BranchMagicCookie) && len(branch) > len(sip.RFC3261BranchMagicCookie)
}

// socketByLocal is the UDP listener whose read loop reported laddr.
func (s *Server) socketByLocal(laddr net.Addr) *socket {
	for _, sock := range s.sockets {
		if sock.pc != nil && sock.pc.LocalAddr() == laddr {
			return sock
		}
	}
	la := laddr.String()
	for _, sock := range s.sockets {
		if sock.pc != nil && sock.pc.LocalAddr().String() == la {
			return sock
		}
	}
	return nil
}

// regTx is the transaction of a REGISTER taken by fastRegister: it sends
// responses from the listener that received the request and records the
// final one for retransmissions; that record is all the state it keeps.
type regTx struct {
	noTx
	s     *Server
	sock  *socket
	entry *regEntry
	src   net.Addr
}

var regBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (t *regTx) Respond(res *sip.Response) error {
	buf := regBufs.Get().(*bytes.Buffer)
	buf.Reset()
	res.StringWrite(buf)
	b := bytes.Clone(buf.Bytes())
	regBufs.Put(buf)
	dest := udpDest(res, t.src)
	if res.StatusCode >= 200 && !t.s.regs.finish(t.entry, b, dest) {
		return nil // a second final response is never sent
	}
	_, err := t.sock.pc.WriteTo(b, dest)
	return err
}

// udpDest is where a response to a request from src goes (RFC 3261
// §18.2.2, RFC 3581): sipgo's Via-derived destination, which fixVia made
// an IP address; src if it is not one.
func udpDest(res *sip.Response, src net.Addr) *net.UDPAddr {
	if ap, err := netip.ParseAddrPort(res.Destination()); err == nil {
		return net.UDPAddrFromAddrPort(ap)
	}
	ua, _ := src.(*net.UDPAddr)
	return ua
}
