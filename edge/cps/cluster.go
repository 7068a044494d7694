package cps

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/cluster"
)

// Cluster is what the Service needs from the cluster node at run time;
// *cluster.Node has it.
type Cluster interface {
	// Self is this node's metadata (its id and region).
	Self() cluster.NodeMeta
	// Broadcast sends a capability message to every reachable node and
	// returns how many it went to.
	Broadcast(capName string, typ cluster.MsgType, body []byte) int
	// Nodes lists the known nodes with their state, region and RTT.
	Nodes() []cluster.NodeView
}

// Registrar is how the Service plugs into the cluster before it starts;
// *cluster.Node has it.
type Registrar interface {
	Register(cluster.Capability) error
	Subscribe(func(cluster.Event))
}

var (
	_ Cluster   = (*cluster.Node)(nil)
	_ Registrar = (*cluster.Node)(nil)
)

// ServiceOption sets an optional dependency of a Service.
type ServiceOption func(*Service)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) ServiceOption { return func(s *Service) { s.log = l } }

// WithRegistry registers the CPS metrics on reg (default: none).
func WithRegistry(reg prometheus.Registerer) ServiceOption {
	return func(s *Service) { s.reg = reg }
}

// WithLimiterOptions passes options (a clock, a random source) to the
// Limiter.
func WithLimiterOptions(opts ...Option) ServiceOption {
	return func(s *Service) { s.limOpts = append(s.limOpts, opts...) }
}

// reconcileEvery refreshes membership, regions and RTTs from the cluster
// even without an event, so a missed event heals.
const reconcileEvery = time.Second

// Service runs a Limiter on a cluster node: it registers the "cps"
// capability (live frames, snapshot for joining nodes), sends this node's
// frame every interval, follows membership, and exports the metrics. Its
// one goroutine runs between Start and Close.
type Service struct {
	cfg     Config
	lim     *Limiter
	c       Cluster
	log     *slog.Logger
	reg     prometheus.Registerer
	limOpts []Option

	wake chan struct{}
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	sentBytes  atomic.Uint64 // body bytes × recipients
	sentFrames atomic.Uint64
	stalls     uint64 // Stats.Stalls at the last reconcile (run goroutine)
}

// NewService validates cfg and builds the service of the node c is.
// Register it with the cluster node (Attach) before the node starts, then
// Start it.
func NewService(cfg Config, c Cluster, opts ...ServiceOption) (*Service, error) {
	s := &Service{
		cfg: cfg, c: c, log: slog.New(slog.DiscardHandler),
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	self := c.Self()
	lim, err := New(cfg, self.ID, self.Region, s.limOpts...)
	if err != nil {
		return nil, err
	}
	s.cfg, s.lim = lim.cfg, lim
	if s.reg != nil {
		if err := s.reg.Register(newCollector(s)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Limiter is the service's limiter: the SIP layer calls its Check, the
// admin API its Status and Top.
func (s *Service) Limiter() *Limiter { return s.lim }

// Attach registers the capability and the membership subscription on the
// cluster node. Call it before the node starts.
func (s *Service) Attach(r Registrar) error {
	if err := r.Register(s.Capability()); err != nil {
		return err
	}
	r.Subscribe(s.OnEvent)
	return nil
}

// Capability is the "cps" capability: live frames to the limiter, and a
// snapshot of the current windows (and run-time rates) for a joining node.
func (s *Service) Capability() cluster.Capability {
	return cluster.Capability{
		Name: CapName,
		Handle: func(from uint32, typ cluster.MsgType, body []byte) {
			if err := s.lim.Handle(from, typ, body); err != nil {
				s.log.Debug("cps update refused", "from", from, "type", typ, "err", err)
			}
		},
		NeedsSync: true,
		Snapshot:  func() cluster.SnapshotReader { return &snapReader{recs: s.lim.Snapshot()} },
		Apply: func(from uint32, recs [][]byte) {
			for _, r := range recs {
				if err := s.lim.ApplySnapshot(from, r); err != nil {
					s.log.Debug("cps snapshot record refused", "from", from, "err", err)
				}
			}
		},
	}
}

// OnEvent takes a cluster event. It runs on the cluster's loop goroutine,
// so it only marks a death at once (cheap) and wakes the service
// goroutine, which reads the membership (regions, RTTs) from the node.
func (s *Service) OnEvent(e cluster.Event) {
	switch e.Kind {
	case cluster.EventNodeDown:
		s.lim.NodeDown(e.Node)
	case cluster.EventNodeUp:
	default:
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start runs the service goroutine until ctx ends or Close.
func (s *Service) Start(ctx context.Context) {
	s.wg.Add(1)
	go s.run(ctx)
}

// Close stops the service goroutine and waits for it.
func (s *Service) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

func (s *Service) run(ctx context.Context) {
	defer s.wg.Done()
	flush := time.NewTicker(s.cfg.FlushTick())
	defer flush.Stop()
	recon := time.NewTicker(reconcileEvery)
	defer recon.Stop()
	s.reconcile()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-flush.C:
			s.flush()
		case <-s.wake:
			s.reconcile()
		case <-recon.C:
			s.reconcile()
		}
	}
}

func (s *Service) flush() { s.send(s.lim.Flush()) }

func (s *Service) send(body []byte) {
	if body == nil {
		return
	}
	n := s.c.Broadcast(CapName, MsgCounters, body)
	s.sentFrames.Add(uint64(n))
	s.sentBytes.Add(uint64(n * len(body)))
}

// reconcile brings the limiter's view of the membership in line with the
// cluster's: up and down, regions, RTTs, and nodes removed by the operator.
func (s *Service) reconcile() {
	if n := s.lim.Stats().Stalls; n > s.stalls {
		s.log.Warn("cps: this node was not scheduled for over 100 ms; it refused new calls until its peers' counts were fresh again",
			"stalls", n-s.stalls, "stalls_total", n)
		s.stalls = n
	}
	self := s.c.Self().ID
	seen := map[uint32]bool{}
	for _, v := range s.c.Nodes() {
		if v.ID == self {
			continue
		}
		seen[v.ID] = true
		if v.State == "up" {
			s.lim.NodeUp(v.ID, v.Region)
			if v.RTT > 0 {
				s.lim.NodeRTT(v.ID, v.RTT)
			}
		} else {
			s.lim.NodeDown(v.ID)
		}
	}
	for _, id := range s.lim.Peers() {
		if !seen[id] {
			s.lim.Forget(id)
		}
	}
}

// SetRate changes a limit's rate on this node and sends the change to
// every node at once (the next frame would carry it anyway). This is what
// `edgectl cps set NAME RATE` calls through the admin API.
func (s *Service) SetRate(name string, rate float64) error {
	if err := s.lim.SetRate(name, rate); err != nil {
		return err
	}
	s.send(s.lim.FlushNow())
	return nil
}

// snapReader hands out snapshot records in chunks of about maxBytes.
type snapReader struct{ recs [][]byte }

func (r *snapReader) Next(dst [][]byte, maxBytes int) ([][]byte, bool) {
	n := 0
	for len(r.recs) > 0 && (n == 0 || n+len(r.recs[0]) <= maxBytes) {
		n += len(r.recs[0])
		dst = append(dst, r.recs[0])
		r.recs = r.recs[1:]
	}
	return dst, len(r.recs) == 0
}
