// Package edge is the SIP side of an anyedge node (edged): listeners on the
// node's own, anycast and VIP addresses, the registrar, a stateful proxy
// that forks to registered contacts and fails over between upstreams, NAT
// traversal with keepalives, and the metrics of it all.
//
// Request routing, in order (handler.go):
//
//	malformed          → 400 / 413 / 416 / 420 / 505 / 513, or dropped
//	ACK                → forwarded statelessly along its Route (2xx ACK);
//	                     no Route of ours: relayed to every node (anycast.go)
//	CANCEL             → matched by the transaction layer; else relayed to
//	                     every node and 200 (anycast.go); no node up: 481
//	Max-Forwards 0     → 483;  loop (our Via, same request) → 482
//	REGISTER           → auth (if enabled) → registrar
//	OPTIONS to us      → 200 (keepalive, health checks)
//	To tag             → in-dialog: loose routing along our Record-Route
//	local domain       → auth (auth.invite) → location lookup → fork
//	                     (404 unknown user, 480 known but not registered)
//	other domain       → only from authenticated users or trusted
//	                     sources → upstreams with failover; else 403
//
// A response matching no transaction whose Via names another node is
// relayed to that node (anycast.go, docs/ANYCAST.md).
package edge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/nat"
	"github.com/anyedge/anyedge/edge/proxy"
	"github.com/anyedge/anyedge/edge/registrar"
	"github.com/anyedge/anyedge/edge/upstream"
)

func init() {
	// sipgo refuses to send a UDP message over 1300 bytes (RFC 3261
	// §18.1.1 wants TCP then). A proxy cannot switch transport towards a
	// phone behind NAT that registered over UDP, so INVITEs with large SDP
	// are sent over UDP, fragmented, as every SIP proxy does. This is a
	// sipgo package variable: set once, before any traffic.
	sip.UDPMTUSize = 65535 + 200
}

// udpReadBuffer is the receive buffer asked for each UDP listener. The
// default (208 KiB: a few hundred datagrams, as the kernel counts them)
// overflowed at 2500 REGISTER/s whenever the read loop was held up for a
// tenth of a second or so on a loaded machine, and
// every datagram dropped costs a 500 ms client retransmission. 4 MiB, as
// sipbench gives SIPp; Kamailio too probes its UDP buffers upwards at start.
const udpReadBuffer = 4 << 20

// Hooks are the seams later features plug into. Every hook is optional.
// CallInfo is what the server established about a new call's caller.
type CallInfo struct {
	// Source is the packet's source address.
	Source netip.Addr
	// AuthUser is the digest user that authenticated this request; empty
	// when the request was not authenticated (trusted source, or a local
	// call without auth.invite), so it can be trusted when set.
	AuthUser string
}

type Hooks struct {
	// BeforeNewDialog runs for every out-of-dialog INVITE after
	// authentication and before it is routed. A non-nil response is sent
	// instead of forwarding the call (the CPS limiter's 503 with
	// Retry-After). info says what the server knows of the caller.
	BeforeNewDialog func(req *sip.Request, info CallInfo) *sip.Response
	// HomeAddr returns the SIP address ("host:port") of a cluster node.
	// A binding whose Home is another node is reached by relaying the
	// request to that node; without this hook such bindings are skipped.
	HomeAddr func(node uint32) (string, bool)
	// RelayPeer reports whether src is another node of the cluster. Only
	// a peer's relay mark is believed: such a request was authenticated
	// by the node that relayed it, is served from local bindings only and
	// is never relayed again (no loops between nodes).
	RelayPeer func(src netip.Addr) bool
	// Dialogs keeps call state (dialogs.go): new INVITEs, their
	// responses and in-dialog requests are reported to it, and an INVITE
	// over the caller's concurrent-call limit gets 486.
	Dialogs DialogTracker
	// TxRelay carries responses, CANCELs and ACKs that reached this node
	// but belong to another node's transaction (anycast.go); nil: they
	// are dropped and counted as before.
	TxRelay TxRelay
}

// RelayHeader marks a request that a node relayed to a binding's home
// node; its value is the relaying node's id.
const RelayHeader = "X-Anyedge-Relay"

// LocalLookup is a store that can answer from this node's own bindings
// (home and served replicas) only, as a relayed request needs. geo's
// user-facing store is one.
type LocalLookup interface {
	LookupLocal(ctx context.Context, aor string) ([]location.Binding, error)
}

// Server is one edge node's SIP server.
type Server struct {
	cfg   Config
	store location.Store
	log   *slog.Logger
	reg   prometheus.Registerer
	node  uint32
	hooks Hooks
	m     *metrics
	txm   *txMetrics
	// fanout bounds stray CANCELs/ACKs relayed to every node.
	fanout *bucket
	// txSlots bounds the relayed messages handled at once.
	txSlots chan struct{}

	registrar *registrar.Registrar
	auth      authenticator // nil: auth disabled
	trusted   []netip.Prefix
	rrKey     []byte
	upstreams *upstream.Pool
	tracker   *nat.Tracker
	// trackAoRs: the pinger reads the tracker (keepalives on, a store
	// that cannot list); else tracking would only cost a map entry and an
	// AoR string per binding.
	trackAoRs bool
	pinger    *nat.Pinger
	parser    *sip.Parser // for relayed messages (anycast.go) and UDP REGISTERs (regfast.go)
	regs      *regCache   // UDP REGISTER transactions (regfast.go)
	regm      *regMetrics
	// regInflight counts UDP REGISTERs being handled (regfast.go).
	regInflight atomic.Int64
	// lastReads: per UDP listener, the datagram sipgo is parsing, to
	// answer it when the parse fails (inbound.go).
	lastMu    sync.Mutex
	lastReads []*lastRead

	ua      *sipgo.UserAgent
	stack   *stack
	tp      *sip.TransportLayer
	txl     *sip.TransactionLayer
	px      *proxy.Proxy
	sockets []*socket
	sole    map[string]*socket // transports with one listener (stack.go)

	ready   atomic.Bool
	started bool
	ctx     context.Context // ends at Close: handlers and the proxy stop
	cancel  context.CancelFunc
	serving sync.WaitGroup // listener loops
	loops   sync.WaitGroup // pinger, upstream probes

	mu       sync.Mutex
	closing  bool
	handlers sync.WaitGroup // request handlers in flight
	closed   sync.Once
	closeErr error
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRegistry registers the metrics on reg. Default: a private registry.
func WithRegistry(reg prometheus.Registerer) Option { return func(s *Server) { s.reg = reg } }

// WithNodeID sets this node's cluster id (0: single node). It is encoded in
// our Via branches, and bindings homed elsewhere are relayed.
func WithNodeID(id uint32) Option { return func(s *Server) { s.node = id } }

// WithHooks sets the hooks.
func WithHooks(h Hooks) Option { return func(s *Server) { s.hooks = h } }

// New validates cfg and builds a server on store. Nothing listens until
// Start.
func New(cfg Config, store location.Store, opts ...Option) (*Server, error) {
	if store == nil {
		return nil, errors.New("edge: a location store is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: store, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.m = newMetrics(s.reg, store)
	s.txm = newTxMetrics(s.reg)
	s.fanout = newBucket(fanoutRate, fanoutBurst)
	s.txSlots = make(chan struct{}, maxTxInjecting)
	for _, t := range cfg.Trusted {
		p, _ := parseCIDR(t)
		s.trusted = append(s.trusted, p)
	}
	for _, u := range cfg.Upstreams {
		if ap, err := netip.ParseAddrPort(u.Addr); err == nil {
			s.trusted = append(s.trusted, netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen()))
		}
	}
	s.rrKey = []byte(cfg.RecordRouteKey)
	if len(s.rrKey) == 0 {
		s.rrKey = make([]byte, 32)
		_, _ = rand.Read(s.rrKey)
	}
	var err error
	s.registrar, err = newRegistrar(cfg.Registrar, store, s.log, s.reg)
	if err != nil {
		return nil, prefixed("registrar", err)
	}
	if cfg.Auth.Enabled {
		s.auth, err = newAuthenticator(cfg.Auth, s.log, s.reg)
		if err != nil {
			return nil, prefixed("auth", err)
		}
	}
	s.parser = sip.NewParser()
	s.parser.MaxMessageLength = 1 << 20 // the filter checks the size itself
	s.regs = newRegCache(time.Now, sip.Timer_J, regCacheMax)
	s.regm = newRegMetrics(s.reg, s.regs)
	s.tracker = nat.NewTracker(store)
	return s, nil
}

// Start binds every listener, starts serving, and starts keepalives and
// upstream probes. It returns once every listener is up, or the first
// bind error (then nothing is left running). Background work runs until
// Close or until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if s.started {
		return errors.New("edge: started twice")
	}
	s.started = true
	for _, l := range s.cfg.Listeners {
		sock, err := listen(ctx, l)
		if err != nil {
			for _, o := range s.sockets {
				_ = o.close()
			}
			s.sockets = nil
			return fmt.Errorf("edge: listen %s %s: %w", l.Transport, l.Addr, err)
		}
		if uc, ok := sock.pc.(*net.UDPConn); ok {
			// The kernel caps this at net.core.rmem_max; an error only
			// leaves the default buffer.
			if err := uc.SetReadBuffer(udpReadBuffer); err != nil {
				s.log.Warn("sip: cannot enlarge the UDP receive buffer", "socket", l.Addr, "error", err)
			}
		}
		s.sockets = append(s.sockets, sock)
	}
	s.sole = soleListeners(s.sockets)
	if err := s.buildStack(); err != nil {
		for _, o := range s.sockets {
			_ = o.close()
		}
		return err
	}
	bctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.ctx = bctx
	for _, sock := range s.sockets {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			var err error
			switch {
			case sock.pc != nil:
				err = s.tp.ServeUDP(sock.pc)
			case sock.cfg.Transport == "tls":
				err = s.tp.ServeTLS(sock.ln)
			default:
				err = s.tp.ServeTCP(sock.ln)
			}
			s.log.Debug("listener stopped", "socket", sock.ps.Name, "error", err)
		}()
		s.log.Info("sip listening", "socket", sock.ps.Name, "advertise", sock.ps.HostPort())
	}
	if s.pinger != nil {
		s.loops.Add(1)
		go func() { defer s.loops.Done(); s.pinger.Run(bctx) }()
	}
	s.loops.Add(1)
	go func() { defer s.loops.Done(); s.sweepRegisters(bctx) }()
	if s.upstreams != nil {
		s.loops.Add(1)
		go func() { defer s.loops.Done(); s.upstreams.Run(bctx) }()
	}
	s.ready.Store(true)
	return nil
}

// buildStack creates the sipgo user agent, the proxy, the pinger and the
// upstream pool over the bound sockets.
func (s *Server) buildStack() error {
	sipLog := slog.New(&sipgoLogHandler{inner: s.log.Handler(), parseFailed: s.udpParseFailed}).With("component", "sipgo")
	parser := sip.NewParser()
	parser.MaxMessageLength = s.cfg.MaxMessageSize
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("anyedge"),
		sipgo.WithUserAgentParser(parser),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			sip.WithTransactionLayerUnhandledResponseHandler(s.onStrayResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			sip.WithTransportLayerReadFilter(s.readFilter),
		),
	)
	if err != nil {
		return err
	}
	s.ua, s.tp, s.txl = ua, ua.TransportLayer(), ua.TransactionLayer()
	s.stack = &stack{txl: s.txl, tp: s.tp}
	socks := make([]*proxy.Socket, len(s.sockets))
	for i, sock := range s.sockets {
		socks[i] = sock.ps
	}
	s.px = proxy.New(proxy.Config{
		Node:              s.node,
		NoResponseTimeout: s.cfg.Timeouts.NoResponse,
		InviteTimeout:     s.cfg.Timeouts.Invite,
		Sockets:           socks,
	}, s.stack, s.log.With("component", "proxy"))
	if len(s.cfg.Upstreams) > 0 {
		s.upstreams, err = upstream.New(s.cfg.Upstreams, s.cfg.UpstreamHealth, upstreamProber{s},
			upstream.WithLogger(s.log.With("component", "upstream")), upstream.WithRegistry(s.reg))
		if err != nil {
			return err
		}
	}
	if *s.cfg.Keepalive.Enabled {
		var src nat.Source = s.tracker
		if ss, ok := s.store.(nat.Source); ok {
			// The store lists what this node keeps alive itself (geo:
			// its own bindings and those of down homes it took over).
			src = ss
		} else if r, ok := s.store.(nat.Ranger); ok {
			src = nat.RangeSource{R: r}
		} else {
			s.trackAoRs = true
		}
		s.pinger, err = nat.NewPinger(s.cfg.Keepalive, src, s.store, keepaliveProber{s},
			nat.WithNode(s.node), nat.WithLogger(s.log.With("component", "keepalive")), nat.WithRegistry(s.reg))
		if err != nil {
			return err
		}
	}
	s.txl.OnRequest(s.onRequest)
	return nil
}

// Ready reports whether every listener is up.
func (s *Server) Ready() bool { return s.ready.Load() }

// Addr returns the bound address of the first listener of transport
// ("udp", "tcp", "tls"), or an invalid AddrPort.
func (s *Server) Addr(transport string) netip.AddrPort {
	for _, sock := range s.sockets {
		if sock.cfg.Transport == transport {
			return sock.ap
		}
	}
	return netip.AddrPort{}
}

// Close stops listening, ends every transaction and waits for every
// goroutine the server started.
func (s *Server) Close() error {
	s.closed.Do(func() {
		s.ready.Store(false)
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		if s.cancel != nil {
			s.cancel() // handlers' contexts, pinger and probe loops
		}
		s.loops.Wait()
		var errs []error
		shutdown := func() {
			for _, sock := range s.sockets {
				if err := sock.close(); err != nil {
					errs = append(errs, err)
				}
			}
			if s.ua != nil {
				// Ends every transaction (their watchers and handlers
				// return) and closes every connection (their readers
				// return).
				if err := s.ua.Close(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if s.stack != nil {
			s.stack.close(shutdown)
		} else {
			shutdown()
		}
		s.handlers.Wait()
		if s.px != nil {
			s.px.Wait()
		}
		s.serving.Wait()
		s.sweep()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// sweep closes connections sipgo opened after it was closed. It handles
// every message on a goroutine of its own, so one read just before the
// listeners closed may still be running; when its transaction is gone
// (an ACK after Close ended the INVITE's), sipgo opens a new connection to
// answer from. Bounded: at most 100 ms, only at shutdown.
func (s *Server) sweep() {
	if s.tp == nil {
		return
	}
	quiet := 0
	for i := 0; i < 20 && quiet < 3; i++ {
		time.Sleep(5 * time.Millisecond)
		quiet++
		for _, tr := range []string{"udp", "tcp", "tls"} {
			if p := s.tp.Pool(tr); p != nil && p.Size() > 0 {
				_ = p.Clear()
				quiet = 0
			}
		}
	}
}

// enter registers a request handler; false once closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.handlers.Add(1)
	s.m.inflight.Inc()
	return true
}

func (s *Server) leave() {
	s.m.inflight.Dec()
	s.handlers.Done()
}

// ReloadSubscribers re-reads the subscriber file (SIGHUP). On error the
// previous list stays in use. A no-op when auth is disabled.
func (s *Server) ReloadSubscribers() error {
	if s.auth == nil {
		return nil
	}
	return s.auth.reload()
}
