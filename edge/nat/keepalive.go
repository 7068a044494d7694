package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
)

// Keepalive methods.
const (
	// MethodOptions sends an OPTIONS request; any response means alive,
	// no response within Timeout is a failure. Works for every transport
	// and detects dead contacts.
	MethodOptions = "options"
	// MethodCRLF sends a double CRLF (RFC 5626 §4.4.1). It is cheaper and
	// every UA accepts it, but over UDP nothing answers, so only a failed
	// send counts as a failure: it keeps pinholes open without detecting
	// dead contacts. Over TCP/TLS a broken connection is detected.
	MethodCRLF = "crlf"
)

// Config of the keepalive pinger; the edge config's `keepalive:` section.
type Config struct {
	// Enabled turns keepalives on. Default true in the edge config.
	Enabled *bool `yaml:"enabled"`
	// Interval between two probes of one contact. Default 30 s: most NATs
	// drop idle UDP mappings after 30–60 s (RFC 4787 asks for ≥ 2 min, few
	// comply), and 30 s is what phones use themselves.
	Interval time.Duration `yaml:"interval"`
	// Failures in a row after which the contact is removed. Default 3:
	// one lost probe on a lossy link must not log a phone out.
	Failures int `yaml:"failures"`
	// Method is "options" (default) or "crlf".
	Method string `yaml:"method"`
	// Timeout of one probe. Default 5 s, and at most half the interval.
	Timeout time.Duration `yaml:"timeout"`
	// MaxInFlight bounds concurrent probes. Default 256.
	MaxInFlight int `yaml:"max_in_flight"`
}

// FieldError names the bad key, relative to the keepalive section.
type FieldError struct{ Key, Msg string }

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Validate fills defaults and checks the config.
func (c *Config) Validate() error {
	if c.Enabled == nil {
		t := true
		c.Enabled = &t
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Interval < 100*time.Millisecond {
		return &FieldError{"interval", fmt.Sprintf("must be at least 100ms, not %v", c.Interval)}
	}
	if c.Failures == 0 {
		c.Failures = 3
	}
	if c.Failures < 1 {
		return &FieldError{"failures", "must be at least 1"}
	}
	switch c.Method {
	case "":
		c.Method = MethodOptions
	case MethodOptions, MethodCRLF:
	default:
		return &FieldError{"method", fmt.Sprintf("must be options or crlf, not %q", c.Method)}
	}
	if c.Timeout == 0 {
		c.Timeout = min(5*time.Second, c.Interval/2)
	}
	if c.Timeout < 0 || c.Timeout > c.Interval {
		return &FieldError{"timeout", "must be positive and at most interval"}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 256
	}
	if c.MaxInFlight < 1 {
		return &FieldError{"max_in_flight", "must be at least 1"}
	}
	return nil
}

// Prober sends one keepalive to a contact.
type Prober interface {
	// Probe returns nil when b is alive: for options any response, for
	// crlf a successful send.
	Probe(ctx context.Context, b location.Binding, method string) error
}

// Source lists the bindings the pinger may keep alive (Tracker: those
// registered through this node).
type Source interface {
	Bindings(ctx context.Context) ([]location.Binding, error)
}

// Pinger keeps NATed contacts alive and removes the dead ones. Exactly one
// node pings a contact: the one the ownership predicate says owns it (in a
// cluster, the owner of the contact's sharing tag).
type Pinger struct {
	cfg   Config
	src   Source
	store location.Store
	probe Prober
	owns  func(location.Binding) bool
	now   func() time.Time
	log   *slog.Logger
	reg   prometheus.Registerer
	m     *metrics

	mu    sync.Mutex
	rnd   *rand.Rand
	sched *schedule

	wg  sync.WaitGroup
	sem chan struct{}
}

// Option configures a Pinger.
type Option func(*Pinger)

// WithOwner sets the ownership predicate. Default: bindings homed on this
// node (Home 0, or the id given to WithNode).
func WithOwner(f func(location.Binding) bool) Option { return func(p *Pinger) { p.owns = f } }

// WithNode makes the default owner predicate accept bindings homed on id.
func WithNode(id uint32) Option {
	return func(p *Pinger) {
		p.owns = func(b location.Binding) bool { return b.Home == 0 || b.Home == id }
	}
}

// WithClock sets the clock Run reads. Default time.Now.
func WithClock(now func() time.Time) Option { return func(p *Pinger) { p.now = now } }

// WithRand sets the random source of the spreading and jitter.
func WithRand(r *rand.Rand) Option { return func(p *Pinger) { p.rnd = r } }

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(p *Pinger) { p.log = l } }

// WithRegistry registers the pinger's metrics on reg.
func WithRegistry(reg prometheus.Registerer) Option { return func(p *Pinger) { p.reg = reg } }

// NewPinger validates cfg and returns a pinger.
func NewPinger(cfg Config, src Source, store location.Store, probe Prober, opts ...Option) (*Pinger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil || store == nil || probe == nil {
		return nil, errors.New("nat: pinger needs a source, a store and a prober")
	}
	p := &Pinger{cfg: cfg, src: src, store: store, probe: probe, now: time.Now,
		log: slog.New(slog.DiscardHandler), sem: make(chan struct{}, cfg.MaxInFlight)}
	WithNode(0)(p)
	for _, o := range opts {
		o(p)
	}
	if p.rnd == nil {
		p.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	p.m = newMetrics(p.reg)
	p.sched = newSchedule(cfg.Interval, 0.1, cfg.Failures, p.rnd.Float64)
	return p, nil
}

// Run ticks the pinger until ctx ends, then waits for probes in flight.
func (p *Pinger) Run(ctx context.Context) {
	defer p.wg.Wait()
	res := min(time.Second, p.cfg.Interval/10)
	t := time.NewTicker(res)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.Tick(ctx, p.now()); err != nil {
				p.log.Warn("keepalive: listing bindings failed", "error", err)
			}
		}
	}
}

// Tick runs one scheduling round at now: refresh the set of contacts to
// keep alive, and start the probes that are due. Probes run in the
// background; Wait waits for them.
func (p *Pinger) Tick(ctx context.Context, now time.Time) error {
	bs, err := p.src.Bindings(ctx)
	if err != nil {
		return err
	}
	mine := bs[:0:0]
	for _, b := range bs {
		if b.NATed && b.Received != "" && p.owns(b) {
			mine = append(mine, b)
		}
	}
	p.mu.Lock()
	p.sched.sync(mine, now)
	due := p.sched.take(now)
	p.m.tracked.Set(float64(p.sched.len()))
	p.mu.Unlock()
	for i, b := range due {
		select {
		case p.sem <- struct{}{}:
		default:
			// Saturated: the rest go next tick.
			p.mu.Lock()
			for _, r := range due[i:] {
				p.sched.release(r, now)
			}
			p.mu.Unlock()
			return nil
		}
		p.wg.Add(1)
		go p.run(ctx, b)
	}
	return nil
}

// Wait blocks until the probes in flight are done.
func (p *Pinger) Wait() { p.wg.Wait() }

func (p *Pinger) run(ctx context.Context, b location.Binding) {
	defer p.wg.Done()
	defer func() { <-p.sem }()
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	err := p.probe.Probe(pctx, b, p.cfg.Method)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not the contact's fault
	}
	p.m.probes.Inc()
	if err != nil {
		p.m.failures.Inc()
	}
	p.mu.Lock()
	remove := p.sched.result(b, err == nil)
	p.mu.Unlock()
	if !remove {
		return
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	if rerr := p.store.Remove(rctx, b.AoR, b.Key()); rerr != nil {
		p.log.Warn("keepalive: removing dead contact failed", "aor", b.AoR, "contact", b.Contact, "error", rerr)
		return
	}
	p.m.removals.Inc()
	p.log.Info("keepalive: removed dead contact", "aor", b.AoR, "contact", b.Contact,
		"received", b.Received, "failures", p.cfg.Failures, "last_error", err)
}
