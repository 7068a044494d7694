package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/bgp"
)

// Deps are what the controller reads and drives.
type Deps struct {
	// Speaker announces the prefixes. Required.
	Speaker bgp.Speaker
	// Health reads the readiness signals; called at every poll, from the
	// controller's goroutine. Required.
	Health func() Signals
	// Load reads the node's load for the drain; called at every poll
	// while a drain waits, and by Shutdown.
	// Default: always idle (a drain then waits drain.quiet and moves on).
	Load func() Load
	// Cluster marks the node drained in the cluster, which hands its
	// sharing tags over. Default: none (tags are not handed over).
	Cluster Drainable
	// Prefixes are the anycast prefixes (the bgp section's). Announced
	// with the policy of Region.
	Prefixes []bgp.Advertisement
	// Region is the node's region; it selects the region policy.
	Region string
	// StateDir holds the drain state (drain.json). Default "": the drain
	// state does not survive a restart.
	StateDir string
}

// Drainable is the cluster node: *cluster.Node is one.
type Drainable interface {
	SetDrained(drained bool) error
}

// DrainingNotifier is an optional part of Drainable: told as soon as a
// drain is requested or cancelled, so that other nodes stop sending new
// work here while the paths shift (*cluster.Node is one).
type DrainingNotifier interface {
	SetDraining(draining bool) error
}

// Option sets an optional dependency.
type Option func(*options)

type options struct {
	log *slog.Logger
	reg prometheus.Registerer
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegisterer registers the metrics on reg. Default: none.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// setTimeout bounds one Speaker.Set.
const setTimeout = 5 * time.Second

// Controller runs a Machine: it polls the inputs, steps the machine and
// applies its outputs to the speaker, the cluster and the state file.
// Applying is declarative: what failed is retried at the next poll.
type Controller struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	m         *metrics
	statePath string
	wake      chan struct{}

	mu         sync.Mutex // guards everything below; held while applying
	mach       *Machine
	applied    []bgp.Advertisement
	appliedOK  bool // applied is what the speaker holds
	lastErr    string
	clDrained  bool  // what the cluster was last told
	clDraining bool  // the draining flag the cluster was last given
	persisted  bool  // what the state file says about the drain
	state      State // the state file's content, as last written or read
	persistErr error
	lastStatus Status
}

// New builds a controller from a validated config. It reads the drain
// state: a node drained before a restart starts drained. Nothing is
// announced until Run.
func New(cfg Config, d Deps, opts ...Option) (*Controller, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	if d.Speaker == nil || d.Health == nil {
		return nil, errors.New("announce: a speaker and a health source are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Load == nil {
		d.Load = func() Load { return Load{} }
	}
	c := &Controller{cfg: cfg, deps: d, log: o.log, m: newMetrics(o.reg), wake: make(chan struct{}, 1)}
	var st State
	if d.StateDir != "" {
		c.statePath = filepath.Join(d.StateDir, StateFile)
		var err error
		if st, err = LoadState(c.statePath); err != nil {
			return nil, err
		}
	}
	c.persisted = st.Drained
	now := time.Now()
	c.mach = NewMachine(cfg, cfg.Apply(d.Region, d.Prefixes), st.Drained, now)
	if c.statePath != "" {
		// Count this start; Shutdown clears the count on a clean stop.
		var restarts int
		st, restarts = st.Restart(now, cfg.RestartWindow)
		c.mach.SetRestarts(restarts)
		if err := SaveState(c.statePath, st); err != nil {
			c.log.Error("cannot record the start in the state file: restarts are not damped", "err", err)
		}
		if restarts > 0 {
			c.log.Warn("restarted after an unclean stop: the first announcement waits a longer hold-down",
				"unclean_restarts", restarts, "hold_down", cfg.FirstHoldDown(restarts), "restart_window", cfg.RestartWindow)
		}
	}
	c.state = st
	if st.Drained {
		c.log.Warn("the node was drained before it stopped: it stays withdrawn until undrained",
			"since", st.Since, "state_file", c.statePath)
	}
	c.lastStatus = c.mach.Status(time.Now())
	c.m.status(c.lastStatus)
	return c, nil
}

// Run polls the inputs and applies the machine's decisions until ctx ends.
// It leaves the announced set as it is when it returns: call Shutdown
// first to withdraw.
func (c *Controller) Run(ctx context.Context) error {
	every := c.pollInterval()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.step()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
		}
		if p := c.pollInterval(); p != every { // reconfigured
			every = p
			t.Reset(every)
		}
	}
}

func (c *Controller) pollInterval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.PollInterval
}

// Reconfigure applies a new config and new anycast prefixes (the bgp
// section's) at run time, for a config reload: prefixes added, removed
// or with a new policy (region MED, communities, prepend) are announced,
// withdrawn or replaced in place by the speaker's declarative Set, and
// unchanged ones are not sent again. The drain phase is kept. cfg is
// validated first; on error nothing changes.
func (c *Controller) Reconfigure(cfg Config, prefixes []bgp.Advertisement) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.CheckPrefixes(prefixes); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.cfg = cfg
	c.deps.Prefixes = slices.Clone(prefixes)
	c.mach.Reconfigure(now, cfg, cfg.Apply(c.deps.Region, prefixes))
	c.applyLocked(now)
	c.Poke()
	if !c.appliedOK {
		return errors.New("announce: " + c.lastErr + " (retried at every poll)")
	}
	return nil
}

// Poke makes Run poll at once, for callers that learn of a change (a
// cluster event) before the next poll. It never blocks.
func (c *Controller) Poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// step reads the inputs, steps the machine and applies.
func (c *Controller) step() {
	sig := c.deps.Health()
	c.mu.Lock()
	need := c.mach.NeedsLoad()
	c.mu.Unlock()
	var load Load
	if need {
		load = c.deps.Load() // only while draining: it may be costly
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.mach.SetSignals(now, sig)
	if need {
		c.mach.SetLoad(now, load)
	}
	c.mach.Tick(now)
	c.applyLocked(now)
}

// Drain starts the drain (see the package doc). It returns once the
// first step is applied; the rest follows at the polls. An error to
// persist the state is returned, but the drain goes on.
func (c *Controller) Drain() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if err := c.mach.Drain(now); err != nil {
		return err
	}
	c.log.Info("drain requested", "phase", c.mach.Phase().String())
	c.applyLocked(now)
	return c.persistErr
}

// Undrain ends a drain. The node is eligible for sharing tags again and
// announces as soon as it is healthy.
func (c *Controller) Undrain() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.mach.Undrain(now)
	c.log.Info("undrain requested")
	c.applyLocked(now)
	return c.persistErr
}

// SetExtra replaces the extra advertisements (the L3 VIPs the node owns)
// and applies them at once.
func (c *Controller) SetExtra(advs []bgp.Advertisement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mach.SetExtra(advs)
	c.applyLocked(time.Now())
}

// Shutdown withdraws every path, then waits until no transaction is in
// flight, for at most shutdown_timeout or until ctx ends. It is the first
// step of SIGTERM: the daemon then closes the SIP server and the speaker.
func (c *Controller) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.mach.Shutdown()
	c.applyLocked(time.Now())
	err := c.setErrLocked()
	if c.statePath != "" && len(c.state.Starts) > 0 {
		// A clean stop: the next start is not a crash restart.
		st := c.state
		st.Starts = nil
		if serr := SaveState(c.statePath, st); serr != nil {
			c.log.Warn("cannot record the clean stop in the state file", "err", serr)
		} else {
			c.state = st
		}
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("shutdown: withdrawal failed; closing the sessions will withdraw", "err", err)
	} else {
		c.log.Info("shutdown: every path withdrawn; waiting for in-flight transactions")
	}
	c.mu.Lock()
	timeout, every := c.cfg.ShutdownTimeout, c.cfg.PollInterval
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n := c.deps.Load().InFlight
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			c.log.Warn("shutdown: transactions still in flight", "in_flight", n)
			return fmt.Errorf("announce: %d transactions still in flight: %w", n, context.Cause(ctx))
		case <-t.C:
		}
	}
}

func (c *Controller) setErrLocked() error {
	if c.appliedOK {
		return nil
	}
	return errors.New(c.lastErr)
}

// applyLocked performs the machine's outputs: the drain state file first
// (so that a crash mid-drain restarts drained), then the cluster's drained
// flag, then the announced set.
func (c *Controller) applyLocked(now time.Time) {
	if want := c.mach.DrainRequested(); c.statePath != "" && (want != c.persisted || c.persistErr != nil) {
		st := c.state
		st.Drained, st.Since = want, now.UTC()
		err := SaveState(c.statePath, st)
		if err != nil {
			if c.persistErr == nil {
				c.log.Error("cannot persist the drain state", "err", err)
			}
		} else {
			c.persisted, c.state = want, st
		}
		c.persistErr = err
	}
	if dn, ok := c.deps.Cluster.(DrainingNotifier); ok && c.mach.DrainRequested() != c.clDraining {
		want := c.mach.DrainRequested()
		if err := dn.SetDraining(want); err != nil {
			c.log.Warn("cannot set the cluster's draining flag", "draining", want, "err", err)
		} else {
			c.clDraining = want
		}
	}
	if want := c.mach.ClusterDrained(); c.deps.Cluster != nil && want != c.clDrained {
		if err := c.deps.Cluster.SetDrained(want); err != nil {
			c.log.Warn("cannot set the cluster's drained flag", "drained", want, "err", err)
		} else {
			c.clDrained = want
			if want {
				c.log.Info("drain: marked drained in the cluster; sharing tags move to other nodes")
			} else {
				c.log.Info("undrain: eligible for sharing tags again")
			}
		}
	}
	want := c.mach.Advertisements(now)
	if !c.appliedOK || !slices.EqualFunc(c.applied, want, bgp.Advertisement.Equal) {
		ctx, cancel := context.WithTimeout(context.Background(), setTimeout)
		err := c.deps.Speaker.Set(ctx, want...)
		cancel()
		if err != nil {
			if c.appliedOK || c.lastErr != err.Error() {
				c.log.Error("announce: set failed; retrying at the next poll", "err", err)
			}
			c.appliedOK, c.lastErr = false, err.Error()
		} else {
			c.noteChanges(c.applied, want)
			c.applied, c.appliedOK, c.lastErr = want, true, ""
		}
	}
	st := c.mach.Status(now)
	if !slices.Equal(st.Reasons, c.lastStatus.Reasons) || st.Phase != c.lastStatus.Phase {
		c.log.Info("announce state", "announcing", st.Announcing, "reasons", st.Reasons,
			"drain_phase", st.Phase.String(), "unsynced", st.Unsynced,
			"region_reachable", st.Region.Reachable, "region_known", st.Region.Known)
	}
	c.lastStatus = st
	c.m.status(st)
}

// noteChanges logs and counts what Set changed.
func (c *Controller) noteChanges(old, cur []bgp.Advertisement) {
	for _, a := range cur {
		i := slices.IndexFunc(old, func(o bgp.Advertisement) bool { return o.Prefix == a.Prefix })
		switch {
		case i < 0:
			c.m.changed("announce")
			c.log.Info("announced", "path", a.String())
		case !old[i].Equal(a):
			c.m.changed("update")
			c.log.Info("path updated", "path", a.String())
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(cur, func(a bgp.Advertisement) bool { return a.Prefix == o.Prefix }) {
			c.m.changed("withdraw")
			c.log.Info("withdrawn", "prefix", o.Prefix.String())
		}
	}
}

// Report is the controller's state for the admin API.
type Report struct {
	Status
	// Announced is what the speaker was last told to announce.
	Announced []bgp.Advertisement `json:"announced"`
	// LastError is the last failed Set, until one succeeds.
	LastError string `json:"last_error,omitempty"`
	// Persisted tells whether the drain state is kept across restarts.
	Persisted bool `json:"drain_persisted"`
}

// Report returns the current state.
func (c *Controller) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Report{Status: c.mach.Status(time.Now()), LastError: c.lastErr, Persisted: c.statePath != ""}
	r.Announced = make([]bgp.Advertisement, len(c.applied))
	copy(r.Announced, c.applied)
	return r
}
