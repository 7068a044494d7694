package bfd

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ControlPort is the UDP port of single-hop BFD Control packets (RFC 5881 §4).
const ControlPort = 3784

// Source ports of Control packets (RFC 5881 §4).
const (
	minSrcPort = 49152
	maxSrcPort = 65535
)

// ttlRequired is the TTL (hop limit) every packet is sent with and every
// received packet must carry (GTSM, RFC 5881 §5): only a directly
// connected system can deliver it.
const ttlRequired = 255

// Endpoint is the BFD I/O shell for one local address: it receives Control
// packets on port 3784 of that address and runs one session per peer, each
// with its own goroutine, timer and source port.
type Endpoint struct {
	local   netip.AddrPort
	log     *slog.Logger
	metrics *Metrics

	rx rxConn

	mu     sync.Mutex
	rand   *rand.Rand // discriminators, source ports; guarded by mu
	peers  map[netip.Addr]*Peer
	discrs map[uint32]bool
	closed bool

	wg sync.WaitGroup
}

// rxConn receives packets together with their TTL (hop limit).
type rxConn interface {
	read(b []byte) (n int, from netip.AddrPort, ttl int, err error)
	localAddr() netip.AddrPort
	Close() error
}

// txConn sends packets to one peer.
type txConn interface {
	Write(b []byte) (int, error)
	Close() error
}

// Option configures an Endpoint.
type Option func(*options)

type options struct {
	log     *slog.Logger
	metrics *Metrics
	port    uint16
	seed    *[32]byte
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMetrics records the endpoint's sessions and drops in m.
func WithMetrics(m *Metrics) Option { return func(o *options) { o.metrics = m } }

// WithPort sets the port to listen on, instead of 3784. Port 0 picks a free
// port (tests run several endpoints on one address that way).
func WithPort(port uint16) Option { return func(o *options) { o.port = port } }

// WithSeed seeds the endpoint's random source (discriminators, source
// ports, jitter), for reproducible tests. Default: a random seed.
func WithSeed(seed [32]byte) Option { return func(o *options) { o.seed = &seed } }

// Listen starts an endpoint on local, which must be an address of this
// host. The caller must Close it.
func Listen(local netip.Addr, opts ...Option) (*Endpoint, error) {
	o := options{port: ControlPort}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if !local.IsValid() || local.IsUnspecified() {
		return nil, fmt.Errorf("bfd: listen: need a local unicast address, got %v", local)
	}
	local = local.Unmap()
	seed := o.seed
	if seed == nil {
		seed = new([32]byte)
		crand.Read(seed[:])
	}
	rx, err := listenRx(netip.AddrPortFrom(local, o.port))
	if err != nil {
		return nil, fmt.Errorf("bfd: listen on %v: %w", netip.AddrPortFrom(local, o.port), err)
	}
	e := &Endpoint{
		local:   rx.localAddr(),
		log:     o.log,
		metrics: o.metrics,
		rx:      rx,
		rand:    rand.New(rand.NewChaCha8(*seed)),
		peers:   map[netip.Addr]*Peer{},
		discrs:  map[uint32]bool{},
	}
	e.wg.Add(1)
	go e.readLoop()
	return e, nil
}

// LocalAddr is the address and port the endpoint receives on.
func (e *Endpoint) LocalAddr() netip.AddrPort { return e.local }

// Add starts a session with peer (port 0 means 3784). cfg is validated
// (defaults filled). onChange, when not nil, is called on every state
// change from the session's goroutine, in order; it must not block.
func (e *Endpoint) Add(peer netip.AddrPort, cfg Config, onChange func(Change)) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bfd: %w", err)
	}
	addr := peer.Addr().Unmap()
	if !addr.IsValid() || addr.Is4() != e.local.Addr().Is4() {
		return nil, fmt.Errorf("bfd: peer %v: not in the address family of %v", peer.Addr(), e.local.Addr())
	}
	if peer.Port() == 0 {
		peer = netip.AddrPortFrom(addr, ControlPort)
	}
	peer = netip.AddrPortFrom(addr, peer.Port())

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("bfd: endpoint closed")
	}
	if _, ok := e.peers[addr]; ok {
		return nil, fmt.Errorf("bfd: a session with %v exists", addr)
	}
	discr := uint32(0)
	for discr == 0 || e.discrs[discr] {
		discr = e.rand.Uint32()
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], e.rand.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], e.rand.Uint64())
	binary.LittleEndian.PutUint64(seed[16:], e.rand.Uint64())
	binary.LittleEndian.PutUint64(seed[24:], e.rand.Uint64())
	sess, err := NewSession(SessionConfig{
		LocalDiscr:    discr,
		DesiredMinTx:  cfg.MinTx,
		RequiredMinRx: cfg.MinRx,
		DetectMult:    cfg.Multiplier,
		Rand:          rand.New(rand.NewChaCha8(seed)),
	})
	if err != nil {
		return nil, err
	}
	var tx txConn
	for range 64 {
		port := uint16(minSrcPort + e.rand.IntN(maxSrcPort-minSrcPort+1))
		tx, err = dialTx(netip.AddrPortFrom(e.local.Addr(), port), peer)
		if err == nil || !isAddrInUse(err) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bfd: socket to %v: %w", peer, err)
	}
	p := &Peer{
		ep:       e,
		addr:     peer,
		name:     addr.String(),
		sess:     sess,
		tx:       tx,
		onChange: onChange,
		in:       make(chan Packet, 16),
		ops:      make(chan op),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	p.info.Store(&Info{State: Down, RemoteState: Down, LocalDiscr: discr})
	e.peers[addr] = p
	e.discrs[discr] = true
	e.metrics.sessionAdded(p.name)
	e.wg.Add(1)
	go p.run()
	e.log.Debug("bfd session added", "peer", peer, "local", e.local, "discr", discr)
	return p, nil
}

// Close takes every session administratively down (telling the peers),
// stops them and closes the sockets.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	peers := make([]*Peer, 0, len(e.peers))
	for _, p := range e.peers {
		peers = append(peers, p)
	}
	e.mu.Unlock()
	for _, p := range peers {
		p.Close()
	}
	err := e.rx.Close()
	e.wg.Wait()
	return err
}

func (e *Endpoint) remove(p *Peer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.peers[p.addr.Addr()] == p {
		delete(e.peers, p.addr.Addr())
		delete(e.discrs, p.sess.cfg.LocalDiscr)
	}
	e.metrics.sessionRemoved(p.name)
}

// readLoop receives Control packets and hands each to its session.
func (e *Endpoint) readLoop() {
	defer e.wg.Done()
	buf := make([]byte, 512)
	for {
		n, from, ttl, err := e.rx.read(buf)
		if err != nil {
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if closed {
				return
			}
			e.log.Warn("bfd: receive", "local", e.local, "err", err)
			time.Sleep(10 * time.Millisecond) // do not spin on a persistent error
			continue
		}
		if ttl != ttlRequired {
			e.metrics.packetDropped(dropTTL)
			e.log.Debug("bfd: dropped packet with TTL below 255", "from", from, "ttl", ttl)
			continue
		}
		pkt, err := Decode(buf[:n])
		if err != nil {
			e.metrics.packetDropped(dropMalformed)
			e.log.Debug("bfd: dropped malformed packet", "from", from, "err", err)
			continue
		}
		e.mu.Lock()
		p := e.peers[from.Addr().Unmap()]
		e.mu.Unlock()
		if p == nil {
			e.metrics.packetDropped(dropUnknown)
			e.log.Debug("bfd: dropped packet from unknown peer", "from", from)
			continue
		}
		select {
		case p.in <- pkt:
		default:
			e.metrics.packetDropped(dropQueue)
		}
	}
}

// Peer is the running session with one peer.
type Peer struct {
	ep       *Endpoint
	addr     netip.AddrPort
	name     string
	sess     *Session // owned by run
	tx       txConn
	onChange func(Change)

	in   chan Packet
	ops  chan op
	quit chan struct{}
	done chan struct{}

	info      atomic.Pointer[Info]
	closeOnce sync.Once
}

// op is work for the session goroutine; done is closed after it ran.
type op struct {
	f    func(s *Session, now time.Time) Output
	done chan struct{}
}

// Addr is the peer's address and Control port.
func (p *Peer) Addr() netip.AddrPort { return p.addr }

// State is the session state.
func (p *Peer) State() State { return p.info.Load().State }

// Info is a snapshot of the session.
func (p *Peer) Info() Info { return *p.info.Load() }

// SetAdminDown takes the session administratively down or back up.
func (p *Peer) SetAdminDown(down bool) {
	p.do(func(s *Session, now time.Time) Output { return s.SetAdminDown(down, now) })
}

// SetConfig changes the session's timers; while Up this runs a Poll
// Sequence with the peer.
func (p *Peer) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("bfd: %w", err)
	}
	var err error
	p.do(func(s *Session, now time.Time) Output {
		var out Output
		out, err = s.SetIntervals(cfg.MinTx, cfg.MinRx, now)
		return out
	})
	return err
}

// do runs f on the session goroutine and waits for it. It does nothing
// once the session is closed.
func (p *Peer) do(f func(s *Session, now time.Time) Output) {
	o := op{f: f, done: make(chan struct{})}
	select {
	case p.ops <- o:
		<-o.done
	case <-p.done:
	}
}

// Close tells the peer the session is administratively down and stops it.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.SetAdminDown(true)
		close(p.quit)
		<-p.done
		p.ep.remove(p)
	})
	return nil
}

func (p *Peer) run() {
	defer p.ep.wg.Done()
	defer close(p.done)
	defer p.tx.Close()
	timer := time.NewTimer(0) // the first Tick sends the first packet
	defer timer.Stop()
	for {
		var out Output
		var opDone chan struct{}
		select {
		case <-p.quit:
			return
		case pkt := <-p.in:
			out = p.sess.Step(pkt, time.Now())
		case <-timer.C:
			out = p.sess.Tick(time.Now())
		case o := <-p.ops:
			out = o.f(p.sess, time.Now())
			opDone = o.done
		}
		p.perform(out)
		if opDone != nil {
			close(opDone)
		}
		if next := p.sess.Next(); !next.IsZero() {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
	}
}

// perform sends the packets and reports the changes of one step.
func (p *Peer) perform(out Output) {
	info := p.sess.Info()
	p.info.Store(&info)
	for _, pkt := range out.Packets {
		if _, err := p.tx.Write(pkt.Marshal()); err != nil {
			// ICMP errors from an absent peer land here; the detection
			// time, not the socket, decides that the peer is gone.
			p.ep.log.Debug("bfd: send", "peer", p.addr, "err", err)
		}
	}
	for _, c := range out.Changes {
		p.ep.metrics.stateChanged(p.name, c.To)
		p.ep.log.Info("bfd session state changed", "peer", p.name, "from", c.From.String(), "to", c.To.String(), "diag", c.Diag.String())
		if p.onChange != nil {
			p.onChange(c)
		}
	}
}
