package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/bfd"
)

// GoBGP is the Speaker on an embedded GoBGP v3 server. The server never
// listens (ListenPort -1): it dials the configured routers. It announces
// IPv4 and IPv6 unicast, and advertises no graceful restart, so that the
// paths of a crashed node are dropped at once instead of being kept stale
// for the restart time.
//
// GoBGP v3's main loop cannot be stopped: after Close one goroutine per
// speaker stays parked forever. Create one speaker per process.
type GoBGP struct {
	cfg  Config
	log  *slog.Logger
	srv  *server.BgpServer
	ann  *announcer
	m    *metrics
	hook func(PeerStatus)

	watchCancel context.CancelFunc

	bfdMetrics *bfd.Metrics
	endpoints  map[netip.Addr]*bfd.Endpoint
	bfdPeers   map[netip.Addr]*bfd.Peer

	mu      sync.Mutex
	peers   map[netip.Addr]*peerState
	closed  bool
	resets  sync.WaitGroup // BFD-triggered session resets in flight
	closeMu sync.Mutex
}

// peerState is what the speaker tracks per router beyond GoBGP's view.
type peerState struct {
	cfg     PeerConfig
	addr    netip.Addr
	state   SessionState
	since   time.Time
	lastErr string
	bfd     bfd.State
}

// Option configures a speaker's optional dependencies.
type Option func(*options)

type options struct {
	log  *slog.Logger
	reg  prometheus.Registerer
	hook func(PeerStatus)
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegisterer registers the speaker's metrics (and BFD's) on reg.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// WithPeerHook calls f on every change of a router's BGP session state or
// BFD state, for readiness checks. f runs on the speaker's goroutines and
// must not block or call back into the speaker.
func WithPeerHook(f func(PeerStatus)) Option { return func(o *options) { o.hook = f } }

// gobgpTimeout bounds one call into the GoBGP server.
const gobgpTimeout = 10 * time.Second

// New validates cfg, starts the GoBGP server, configures the peers (which
// are dialled at once) and their BFD sessions. Nothing is announced until
// Set. The caller must Close the speaker.
func New(cfg Config, opts ...Option) (*GoBGP, error) {
	o := options{}
	for _, f := range opts {
		f(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &GoBGP{
		cfg:       cfg,
		log:       o.log,
		m:         newMetrics(o.reg),
		hook:      o.hook,
		endpoints: map[netip.Addr]*bfd.Endpoint{},
		bfdPeers:  map[netip.Addr]*bfd.Peer{},
		peers:     map[netip.Addr]*peerState{},
	}
	if o.reg != nil {
		s.bfdMetrics = bfd.NewMetrics(o.reg)
	}
	ibgp := false
	for _, p := range cfg.Peers {
		addr := netip.MustParseAddr(p.Address)
		s.peers[addr] = &peerState{cfg: p, addr: addr, state: StateIdle, bfd: bfd.Down}
		ibgp = ibgp || p.ASN == cfg.ASN
	}
	s.srv = server.NewBgpServer(server.LoggerOption(gobgpLogger{log: o.log, peerError: s.notePeerError}))
	go s.srv.Serve()
	s.ann = newAnnouncer(s.srv, cfg.ASN, ibgp, s.m.announcedSet)
	if err := s.start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *GoBGP) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), gobgpTimeout)
	defer cancel()
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             s.cfg.ASN,
		RouterId:        s.cfg.RouterID,
		ListenPort:      -1, // dial out only
		GracefulRestart: &api.GracefulRestart{Enabled: false},
	}}); err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	// The watcher's context must be cancelled before the server stops
	// (GoBGP v3 otherwise leaks or hangs in Stop): Close does so.
	wctx, wcancel := context.WithCancel(context.Background())
	s.watchCancel = wcancel
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		return fmt.Errorf("bgp: watch peers: %w", err)
	}
	for i, p := range s.cfg.Peers {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			return fmt.Errorf("bgp: peers[%d] %s: %w", i, p.Address, err)
		}
		s.m.peerAdded(p.Address)
	}
	for i, p := range s.cfg.Peers {
		if !p.BFD.Enabled {
			continue
		}
		if err := s.startBFD(p); err != nil {
			return fmt.Errorf("bgp: peers[%d] %s: bfd: %w", i, p.Address, err)
		}
	}
	return nil
}

// apiPeer is the GoBGP configuration of a router.
func apiPeer(p PeerConfig) *api.Peer {
	secs := func(d time.Duration) uint64 { return uint64(d / time.Second) }
	var afs []*api.AfiSafi
	for _, f := range p.Families {
		fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		if f == IPv6Unicast {
			fam.Afi = api.Family_AFI_IP6
		}
		afs = append(afs, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}})
	}
	return &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address,
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           secs(p.ConnectRetry),
			HoldTime:               secs(p.HoldTime),
			KeepaliveInterval:      secs(p.Keepalive),
			IdleHoldTimeAfterReset: secs(p.IdleHold),
		}},
		Transport: &api.Transport{
			RemotePort:   uint32(p.Port),
			LocalAddress: p.LocalAddress,
		},
		EbgpMultihop:    &api.EbgpMultihop{Enabled: p.Multihop > 0, MultihopTtl: uint32(p.Multihop)},
		AfiSafis:        afs,
		GracefulRestart: &api.GracefulRestart{Enabled: false},
	}
}

// startBFD starts the BFD session with p, from p's local address or, by
// default, the address the kernel would use to reach it.
func (s *GoBGP) startBFD(p PeerConfig) error {
	peer := netip.MustParseAddr(p.Address)
	local, err := localAddrFor(p)
	if err != nil {
		return err
	}
	ep := s.endpoints[local]
	if ep == nil {
		ep, err = bfd.Listen(local, bfd.WithLogger(s.log), bfd.WithMetrics(s.bfdMetrics))
		if err != nil {
			return err
		}
		s.endpoints[local] = ep
	}
	bp, err := ep.Add(netip.AddrPortFrom(peer, bfd.ControlPort), p.BFD.Config(), func(c bfd.Change) { s.onBFD(peer, c) })
	if err != nil {
		return err
	}
	s.bfdPeers[peer] = bp
	return nil
}

func localAddrFor(p PeerConfig) (netip.Addr, error) {
	if p.LocalAddress != "" {
		return netip.MustParseAddr(p.LocalAddress).Unmap(), nil
	}
	// A connected UDP socket sends nothing; it only asks the routing
	// table for the source address.
	c, err := net.Dial("udp", net.JoinHostPort(p.Address, "3784"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to pick a local address (set local_address): %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// onEvent handles GoBGP's peer state events.
func (s *GoBGP) onEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	state := sessionState(pe.Peer.State.SessionState)
	s.mu.Lock()
	ps := s.peers[addr.Unmap()]
	if ps == nil || ps.state == state {
		s.mu.Unlock()
		return
	}
	old := ps.state
	ps.state = state
	ps.since = time.Now()
	st := s.statusLocked(ps)
	s.mu.Unlock()

	s.m.sessionChanged(addr.String(), state == StateEstablished)
	s.log.Info("bgp session state changed", "peer", addr, "from", old.String(), "to", state.String())
	if s.hook != nil {
		s.hook(st)
	}
}

func sessionState(st api.PeerState_SessionState) SessionState {
	if st < api.PeerState_UNKNOWN || st > api.PeerState_ESTABLISHED {
		return StateUnknown
	}
	return SessionState(st) // the enums line up: UNKNOWN 0 ... ESTABLISHED 6
}

// onBFD handles a BFD state change with peer. When a session that was Up
// goes down, the BGP session is reset (RFC 5882 §4.3): the router does the
// same on its side, and a fresh session re-sends the paths once the path
// to the router works again.
func (s *GoBGP) onBFD(peer netip.Addr, c bfd.Change) {
	s.mu.Lock()
	ps := s.peers[peer]
	if ps == nil {
		s.mu.Unlock()
		return
	}
	ps.bfd = c.To
	st := s.statusLocked(ps)
	reset := c.From == bfd.Up && c.To != bfd.Up && c.To != bfd.AdminDown && !s.closed
	if reset {
		s.resets.Add(1)
	}
	s.mu.Unlock()

	if s.hook != nil {
		s.hook(st)
	}
	if reset {
		go func() {
			defer s.resets.Done()
			ctx, cancel := context.WithTimeout(context.Background(), gobgpTimeout)
			defer cancel()
			s.log.Warn("bfd session down: resetting bgp session", "peer", peer, "diag", c.Diag.String())
			if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: peer.String(), Communication: "BFD session down"}); err != nil {
				s.log.Warn("bgp reset after bfd down", "peer", peer, "err", err)
			}
		}()
	}
}

func (s *GoBGP) notePeerError(peer, reason string) {
	addr, err := netip.ParseAddr(peer)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps := s.peers[addr.Unmap()]; ps != nil {
		ps.lastErr = reason
	}
}

func (s *GoBGP) statusLocked(ps *peerState) PeerStatus {
	st := PeerStatus{
		Address:    ps.addr,
		ASN:        ps.cfg.ASN,
		State:      ps.state,
		LastError:  ps.lastErr,
		BFDEnabled: ps.cfg.BFD.Enabled,
	}
	if st.BFDEnabled {
		st.BFD = ps.bfd
	}
	if ps.state == StateEstablished {
		st.Uptime = time.Since(ps.since)
	}
	return st
}

// Set implements Speaker.
func (s *GoBGP) Set(ctx context.Context, advs ...Advertisement) error {
	return s.ann.set(ctx, advs)
}

// Announced implements Speaker.
func (s *GoBGP) Announced() []Advertisement { return s.ann.announced() }

// Peers implements Speaker. Session states and counters come from GoBGP;
// the last error and BFD state from the speaker's own tracking.
func (s *GoBGP) Peers() []PeerStatus {
	s.mu.Lock()
	out := make([]PeerStatus, 0, len(s.peers))
	byAddr := map[netip.Addr]int{}
	for _, ps := range s.peers {
		byAddr[ps.addr] = len(out)
		out = append(out, s.statusLocked(ps))
	}
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		ctx, cancel := context.WithTimeout(context.Background(), gobgpTimeout)
		defer cancel()
		s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if p.State == nil {
				return
			}
			addr, err := netip.ParseAddr(p.State.NeighborAddress)
			if err != nil {
				return
			}
			i, ok := byAddr[addr.Unmap()]
			if !ok {
				return
			}
			st := &out[i]
			st.State = sessionState(p.State.SessionState)
			st.Uptime = 0
			if st.State == StateEstablished && p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
				st.Uptime = time.Since(p.Timers.State.Uptime.AsTime())
			}
			for _, af := range p.AfiSafis {
				if af.State != nil {
					st.PrefixesSent += af.State.Advertised
					st.PrefixesReceived += af.State.Received
				}
			}
		})
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

// Close implements Speaker: the routers get a Cease notification (they
// drop the paths at once), the server stops, and the BFD sessions are
// taken administratively down.
func (s *GoBGP) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.ann != nil {
		s.ann.close()
	}
	// BGP first: the routers get a Cease and drop the paths; then BFD
	// goes administratively down, which routers must not count as a
	// failure (RFC 5882 §3.2).
	s.resets.Wait()
	if s.watchCancel != nil {
		s.watchCancel()
	}
	s.srv.Stop()
	var errs []error
	for _, ep := range s.endpoints {
		errs = append(errs, ep.Close())
	}
	return errors.Join(errs...)
}

var _ Speaker = (*GoBGP)(nil)
