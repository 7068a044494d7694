package announce

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyedge/anyedge/bgp"
)

// Phase is the drain phase.
type Phase uint8

// Drain phases, in order. The numeric values are exported as
// anyedge_drain_state: only append.
const (
	// PhaseActive: not drained; the node announces when healthy.
	PhaseActive Phase = iota
	// PhaseShifting: the paths carry GRACEFUL_SHUTDOWN (and the drain
	// prepend) while traffic moves to other nodes.
	PhaseShifting
	// PhaseFinishing: the paths are withdrawn; in-flight transactions
	// finish.
	PhaseFinishing
	// PhaseDrained: the node is marked drained in the cluster and has
	// handed its sharing tags over.
	PhaseDrained
)

var phaseNames = [...]string{"active", "shifting", "finishing", "drained"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// MarshalText writes the phase's name.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Reasons that keep the node from announcing normally. The set is closed:
// it labels anyedge_readiness.
const (
	ReasonListenersDown = "listeners_down"
	ReasonNotSynced     = "not_synced"
	ReasonIsolated      = "isolated"
	ReasonDrained       = "drained"
	ReasonHoldDown      = "hold_down"
	ReasonShuttingDown  = "shutting_down"
)

// Reasons lists every reason, in the order Status reports them.
var Reasons = []string{ReasonListenersDown, ReasonNotSynced, ReasonIsolated, ReasonDrained, ReasonHoldDown, ReasonShuttingDown}

// Load is what the drain waits on, read at every poll while draining.
type Load struct {
	// Started counts the transactions the node has started since it
	// began: a counter, so that the drain sees any new one, however
	// brief. The rate is zero while it does not move.
	Started uint64
	// InFlight is the number of transactions (and dialogs, where the node
	// tracks them) not finished yet.
	InFlight int
}

// ErrShuttingDown is returned by Drain once Shutdown was called.
var ErrShuttingDown = errors.New("announce: shutting down")

// Machine is the announcement and drain state machine. It has no clock,
// no I/O and no goroutines: every input carries the time, and the caller
// reads the outputs (Advertisements, ClusterDrained, DrainRequested) after
// each input and applies them. It is not safe for concurrent use.
type Machine struct {
	cfg     Config
	anycast []bgp.Advertisement // the region's policy, config order

	sig      Signals
	healthy  bool
	since    time.Time     // when healthy last became true
	hold     time.Duration // the hold-down before the next announcement
	passed   bool          // a hold-down has run out: the node has been fit to announce
	restarts int           // unclean restarts counted at start

	phase      Phase
	phaseSince time.Time
	load       Load
	loadSeen   bool
	loadAt     time.Time // when load was read
	lastStart  time.Time // last time Load.Started moved (or the phase began)

	shutdown bool
	extras   []bgp.Advertisement
}

// NewMachine builds the machine from a validated config. anycast are the
// prefixes to announce, with the node's region policy applied
// (Config.Apply). drained is the persisted drain state: a node drained
// before a restart starts drained (withdrawn, marked drained in the
// cluster). The node starts unhealthy until SetSignals says otherwise.
func NewMachine(cfg Config, anycast []bgp.Advertisement, drained bool, now time.Time) *Machine {
	m := &Machine{cfg: cfg, anycast: slices.Clone(anycast), phaseSince: now, hold: cfg.StartHoldDown}
	if drained {
		m.phase = PhaseDrained
	}
	return m
}

// SetRestarts sets the number of unclean restarts within the restart
// window that preceded this start (see Config.RestartWindow): the first
// announcement waits Config.FirstHoldDown(n). Call it before the first
// SetSignals.
func (m *Machine) SetRestarts(n int) {
	m.restarts = n
	m.hold = m.cfg.FirstHoldDown(n)
}

// SetSignals records the readiness inputs.
func (m *Machine) SetSignals(now time.Time, s Signals) {
	s.Unsynced = slices.Clone(s.Unsynced)
	m.sig = s
	ok := s.ListenersUp && len(s.Unsynced) == 0 && !s.Region.Isolated()
	switch {
	case ok && !m.healthy:
		m.healthy, m.since = true, now
	case !ok && m.healthy:
		m.healthy = false
		// After a failure the node waits the hold-down again; a start
		// hold-down that has not run out yet is never shortened by one.
		if m.passed {
			m.hold = m.cfg.HoldDown
		} else {
			m.hold = max(m.hold, m.cfg.HoldDown)
		}
	}
	m.advance(now)
}

// SetLoad records the node's load; the drain moves on from it.
func (m *Machine) SetLoad(now time.Time, l Load) {
	if !m.loadSeen || l.Started != m.load.Started {
		m.lastStart = now
	}
	m.load, m.loadSeen, m.loadAt = l, true, now
	m.advance(now)
}

// NeedsLoad reports whether the drain waits on the load: the caller need
// only read it then.
func (m *Machine) NeedsLoad() bool { return m.phase == PhaseShifting || m.phase == PhaseFinishing }

// Tick lets timeouts expire.
func (m *Machine) Tick(now time.Time) { m.advance(now) }

// Reconfigure replaces the config (a validated one) and the anycast
// prefixes with their region policy applied (a config reload). The drain
// phase and the health history are kept: a reload neither undrains nor
// restarts the hold-down. The caller applies Advertisements as usual, and
// the speaker sends only what changed.
func (m *Machine) Reconfigure(now time.Time, cfg Config, anycast []bgp.Advertisement) {
	m.cfg = cfg
	m.anycast = slices.Clone(anycast)
	m.advance(now)
}

// SetExtra sets extra advertisements, the /32 and /128 of the L3 VIPs the
// node owns. They are announced while the listeners are up and the node
// is not shutting down, whatever the drain phase: the node keeps a VIP
// until the cluster moves its sharing tag. A prefix that is also an
// anycast prefix is ignored.
func (m *Machine) SetExtra(advs []bgp.Advertisement) {
	m.extras = slices.Clone(advs)
}

// Drain starts the drain. A drain already under way is left as it is.
func (m *Machine) Drain(now time.Time) error {
	if m.shutdown {
		return ErrShuttingDown
	}
	if m.phase != PhaseActive {
		return nil
	}
	if m.announcing(now) {
		m.enter(now, PhaseShifting)
	} else {
		// Nothing announced: there is no traffic to shift.
		m.enter(now, PhaseFinishing)
	}
	m.advance(now)
	return nil
}

// Undrain ends a drain at whatever phase it is: the node is eligible for
// tags again and announces as soon as it is healthy (a node that has
// stayed healthy through the drain is past its hold-down).
func (m *Machine) Undrain(now time.Time) {
	if m.phase != PhaseActive {
		m.enter(now, PhaseActive)
	}
}

// Shutdown withdraws everything for good: the process is stopping.
func (m *Machine) Shutdown() { m.shutdown = true }

func (m *Machine) enter(now time.Time, p Phase) {
	m.phase, m.phaseSince, m.lastStart = p, now, now
}

// advance notes the end of a hold-down and moves the drain on when its
// condition or timeout is met.
func (m *Machine) advance(now time.Time) {
	if m.healthy && !m.inHoldDown(now) {
		m.passed = true
	}
	d := m.cfg.Drain
	for {
		switch m.phase {
		case PhaseShifting:
			// Only readings taken in this phase count: the rate must be
			// seen to be zero after the paths were tagged.
			quiet := m.loadAt.After(m.phaseSince) && now.Sub(m.lastStart) >= d.Quiet
			if quiet || now.Sub(m.phaseSince) >= d.ShiftTimeout || !m.healthy {
				m.enter(now, PhaseFinishing)
				continue
			}
		case PhaseFinishing:
			idle := m.loadAt.After(m.phaseSince) && m.load.InFlight == 0
			if idle || now.Sub(m.phaseSince) >= d.FinishTimeout {
				m.enter(now, PhaseDrained)
				continue
			}
		}
		return
	}
}

// announcing reports whether the anycast prefixes are announced.
func (m *Machine) announcing(now time.Time) bool {
	if m.shutdown || !m.healthy || m.inHoldDown(now) {
		return false
	}
	return m.phase == PhaseActive || m.phase == PhaseShifting
}

func (m *Machine) inHoldDown(now time.Time) bool {
	return m.healthy && now.Sub(m.since) < m.hold
}

// Advertisements is the desired announced set: the anycast prefixes when
// announcing (with GRACEFUL_SHUTDOWN and the drain prepend while
// shifting), and the extras.
func (m *Machine) Advertisements(now time.Time) []bgp.Advertisement {
	var out []bgp.Advertisement
	have := map[netip.Prefix]bool{}
	for _, a := range m.anycast {
		have[a.Prefix] = true
	}
	if m.announcing(now) {
		advs := m.anycast
		if m.phase == PhaseShifting {
			advs = bgp.WithGracefulShutdown(advs...)
			for i := range advs {
				advs[i].Prepend = min(advs[i].Prepend+m.cfg.Drain.Prepend, bgp.MaxPrepend)
			}
		}
		for _, a := range advs {
			a.Communities = slices.Clone(a.Communities)
			out = append(out, a)
		}
	}
	if !m.shutdown && m.sig.ListenersUp {
		for _, a := range m.extras {
			if !have[a.Prefix] {
				have[a.Prefix] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// ClusterDrained reports whether the node should be marked drained in the
// cluster (ineligible for sharing tags).
func (m *Machine) ClusterDrained() bool { return m.phase == PhaseDrained }

// DrainRequested is the drain state to persist: true from Drain to
// Undrain.
func (m *Machine) DrainRequested() bool { return m.phase != PhaseActive }

// Phase is the drain phase.
func (m *Machine) Phase() Phase { return m.phase }

// Status is a snapshot of the machine for admin and metrics.
type Status struct {
	// Announcing is true while the anycast prefixes are announced
	// normally: healthy, past the hold-down, not draining.
	Announcing bool `json:"announcing"`
	// Healthy is true when listeners, sync and region reachability are
	// all fine, whatever the drain and hold-down.
	Healthy bool `json:"healthy"`
	// Reasons lists what keeps the node from announcing normally, in the
	// order of Reasons; empty while Announcing.
	Reasons []string `json:"reasons"`
	// Unsynced lists the required capabilities not synced yet.
	Unsynced []string `json:"unsynced,omitempty"`
	// Region is the reachability of the node's region.
	Region RegionView `json:"region"`
	// HoldDownUntil is when the hold-down ends, while it runs.
	HoldDownUntil time.Time `json:"hold_down_until,omitzero"`
	// Restarts is the number of unclean restarts within the restart
	// window counted at start (they lengthen the first hold-down).
	Restarts int `json:"restarts,omitempty"`
	// Phase is the drain phase and PhaseSince when it began.
	Phase      Phase     `json:"drain_phase"`
	PhaseSince time.Time `json:"drain_phase_since"`
	// InFlight is the last in-flight count read during a drain.
	InFlight int `json:"in_flight"`
	// ShuttingDown is true once the process is stopping.
	ShuttingDown bool `json:"shutting_down"`
}

// Status returns the machine's state at now.
func (m *Machine) Status(now time.Time) Status {
	s := Status{
		Healthy:      m.healthy,
		Unsynced:     slices.Clone(m.sig.Unsynced),
		Region:       m.sig.Region,
		Phase:        m.phase,
		PhaseSince:   m.phaseSince,
		InFlight:     m.load.InFlight,
		ShuttingDown: m.shutdown,
		Restarts:     m.restarts,
	}
	s.Announcing = m.announcing(now) && m.phase == PhaseActive
	if !m.sig.ListenersUp {
		s.Reasons = append(s.Reasons, ReasonListenersDown)
	}
	if len(m.sig.Unsynced) > 0 {
		s.Reasons = append(s.Reasons, ReasonNotSynced)
	}
	if m.sig.Region.Isolated() {
		s.Reasons = append(s.Reasons, ReasonIsolated)
	}
	if m.phase != PhaseActive {
		s.Reasons = append(s.Reasons, ReasonDrained)
	}
	if m.inHoldDown(now) {
		s.Reasons = append(s.Reasons, ReasonHoldDown)
		s.HoldDownUntil = m.since.Add(m.hold)
	}
	if m.shutdown {
		s.Reasons = append(s.Reasons, ReasonShuttingDown)
	}
	return s
}

// Explain lists the reasons for people, with what each one is about, for
// example "not_synced: cps" or "isolated: reaches 1 of 2 nodes of its
// region"; empty while announcing.
func (s Status) Explain() []string {
	var out []string
	for _, r := range s.Reasons {
		switch r {
		case ReasonNotSynced:
			r += ": " + strings.Join(s.Unsynced, ", ")
		case ReasonIsolated:
			r += fmt.Sprintf(": reaches %d of %d nodes of its region, %d of %d in the cluster",
				s.Region.Reachable, s.Region.Known, s.Region.AllReachable, s.Region.AllKnown)
		case ReasonDrained:
			if s.Phase != PhaseDrained {
				r += ": " + s.Phase.String() // still on the way
			}
		case ReasonHoldDown:
			r += ": until " + s.HoldDownUntil.UTC().Format("15:04:05.000Z")
			if s.Restarts > 0 {
				r += fmt.Sprintf(" (%d unclean restarts in the restart window)", s.Restarts)
			}
		}
		out = append(out, r)
	}
	return out
}
