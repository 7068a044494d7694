package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/bgp/announce"
	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/vip"
)

// The announcement controller (bgp/announce) decides what the speaker
// announces, when the node is ready, and runs the drain; the VIP mover
// (vip) follows the sharing tags. This file wires both to the node, the
// SIP server and the speaker.

// VIPRouterFactory builds the router that puts VIPs on the host. The
// default is vip.NewLinux.
type VIPRouterFactory func(vips []vip.VIP, announced func(vip.VIP)) (vip.Router, error)

func newLinuxVIPRouter(d *Daemon) VIPRouterFactory {
	return func(vips []vip.VIP, announced func(vip.VIP)) (vip.Router, error) {
		return vip.NewLinux(vips, vip.WithLogger(d.log.With("component", "vip")), vip.WithAnnounced(announced))
	}
}

// WithVIPRouterFactory replaces vip.NewLinux, for tests.
func WithVIPRouterFactory(f VIPRouterFactory) Option { return func(d *Daemon) { d.newVIPRouter = f } }

// subscriber is a node that reports cluster events; *cluster.Node is one.
type subscriber interface {
	Subscribe(fn func(cluster.Event))
}

// onClusterEvent runs on the cluster's loop: it must not block. A change
// of membership or sync is looked at at once rather than at the next
// poll; a tag owner change wakes the VIP mover.
func (d *Daemon) onClusterEvent(e cluster.Event) {
	if c := d.ctl.Load(); c != nil && e.Kind != cluster.EventTagOwner {
		c.Poke()
	}
	if m := d.mover.Load(); m != nil {
		m.Notify(e)
	}
}

// health reads the readiness signals for the controller.
func (d *Daemon) health() announce.Signals {
	s := announce.Signals{ListenersUp: d.sip == nil || d.sip.Ready()}
	self := cluster.NodeMeta{ID: d.cfg.Cluster.NodeID, Region: d.cfg.Cluster.Region, Seed: d.cfg.Cluster.Seed}
	s.Unsynced, s.Region = announce.ClusterSignals(self, d.node.Nodes(), d.node.Caps(), d.liveConfig().Announce.RequiredCaps)
	s.Unsynced = append(s.Unsynced, d.locationUnready()...)
	return s
}

// The SIP server's series that the drain waits on.
const (
	sipRequestsMetric = "anyedge_sip_requests_total"
	sipInFlightMetric = "anyedge_sip_transactions_in_flight"
)

// load reads the SIP server's request counter and in-flight transactions
// from the registry. It is read only while a drain or a shutdown waits.
func (d *Daemon) load() announce.Load {
	var l announce.Load
	if d.sip == nil {
		return l
	}
	mfs, err := d.reg.Gather()
	if err != nil {
		d.log.Warn("drain: cannot read the SIP counters", "err", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case sipRequestsMetric:
			for _, m := range mf.GetMetric() {
				l.Started += uint64(m.GetCounter().GetValue())
			}
		case sipInFlightMetric:
			for _, m := range mf.GetMetric() {
				l.InFlight += int(m.GetGauge().GetValue())
			}
		}
	}
	return l
}

// startAnnounce starts the controller on sp (the speaker, or a speaker
// that announces nothing when the node has no bgp section) and the VIP
// mover, with their loops stopped by d.stopAnnounce.
func (d *Daemon) startAnnounce(ctx context.Context, sp bgp.Speaker) error {
	var advs []bgp.Advertisement
	if d.cfg.BGP != nil {
		advs = d.cfg.BGP.Advertisements()
	}
	deps := announce.Deps{
		Speaker: sp, Health: d.health, Load: d.load, Prefixes: advs,
		Region: d.cfg.Cluster.Region, StateDir: d.cfg.Cluster.StateDir,
	}
	if dn, ok := d.node.(announce.Drainable); ok {
		deps.Cluster = dn
	}
	ctl, err := announce.New(d.cfg.Announce, deps,
		announce.WithLogger(d.log.With("component", "announce")), announce.WithRegisterer(d.reg))
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	d.ctl.Store(ctl)

	var mover *vip.Mover
	if len(d.cfg.VIPs) > 0 {
		vips, err := vip.Parse(slices.Clone(d.cfg.VIPs), nil)
		if err != nil {
			return fmt.Errorf("vips: %w", err)
		}
		d.vipRouter, err = d.newVIPRouter(vips, func(v vip.VIP) {
			if m := d.mover.Load(); m != nil {
				m.NoteAnnounced(v)
			}
		})
		if err != nil {
			return fmt.Errorf("vips: %w", err)
		}
		mover = vip.NewMover(vips, d.vipRouter, d.node,
			vip.WithMoverLogger(d.log.With("component", "vip")),
			vip.WithRegisterer(d.reg),
			vip.WithAdvertiser(ctl.SetExtra))
		d.mover.Store(mover)
	}

	actx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = ctl.Run(actx) })
	if mover != nil {
		wg.Go(func() { _ = mover.Run(actx) })
	}
	d.stopAnnounce = func() { stop(); wg.Wait() }
	return nil
}

// Readiness is whether the node should take traffic now and, when not,
// every reason why: the controller's view (it gates the announcements).
type Readiness struct {
	Ready   bool
	Reasons []string
}

// Readiness reports whether the node takes traffic now, and why not.
func (d *Daemon) Readiness() Readiness {
	c := d.ctl.Load()
	if c == nil {
		return Readiness{Reasons: []string{"starting"}}
	}
	st := c.Report().Status
	return Readiness{Ready: st.Announcing, Reasons: st.Explain()}
}

// drainer is the admin API's view of the drain.
type drainer struct{ d *Daemon }

func (a drainer) SetDrained(on bool) error {
	c := a.d.ctl.Load()
	if c == nil {
		return fmt.Errorf("drain: %w", cluster.ErrNotRunning)
	}
	if on {
		return c.Drain()
	}
	return c.Undrain()
}

// nopSpeaker is the speaker of a node without a bgp section: it announces
// nothing, so that readiness and drain still run through the controller.
type nopSpeaker struct {
	mu   sync.Mutex
	have []bgp.Advertisement
}

func (s *nopSpeaker) Set(_ context.Context, advs ...bgp.Advertisement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.have = slices.Clone(advs)
	return nil
}
func (s *nopSpeaker) Peers() []bgp.PeerStatus { return nil }
func (s *nopSpeaker) Announced() []bgp.Advertisement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.have)
}
func (s *nopSpeaker) Close() error { return nil }

// drainedAtStart reads the persisted drain state, for the cluster node's
// config: a node drained before it stopped joins drained.
func drainedAtStart(stateDir string) (bool, error) {
	if stateDir == "" {
		return false, nil
	}
	st, err := announce.LoadState(filepath.Join(stateDir, announce.StateFile))
	return st.Drained, err
}
