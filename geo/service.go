package geo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/core"
	"github.com/anyedge/anyedge/cluster/wire"
	"github.com/anyedge/anyedge/edge/location"
)

// Cluster is what the service needs from the cluster node; *cluster.Node
// is one, and the simulation tests adapt core.Sim to it. Self, Meta, IsUp
// and TagOwner are called on lookup paths and must not block; Send and
// SendMatching are called only from Run's goroutine (or, with an inline
// cluster, from the caller's), and not for replication when the cluster
// is an AsyncCluster.
type Cluster interface {
	Self() cluster.NodeMeta
	Meta(id uint32) (cluster.NodeMeta, bool)
	IsUp(id uint32) bool
	TagOwner(tag string) uint32
	Send(capName string, typ cluster.MsgType, to uint32, body []byte) error
	SendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte) int
	// Nodes gives the RTT and hop count of every node (refreshed once per
	// sweep, for route costs).
	Nodes() []cluster.NodeView
}

var _ Cluster = (*cluster.Node)(nil)

// AsyncCluster is a Cluster that can send without waiting for its loop
// (*cluster.Node). Run then sends replication and acks that way: a wait
// parks Run until the loop has run, and on a busy one-core node Run then
// queues behind every REGISTER handler before it can send the next frame.
type AsyncCluster interface {
	SendMatchingAsync(capName string, typ cluster.MsgType, f cluster.Filter, body []byte, done func(int))
	SendAsync(capName string, typ cluster.MsgType, to uint32, body []byte)
}

var _ AsyncCluster = (*cluster.Node)(nil)

// sendMatching sends to the nodes f selects and calls done (if not nil)
// with how many: later, from the cluster's loop, with an AsyncCluster; at
// once otherwise (the simulations' clusters).
func (s *Service) sendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte, done func(int)) {
	if s.async != nil {
		s.async.SendMatchingAsync(capName, typ, f, body, done)
		return
	}
	n := s.cl.SendMatching(capName, typ, f, body)
	if done != nil {
		done(n)
	}
}

// sendOne sends to one node; an unreachable node's message is dropped
// (the sender's ack timeout covers it).
func (s *Service) sendOne(capName string, typ cluster.MsgType, to uint32, body []byte) {
	if s.async != nil {
		s.async.SendAsync(capName, typ, to, body)
		return
	}
	_ = s.cl.Send(capName, typ, to, body)
}

// Capability names. The binding capability is per region (each region's
// nodes sync and repair their own bindings, and anti-entropy never compares
// one region's bindings with another's); with
// replicate_contacts_cross_region every node holds every binding and the
// name is plain "geo.bind".
const (
	MetaCap       = "geo.meta"
	BindCapPrefix = "geo.bind"
)

// BindCap is the name of the binding capability of region.
func BindCap(region string, crossRegion bool) string {
	if crossRegion {
		return BindCapPrefix
	}
	return BindCapPrefix + "." + region
}

// Option sets an optional dependency of a Service.
type Option func(*Service)

// WithClock sets the clock (default time.Now). Simulations inject theirs.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.clock = now } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithRegistry registers the service's metrics on reg (default: none).
func WithRegistry(reg prometheus.Registerer) Option { return func(s *Service) { s.reg = reg } }

// Service is the distributed user location of one node. It implements
// location.Store, so the registrar and the proxy use it unchanged, plus
// region-aware lookups that tell the proxy where to relay.
type Service struct {
	cfg     Config
	cl      Cluster
	async   AsyncCluster // cl, when it is one: replication's way out
	self    uint32
	region  string
	bindCap string
	clock   func() time.Time
	log     *slog.Logger
	reg     prometheus.Registerer
	m       *metrics
	st      *store
	out     *outbox

	// inline makes every entry point flush the outbox itself before it
	// returns, Save not wait, and AoRs go out in a fixed order: for
	// single-goroutine simulations whose cluster may be called from
	// capability callbacks, replayed exactly from their seed.
	inline bool

	regionF, otherF cluster.Filter // regionFilter, otherFilter as values

	bindSynced, metaSynced atomic.Bool
	metaQ, bindQ           *applyQueue // snapshot chunks being applied (Capabilities)
	reconcile              atomic.Bool
	peersStale             atomic.Bool
	peers                  atomic.Pointer[peerTable]
	regions                interner // region names of received metadata
	stopped                chan struct{}
	stopOnce               atomic.Bool
}

var _ location.Store = (*Service)(nil)

// New validates cfg and builds the service of the node cl runs as. Register
// its Capabilities on the node and Subscribe HandleEvent before the node
// starts, then call Run.
func New(cfg Config, cl Cluster, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cl == nil {
		return nil, errors.New("geo: a cluster is required")
	}
	me := cl.Self()
	if me.ID == 0 || me.Region == "" {
		return nil, fmt.Errorf("geo: the cluster node needs an id and a region (got %d, %q)", me.ID, me.Region)
	}
	s := &Service{
		cfg: cfg, cl: cl, self: me.ID, region: me.Region,
		bindCap: BindCap(me.Region, cfg.ReplicateContactsCrossRegion),
		clock:   time.Now,
		log:     slog.New(slog.DiscardHandler),
		out:     newOutbox(),
		stopped: make(chan struct{}),
	}
	if len(s.bindCap) > wire.MaxCapName {
		return nil, fmt.Errorf("geo: region name %q too long for a capability name", me.Region)
	}
	s.async, _ = cl.(AsyncCluster)
	for _, o := range opts {
		o(s)
	}
	s.regionF, s.otherF = s.regionFilter, s.otherFilter
	s.st = newStore(s.self, cfg.Buckets, int64(cfg.MoveGrace))
	s.m = newMetrics(s.reg, s.st)
	s.out.onResolve = func(r AckResult) { s.m.acks.WithLabelValues(r.String()).Inc() }
	return s, nil
}

func (s *Service) now() int64 { return s.clock().UnixNano() }

// Region is the node's region.
func (s *Service) Region() string { return s.region }

// Save implements location.Store: it applies a REGISTER to the bindings
// homed on this node (location.Apply, so the registrar's rules are those of
// every backend), replicates the change to the other nodes of the region
// and the AoR's metadata to every node, and returns once a partner has
// confirmed it (see the package doc for the exact guarantee).
//
// The result lists the bindings homed on this node: the contacts a UA
// registered through other nodes are not known here.
func (s *Service) Save(ctx context.Context, req *location.SaveRequest) (*location.SaveResult, error) {
	res, g, err := s.save(ctx, req)
	if err != nil || !s.waits(g) {
		return res, err
	}
	select {
	case <-g.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stopped:
	}
	return res, nil
}

// SaveDeferred is Save without the wait (location.DeferredSaver):
// confirmed runs once the change's generation resolves (replicated,
// degraded after ack_timeout, alone or stopped; the same moments Save
// returns at), on the outbox's confirm goroutine while Run runs (else on
// the goroutine that resolves it), or at once when there is nothing to
// wait for. It is not called when SaveDeferred fails.
func (s *Service) SaveDeferred(ctx context.Context, req *location.SaveRequest, confirmed func()) (*location.SaveResult, error) {
	res, g, err := s.save(ctx, req)
	if err != nil {
		return nil, err
	}
	if !s.waits(g) {
		confirmed()
		return res, nil
	}
	s.out.then(g, confirmed)
	return res, nil
}

// waits: a change saved into g is acknowledged only once a partner has it
// (or ack_timeout passes). Without a binding to replicate, in a
// simulation, or with no partner up, the ack is "alone" at once.
func (s *Service) waits(g *gen) bool {
	return g != nil && !s.inline && s.partnersUp()
}

// save is Save without the wait: the generation to wait for (nil when
// nothing needs replicating).
func (s *Service) save(ctx context.Context, req *location.SaveRequest) (*location.SaveResult, *gen, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if req == nil || req.AoR == "" {
		return nil, nil, location.ErrInvalid
	}
	now := nanos(req.Now)
	if now == 0 {
		now = s.now()
	}
	sh := s.st.shard(req.AoR)
	sh.mu.Lock()
	defer func() {
		sh.mu.Unlock()
		s.flushInline()
	}()
	st := sh.state(req.AoR, false)
	aor := req.AoR
	stamp := now
	var cur []location.Binding
	if st != nil {
		aor = st.aor // the stored copy: don't pin the caller's buffer
		stamp = st.stamp(s.self, now)
		for i := range st.binds {
			if r := &st.binds[i]; r.home == s.self && s.st.usable(st, r, now) {
				cur = append(cur, r.binding(st.aor))
			}
		}
	}
	r := *req
	r.Now = time.Unix(0, stamp)
	next, res, err := location.Apply(cur, &r)
	if err != nil {
		return nil, nil, err
	}
	for i := range next {
		next[i].Home = s.self
		next[i].AoR = aor
	}
	var buf [4]outRec
	out := buf[:0]
	for i := range next {
		b := &next[i]
		if j := indexKey(cur, b); j >= 0 && cur[j].CSeq == b.CSeq && cur[j].Registered.Equal(b.Registered) {
			continue // untouched by this request
		}
		if st == nil {
			aor = cloneString(aor)
			st = sh.state(aor, true)
		}
		rec := liveRec(b)
		if s.st.mergeBind(sh, st, rec, now) {
			out = append(out, outRec{aor: aor, kind: recBind, b: rec})
		}
	}
	for i := range cur {
		if indexKey(next, &cur[i]) >= 0 {
			continue
		}
		c := &cur[i]
		v := version{T: stamp, CSeq: req.CSeq, Node: s.self}
		t := brec{
			home: s.self, key: c.Key(), ch: claimHash(c), dead: true,
			ver: v, cver: v, horizon: nanos(c.Expires),
		}
		if s.st.mergeBind(sh, st, t, now) {
			out = append(out, outRec{aor: aor, kind: recBind, b: t})
		}
	}
	if len(out) == 0 {
		return res, nil, nil
	}
	out = s.publishHome(sh, st, version{T: stamp, CSeq: req.CSeq, Node: s.self}, now, out, true)
	g := s.out.add(now, out...)
	s.st.reschedule(sh, st)
	return res, g, nil
}

func cloneString(s string) string { return string([]byte(s)) }

// indexKey finds the binding with b's key (Binding.Key without building
// strings).
func indexKey(bs []location.Binding, b *location.Binding) int {
	for i := range bs {
		c := &bs[i]
		if b.InstanceID != "" {
			if c.InstanceID == b.InstanceID && c.RegID == b.RegID {
				return i
			}
		} else if c.InstanceID == "" && c.Contact == b.Contact {
			return i
		}
	}
	return -1
}

// publishHome recomputes this node's metadata entry for the AoR and, if it
// changed (or always, when force), stores it and appends the AoR's whole
// metadata row to out: a node that learns that the old home lost the
// binding learns the new home in the same message.
func (s *Service) publishHome(sh *shard, st *aorState, ver version, now int64, out []outRec, force bool) []outRec {
	m := s.st.homeMeta(st, s.self, s.region, ver, now)
	old := st.meta(s.self)
	if !force {
		if old != nil && sameMeta(old, &m) {
			return out
		}
		if old == nil && m.dead && len(m.claims) == 0 {
			return out
		}
	}
	if old != nil && !ver.newer(old.ver) {
		m.ver = version{T: old.ver.T + 1, CSeq: ver.CSeq, Node: s.self}
	}
	if !s.st.mergeMeta(sh, st, m, now) {
		return out
	}
	for i := range st.metas {
		out = append(out, outRec{aor: st.aor, kind: recMeta, m: st.metas[i]})
	}
	return out
}

// Remove implements location.Store: it deletes one binding by key (a NAT
// keepalive failure). It removes a binding homed here, or one this node
// serves for a down home whose tag it owns.
func (s *Service) Remove(ctx context.Context, aor, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	sh := s.st.shard(aor)
	sh.mu.Lock()
	defer func() {
		sh.mu.Unlock()
		s.flushInline()
	}()
	st := sh.state(aor, false)
	if st == nil {
		return nil
	}
	for i := range st.binds {
		r := &st.binds[i]
		if r.key != key || !s.st.usable(st, r, now) {
			continue
		}
		home := r.home
		if home != s.self && !s.servesFor(home, s.homeRegion(st, home)) {
			continue
		}
		stamp := st.stamp(s.self, now)
		t := kill(*r)
		t.ver = version{T: stamp, CSeq: r.ver.CSeq, Node: s.self}
		if !s.st.mergeBind(sh, st, t, now) {
			return nil
		}
		out := []outRec{{aor: st.aor, kind: recBind, b: t}}
		if home == s.self {
			out = s.publishHome(sh, st, version{T: stamp, Node: s.self}, now, out, true)
		} else {
			// On behalf of the down home, so that other regions stop
			// relaying for a binding that is gone.
			m := s.st.homeMeta(st, home, s.homeRegion(st, home), version{T: stamp, Node: s.self}, now)
			if s.st.mergeMeta(sh, st, m, now) {
				for j := range st.metas {
					out = append(out, outRec{aor: st.aor, kind: recMeta, m: st.metas[j]})
				}
			}
		}
		s.out.add(now, out...)
		s.st.reschedule(sh, st)
		return nil
	}
	return nil
}

// Len implements location.Store: the bindings homed on this node
// (including expired ones not yet swept), as a single-node store would
// count them.
func (s *Service) Len() int { return int(s.st.home.Load()) }

// Bindings returns every NATed binding this node delivers to: those homed
// here and those it serves for down homes whose tag it owns (Home = this
// node). It is the NAT keepalive pinger's source (a nat.Source), which
// pings NATed contacts only; it lists them once a second, so the others
// are not even decoded.
func (s *Service) Bindings(ctx context.Context) ([]location.Binding, error) {
	var out []location.Binding
	now := s.now()
	for i := range s.st.shards {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sh := &s.st.shards[i]
		sh.mu.Lock()
		if sh.nated == 0 {
			sh.mu.Unlock()
			continue
		}
		for _, st := range sh.aors {
			for j := range st.binds {
				r := &st.binds[j]
				if !r.nated || !s.st.usable(st, r, now) {
					continue
				}
				if r.home == s.self || s.servesFor(r.home, s.homeRegion(st, r.home)) {
					b := r.binding(st.aor)
					b.Home = s.self
					out = append(out, b)
				}
			}
		}
		sh.mu.Unlock()
	}
	return out, nil
}

// homeRegion is the region of a home node: from the cluster, else from the
// metadata it published.
func (s *Service) homeRegion(st *aorState, home uint32) string {
	if home == s.self {
		return s.region
	}
	if m, ok := s.cl.Meta(home); ok && m.Region != "" {
		return m.Region
	}
	if st != nil {
		if m := st.meta(home); m != nil && m.region != "" {
			return m.region
		}
	}
	if !s.cfg.ReplicateContactsCrossRegion && st != nil {
		// Only this region's bindings are held here.
		for i := range st.binds {
			if st.binds[i].home == home {
				return s.region
			}
		}
	}
	return ""
}

// serving reports whether a home node can answer for its bindings: up,
// synced for its region's bindings (a restarting home is not), and not
// draining or drained. Such a home is treated like a down one, its tag owner
// delivering from the replicas: relaying to it kept it busy, so its drain
// never went quiet (the roll-out saw it withdraw only at the drain's shift
// timeout, 30 s, and stop only at the shutdown timeout, failing calls).
// With nobody else to take over (no other owner of the region's tag), a
// drained home still serves.
func (s *Service) serving(home uint32, region string) bool {
	if home == s.self {
		return true
	}
	if !s.cl.IsUp(home) {
		return false
	}
	m, ok := s.cl.Meta(home)
	if !ok || !slices.Contains(m.Synced, BindCap(region, s.cfg.ReplicateContactsCrossRegion)) {
		return false
	}
	if m.Drained || m.Draining {
		owner := s.cl.TagOwner(s.cfg.TagFor(region))
		return owner == 0 || owner == home
	}
	return true
}

// servesFor reports whether this node delivers a down home's bindings: it
// owns the home's sharing tag and holds its replicas.
func (s *Service) servesFor(home uint32, region string) bool {
	if home == s.self || region == "" || s.serving(home, region) {
		return false
	}
	if region != s.region && !s.cfg.ReplicateContactsCrossRegion {
		return false
	}
	return s.cl.TagOwner(s.cfg.TagFor(region)) == s.self
}

// HandleEvent takes the cluster's events (Node.Subscribe). It runs on the
// cluster's goroutine and does nothing slow.
func (s *Service) HandleEvent(e cluster.Event) {
	switch e.Kind {
	case cluster.EventSyncState:
		synced := e.State == core.Synced
		switch e.Cap {
		case MetaCap:
			s.metaSynced.Store(synced)
		case s.bindCap:
			s.bindSynced.Store(synced)
		default:
			return
		}
		if synced {
			s.reconcile.Store(true)
			s.out.kick()
		}
	case cluster.EventNodeUp, cluster.EventNodeDown:
		// The node's view is refreshed after its subscribers run: Run
		// re-reads it.
		s.peersStale.Store(true)
		s.out.kick()
	}
}

// Synced reports whether both capabilities are synced on this node (the
// daemon may gate anycast announcements on it).
func (s *Service) Synced() bool { return s.bindSynced.Load() && s.metaSynced.Load() }

// Run sends replication, enforces ack timeouts and sweeps expired state
// until ctx ends; it returns nil then. Save waits on it: start it before
// the SIP server.
func (s *Service) Run(ctx context.Context) error {
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	ackT := time.NewTimer(time.Hour)
	defer ackT.Stop()
	flushT := time.NewTimer(time.Hour)
	defer flushT.Stop()
	armed := false
	defer s.out.openConfirm()() // after s.stop: its callbacks are run too
	defer s.stop()
	s.Tick(s.clock())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.out.signal:
		case <-flushT.C:
			armed = false
		case <-ackT.C:
			s.out.expire(s.now())
		case now := <-sweep.C:
			s.Tick(now)
		}
		switch d := s.out.wait(s.now(), s.cfg.BatchDelay); {
		case d == 0:
			s.flush()
		case d > 0 && !armed:
			flushT.Reset(d)
			armed = true
		}
		if s.reconcile.Load() {
			s.reconcileHome(s.now())
		}
		if s.peersStale.Swap(false) {
			s.refreshPeers(s.now())
		}
		if d := s.out.nextDeadline(); d != 0 {
			ackT.Reset(time.Duration(max(d-s.now(), 0)))
		}
	}
}

func (s *Service) stop() {
	if s.stopOnce.CompareAndSwap(false, true) {
		s.out.stop()
		close(s.stopped)
	}
}

// Tick does the periodic work at now: sweeps what expired, retires
// bindings superseded by a move, times out partner acks, refreshes route
// costs. Run calls it every sweep_interval; simulations call it directly.
func (s *Service) Tick(now time.Time) {
	at := now.UnixNano()
	for i := range s.st.shards {
		sh := &s.st.shards[i]
		sh.mu.Lock()
		if len(sh.heap) == 0 || sh.heap[0].at > at {
			sh.mu.Unlock()
			continue
		}
		var out []outRec
		sh.due(at, func(st *aorState) {
			var retired []brec
			for _, r := range s.st.sweep(sh, st, at) {
				if r.home == s.self {
					retired = append(retired, r)
				}
			}
			if len(retired) > 0 {
				s.m.moved.Add(float64(len(retired)))
				for _, r := range retired {
					out = append(out, outRec{aor: st.aor, kind: recBind, b: r})
				}
				out = s.publishHome(sh, st, version{T: st.stamp(s.self, at), Node: s.self}, at, out, false)
			}
			s.st.reschedule(sh, st)
		})
		s.out.add(at, out...)
		sh.mu.Unlock()
	}
	if s.reconcile.Load() {
		s.reconcileHome(at)
	}
	s.out.expire(at)
	if p := s.peers.Load(); p == nil || at-p.at >= int64(s.cfg.SweepInterval) {
		s.refreshPeers(at)
	}
	s.flushInline()
}

// reconcileHome runs once both capabilities are synced: it republishes
// this node's metadata wherever it no longer matches the bindings homed
// here (after a restart: an entry from the previous life whose bindings
// did not survive, or bindings restored without their metadata).
func (s *Service) reconcileHome(at int64) {
	if !s.Synced() || !s.reconcile.CompareAndSwap(true, false) {
		return
	}
	n := 0
	for i := range s.st.shards {
		sh := &s.st.shards[i]
		sh.mu.Lock()
		var out []outRec
		for _, st := range sh.sorted(nil, s.inline) {
			has := st.meta(s.self) != nil
			for j := range st.binds {
				has = has || st.binds[j].home == s.self
			}
			if !has {
				continue
			}
			before := len(out)
			out = s.publishHome(sh, st, version{T: st.stamp(s.self, at), Node: s.self}, at, out, false)
			if len(out) > before {
				n++
				s.st.reschedule(sh, st)
			}
		}
		s.out.add(at, out...)
		sh.mu.Unlock()
	}
	if n > 0 {
		s.log.Info("geo: republished metadata after sync", "aors", n)
	}
	s.flushInline()
}

// flushInline flushes at the end of an entry point when the cluster is
// inline (a simulation); Run flushes otherwise.
func (s *Service) flushInline() {
	if s.inline {
		s.flush()
	}
}

// regionFilter selects the nodes that hold this node's bindings: the nodes
// of its region, which are those its sharing tag makes eligible
// (CheckClusterTags), or every node with cross-region replication.
func (s *Service) regionFilter(m cluster.NodeMeta) bool {
	return s.cfg.ReplicateContactsCrossRegion || m.Region == s.region
}

func (s *Service) otherFilter(m cluster.NodeMeta) bool { return m.Region != s.region }
