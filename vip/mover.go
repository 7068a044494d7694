package vip

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/cluster"
)

// Tags is the cluster's view of sharing tags: *cluster.Node is one.
type Tags interface {
	Tags() []cluster.TagView
}

// Mover keeps the node's VIPs in line with the sharing tags it owns: the
// VIPs of the tags it is the active owner of are present, the others are
// not, and the l3 ones it holds are announced over BGP.
//
// It reads ownership from Tags at start (the reconcile that removes VIPs a
// crash left behind), whenever Notify reports a tag owner change, and
// every resync interval in case an event was missed or an address was
// removed by hand.
type Mover struct {
	vips   []VIP
	r      Router
	tags   Tags
	extra  func([]bgp.Advertisement)
	log    *slog.Logger
	m      *metrics
	resync time.Duration
	poke   chan struct{}

	mu     sync.Mutex
	owned  []VIP // what the last Set made present
	synced bool  // the last Set succeeded
	l3     []bgp.Advertisement
}

// MoverOption sets an optional dependency of a Mover.
type MoverOption func(*Mover)

// WithMoverLogger sets the logger. Default: discard.
func WithMoverLogger(l *slog.Logger) MoverOption { return func(m *Mover) { m.log = l } }

// WithRegisterer registers the metrics on reg. Default: none.
func WithRegisterer(reg prometheus.Registerer) MoverOption {
	return func(m *Mover) { m.m = newMetrics(reg, m.vips) }
}

// WithAdvertiser hands the /32 and /128 of the l3 VIPs the node holds to
// f (the announcement controller's SetExtra) after every change. f must
// not call back into the mover.
func WithAdvertiser(f func([]bgp.Advertisement)) MoverOption { return func(m *Mover) { m.extra = f } }

// WithResync sets the resync interval. Default 2 s.
func WithResync(d time.Duration) MoverOption { return func(m *Mover) { m.resync = d } }

// NewMover builds a mover for vips (from Parse) on r, reading ownership
// from tags.
func NewMover(vips []VIP, r Router, tags Tags, opts ...MoverOption) *Mover {
	m := &Mover{vips: slices.Clone(vips), r: r, tags: tags, log: slog.New(slog.DiscardHandler),
		resync: 2 * time.Second, poke: make(chan struct{}, 1)}
	for _, o := range opts {
		o(m)
	}
	if m.m == nil {
		m.m = newMetrics(nil, m.vips)
	}
	return m
}

// Notify takes a cluster event (subscribe it with cluster.Node.Subscribe).
// It never blocks: a tag owner change wakes Run.
func (m *Mover) Notify(ev cluster.Event) {
	if ev.Kind != cluster.EventTagOwner {
		return
	}
	if !slices.ContainsFunc(m.vips, func(v VIP) bool { return v.Tag == ev.Tag }) {
		return
	}
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Run reconciles at once, then on every tag owner change and every resync
// interval, until ctx ends. It leaves the VIPs as they are when it
// returns: call Release to give them up.
func (m *Mover) Run(ctx context.Context) error {
	t := time.NewTicker(m.resync)
	defer t.Stop()
	for {
		m.Reconcile()
		select {
		case <-ctx.Done():
			return nil
		case <-m.poke:
		case <-t.C:
		}
	}
}

// Reconcile makes the VIPs match the tags owned now.
func (m *Mover) Reconcile() {
	active := map[string]bool{}
	for _, t := range m.tags.Tags() {
		if t.Active {
			active[t.Name] = true
		}
	}
	var want []VIP
	for _, v := range m.vips {
		if active[v.Tag] {
			want = append(want, v)
		}
	}
	m.apply(want)
}

// Release removes every VIP and withdraws the l3 ones: the node is
// stopping and its partners take the tags over.
func (m *Mover) Release() error {
	return m.apply(nil)
}

func (m *Mover) apply(want []VIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	same := m.synced && slices.Equal(m.owned, want)
	err := m.r.Set(want)
	if err != nil {
		if m.synced || !same {
			m.log.Error("vip: could not apply the owned VIPs; retrying", "err", err)
		}
		m.synced = false
	} else {
		m.synced = true
	}
	if !same {
		for _, v := range want {
			if !slices.Contains(m.owned, v) {
				m.log.Info("vip: this node now holds the VIP", "vip", v.String())
				m.m.changed(v, true)
			}
		}
		for _, v := range m.owned {
			if !slices.Contains(want, v) {
				m.log.Info("vip: this node gave up the VIP", "vip", v.String())
				m.m.changed(v, false)
			}
		}
		m.owned = want
	}
	// Announce an l3 VIP only once its address is in place; withdraw a
	// lost one whatever happened.
	var l3 []bgp.Advertisement
	for _, v := range want {
		if v.Mode != ModeL3 {
			continue
		}
		if err == nil || slices.ContainsFunc(m.l3, func(a bgp.Advertisement) bool { return a.Prefix == v.Prefix }) {
			l3 = append(l3, bgp.Advertisement{Prefix: v.Prefix})
		}
	}
	if m.extra != nil && !slices.EqualFunc(l3, m.l3, bgp.Advertisement.Equal) {
		m.extra(l3)
	}
	m.l3 = l3
	return err
}

// Owned lists the VIPs the node holds.
func (m *Mover) Owned() []VIP {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.owned)
}

// NoteAnnounced counts a gratuitous ARP or NA sent (pass it to
// WithAnnounced of the Linux router).
func (m *Mover) NoteAnnounced(v VIP) { m.m.announced.Inc() }

// metrics of the mover. Label values are bounded by the config.
type metrics struct {
	held      *prometheus.GaugeVec
	moves     *prometheus.CounterVec
	announced prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, vips []VIP) *metrics {
	m := &metrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anyedge_vip_held",
			Help: "1 for each configured VIP this node holds (its sharing tag is owned here).",
		}, []string{"vip", "tag"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_vip_moves_total",
			Help: "VIPs this node took (added) or gave up (removed).",
		}, []string{"change"}),
		announced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_vip_announcements_total",
			Help: "Gratuitous ARP requests and unsolicited neighbour advertisements sent for arriving l2 VIPs.",
		}),
	}
	for _, v := range vips {
		m.held.WithLabelValues(v.Prefix.String(), v.Tag).Set(0)
	}
	m.moves.WithLabelValues("added")
	m.moves.WithLabelValues("removed")
	if reg != nil {
		reg.MustRegister(m.held, m.moves, m.announced)
	}
	return m
}

func (m *metrics) changed(v VIP, added bool) {
	if added {
		m.held.WithLabelValues(v.Prefix.String(), v.Tag).Set(1)
		m.moves.WithLabelValues("added").Inc()
		return
	}
	m.held.WithLabelValues(v.Prefix.String(), v.Tag).Set(0)
	m.moves.WithLabelValues("removed").Inc()
}
