package edge

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/maphash"
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
// Timer J and 9/8 of it, and expiry costs one generation dropped per
// rotation, not a scan or a timer per entry. Server.Start sweeps it every
// rotation, so an idle node lets go of the last burst's responses too.
//
// A finished transaction (hundreds of thousands at a high REGISTER rate)
// is kept as bytes in a generation's chunks, found through a map of key
// hashes to positions: neither holds a pointer, so the collector never
// scans them. As heap objects (key string, entry, response, address) they
// were most of a busy registrar's live heap, and every GC cycle marked
// them on the node's one core while replication and REGISTERs waited.
type regCache struct {
	mu      sync.Mutex
	gens    [9]*regGen
	rotated time.Time
	span    time.Duration
	max     int
	now     func() time.Time
	seed    maphash.Seed
}

// regGen is one generation.
type regGen struct {
	// pending: being handled, awaiting their final response; few (at most
	// max_registers_in_flight at a time).
	pending map[string]*regEntry
	// done: key hash → position of the finished transaction's record in
	// chunks (chunk index << 32 | offset).
	done   map[uint64]uint64
	chunks [][]byte
	n      int // transactions begun in this generation, pending or done
}

// regChunk is the size of a generation's record chunks; a bigger record
// gets a chunk of its own.
const regChunk = 256 << 10

// regEntry is one REGISTER transaction as begin returns it: a pending one
// (the same entry for every retransmission until it finishes), or a copy
// of a finished one's answer.
type regEntry struct {
	key  string
	gen  *regGen // the generation it is pending in
	done bool
	resp []byte
	dest *net.UDPAddr
}

func newRegCache(now func() time.Time, timerJ time.Duration, max int) *regCache {
	c := &regCache{now: now, span: timerJ / 8, max: max, rotated: now(), seed: maphash.MakeSeed()}
	for i := range c.gens {
		c.gens[i] = newRegGen()
	}
	return c
}

func newRegGen() *regGen {
	return &regGen{pending: map[string]*regEntry{}, done: map[uint64]uint64{}}
}

// begin returns the entry of key and whether the caller created it (a new
// transaction) rather than found it (a retransmission).
func (c *regCache) begin(key string) (e *regEntry, created bool) {
	h := maphash.String(c.seed, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked()
	if e := c.findLocked(h, key); e != nil {
		return e, false
	}
	if c.gens[0].n >= c.max/len(c.gens) {
		c.rotateLocked()
	}
	g := c.gens[0]
	e = &regEntry{key: key, gen: g}
	g.pending[key] = e
	g.n++
	return e, true
}

// finish records e's final response (copied); the first one wins.
func (c *regCache) finish(e *regEntry, resp []byte, dest *net.UDPAddr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.done {
		return false
	}
	e.done = true
	delete(e.gen.pending, e.key)
	// Into the newest generation: it may outlive Timer J by a rotation,
	// never fall short of it.
	g := c.gens[0]
	if g != e.gen {
		g.n++
	}
	g.store(maphash.String(c.seed, e.key), e.key, resp, dest)
	return true
}

// answer is e's final response and its destination, nil while pending.
func (c *regCache) answer(e *regEntry) ([]byte, *net.UDPAddr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.resp, e.dest
}

// A record: key length (2), key, address length (1), address, port (2),
// response length (4), response.
func (g *regGen) store(h uint64, key string, resp []byte, dest *net.UDPAddr) {
	var ip net.IP
	var port int
	if dest != nil {
		ip, port = dest.IP, dest.Port
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
	}
	if len(key) > 0xffff || len(ip) > 0xff {
		return // not a key regKey makes; not worth absorbing
	}
	size := 2 + len(key) + 1 + len(ip) + 2 + 4 + len(resp)
	ci := len(g.chunks) - 1
	if ci < 0 || cap(g.chunks[ci])-len(g.chunks[ci]) < size {
		g.chunks = append(g.chunks, make([]byte, 0, max(regChunk, size)))
		ci++
	}
	b := g.chunks[ci]
	off := len(b)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(ip)))
	b = append(b, ip...)
	b = binary.BigEndian.AppendUint16(b, uint16(port))
	b = binary.BigEndian.AppendUint32(b, uint32(len(resp)))
	b = append(b, resp...)
	g.chunks[ci] = b
	// Two keys with one hash in a generation: the later wins, and the
	// earlier one's retransmission is handled again (REGISTER handling is
	// idempotent for a repeated Call-ID and CSeq).
	g.done[h] = uint64(ci)<<32 | uint64(off)
}

// lookup is a copy of key's finished transaction, nil if not here.
func (g *regGen) lookup(h uint64, key string) *regEntry {
	pos, ok := g.done[h]
	if !ok {
		return nil
	}
	b := g.chunks[pos>>32][uint32(pos):]
	kl := int(binary.BigEndian.Uint16(b))
	if string(b[2:2+kl]) != key {
		return nil
	}
	b = b[2+kl:]
	il := int(b[0])
	ip := net.IP(bytes.Clone(b[1 : 1+il]))
	b = b[1+il:]
	port := int(binary.BigEndian.Uint16(b))
	rl := int(binary.BigEndian.Uint32(b[2:]))
	e := &regEntry{key: key, done: true, resp: bytes.Clone(b[6 : 6+rl])}
	if il > 0 {
		e.dest = &net.UDPAddr{IP: ip, Port: port}
	}
	return e
}

// findLocked is key's transaction (h its hash), pending or finished, nil
// if none.
func (c *regCache) findLocked(h uint64, key string) *regEntry {
	for _, g := range c.gens {
		if e := g.pending[key]; e != nil {
			return e
		}
		if e := g.lookup(h, key); e != nil {
			return e
		}
	}
	return nil
}

// has reports whether key has a transaction here, pending or finished.
func (c *regCache) has(key string) bool {
	h := maphash.String(c.seed, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.findLocked(h, key) != nil
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

// rotateLocked drops the oldest generation. Its pending entries (a handler
// slower than Timer J) finish into the newest one.
func (c *regCache) rotateLocked() {
	last := len(c.gens) - 1
	copy(c.gens[1:], c.gens[:last])
	c.gens[0] = newRegGen()
}

// len is the number of transactions kept.
func (c *regCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, g := range c.gens {
		n += g.n
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
	defer regBufs.Put(buf)
	res.StringWrite(buf)
	dest := udpDest(res, t.src)
	if res.StatusCode >= 200 && !t.s.regs.finish(t.entry, buf.Bytes(), dest) {
		return nil // a second final response is never sent
	}
	_, err := t.sock.pc.WriteTo(buf.Bytes(), dest)
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
