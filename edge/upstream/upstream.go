// Package upstream is the set of core elements (softswitch, PBX, SBC) that
// an edge node sends calls for non-local domains to: weighted ordering for
// failover, and health from both OPTIONS probes and the outcome of real
// requests.
//
// The health state machine is pure (observe); Pool adds locking, probing
// and metrics around it.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Target is one upstream.
type Target struct {
	// Addr is "host:port" (a host name is resolved per request).
	Addr string `yaml:"addr"`
	// Transport is "udp" (default), "tcp" or "tls".
	Transport string `yaml:"transport"`
	// Weight shares load among healthy upstreams. Default 1.
	Weight int `yaml:"weight"`
}

// Health configures probing. The defaults detect a dead upstream in about
// 15 s with probes alone; a real request that times out counts too, so
// under traffic it is much faster.
type Health struct {
	// Interval between OPTIONS probes of each upstream. Default 5 s; 0 in
	// the config means the default, a negative value turns probes off.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe. Default 2 s.
	Timeout time.Duration `yaml:"timeout"`
	// DownAfter failures in a row mark an upstream down. Default 3.
	DownAfter int `yaml:"down_after"`
	// UpAfter successes in a row mark it up again. Default 2, so that a
	// flapping upstream does not get traffic on its first answer.
	UpAfter int `yaml:"up_after"`
}

// FieldError names the bad key, relative to the upstream section.
type FieldError struct{ Key, Msg string }

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Validate fills defaults and checks t.
func (t *Target) Validate() error {
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil || host == "" || port == "" {
		return &FieldError{"addr", fmt.Sprintf("not host:port: %q", t.Addr)}
	}
	t.Transport = strings.ToLower(t.Transport)
	switch t.Transport {
	case "":
		t.Transport = "udp"
	case "udp", "tcp", "tls":
	default:
		return &FieldError{"transport", fmt.Sprintf("must be udp, tcp or tls, not %q", t.Transport)}
	}
	if t.Weight == 0 {
		t.Weight = 1
	}
	if t.Weight < 0 {
		return &FieldError{"weight", "must be positive"}
	}
	return nil
}

// Validate fills defaults and checks h.
func (h *Health) Validate() error {
	if h.Interval == 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Timeout < 0 {
		return &FieldError{"timeout", "must be positive"}
	}
	if h.DownAfter == 0 {
		h.DownAfter = 3
	}
	if h.UpAfter == 0 {
		h.UpAfter = 2
	}
	if h.DownAfter < 1 {
		return &FieldError{"down_after", "must be at least 1"}
	}
	if h.UpAfter < 1 {
		return &FieldError{"up_after", "must be at least 1"}
	}
	return nil
}

// state is the health of one upstream.
type state struct {
	up         bool
	fails, oks int
}

// observe records one outcome; it reports whether up changed.
func (s *state) observe(ok bool, downAfter, upAfter int) bool {
	if ok {
		s.fails = 0
		s.oks++
		if !s.up && s.oks >= upAfter {
			s.up = true
			return true
		}
		return false
	}
	s.oks = 0
	s.fails++
	if s.up && s.fails >= downAfter {
		s.up = false
		return true
	}
	return false
}

// Prober sends one health probe.
type Prober interface {
	// Probe returns nil when t answered the probe acceptably.
	Probe(ctx context.Context, t Target) error
}

// Pool is the set of upstreams with their health.
type Pool struct {
	targets []Target
	cfg     Health
	probe   Prober
	log     *slog.Logger
	up      *prometheus.GaugeVec

	mu     sync.Mutex
	rnd    *rand.Rand
	states []state
}

// Option configures a Pool.
type Option func(*Pool)

// WithLogger sets the logger (default discard).
func WithLogger(l *slog.Logger) Option { return func(p *Pool) { p.log = l } }

// WithRand sets the source of the weighted ordering.
func WithRand(r *rand.Rand) Option { return func(p *Pool) { p.rnd = r } }

// WithRegistry registers anyedge_sip_upstream_up on reg.
func WithRegistry(reg prometheus.Registerer) Option {
	return func(p *Pool) {
		p.up = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anyedge_sip_upstream_up",
			Help: "Whether an upstream is considered healthy (1) or not (0); the label is its configured address.",
		}, []string{"upstream"})
		reg.MustRegister(p.up)
	}
}

// New returns a pool; targets and cfg must be validated. Every upstream
// starts up, so that traffic flows before the first probe round.
func New(targets []Target, cfg Health, probe Prober, opts ...Option) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{targets: append([]Target(nil), targets...), cfg: cfg, probe: probe,
		log: slog.New(slog.DiscardHandler), states: make([]state, len(targets))}
	for i := range p.states {
		p.states[i].up = true
	}
	for _, o := range opts {
		o(p)
	}
	if p.rnd == nil {
		p.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	for _, t := range p.targets {
		p.setGauge(t, true)
	}
	return p, nil
}

// Len is the number of upstreams.
func (p *Pool) Len() int { return len(p.targets) }

// Order returns the upstreams to try, in order: the healthy ones in a
// weighted random order (so load follows the weights), then the unhealthy
// ones as a last resort (better a late answer than none when every probe
// is failing, for example because probes are filtered).
func (p *Pool) Order() []Target {
	p.mu.Lock()
	defer p.mu.Unlock()
	var up, down []int
	for i, s := range p.states {
		if s.up {
			up = append(up, i)
		} else {
			down = append(down, i)
		}
	}
	out := make([]Target, 0, len(p.targets))
	for _, idx := range [][]int{up, down} {
		for _, i := range p.weighted(idx) {
			out = append(out, p.targets[i])
		}
	}
	return out
}

// weighted orders idx by weighted sampling without replacement.
func (p *Pool) weighted(idx []int) []int {
	idx = append([]int(nil), idx...)
	out := make([]int, 0, len(idx))
	for len(idx) > 0 {
		total := 0
		for _, i := range idx {
			total += p.targets[i].Weight
		}
		r := p.rnd.IntN(total)
		k := 0
		for j, i := range idx {
			r -= p.targets[i].Weight
			if r < 0 {
				k = j
				break
			}
		}
		out = append(out, idx[k])
		idx = append(idx[:k], idx[k+1:]...)
	}
	return out
}

// Observe records the outcome of a real request to addr: a timeout, a
// transport error or a 503 is a failure, any other answer a success.
func (p *Pool) Observe(addr string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, t := range p.targets {
		if t.Addr == addr {
			p.record(i, ok)
		}
	}
}

// Up reports whether the upstream at addr is healthy.
func (p *Pool) Up(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, t := range p.targets {
		if t.Addr == addr {
			return p.states[i].up
		}
	}
	return false
}

func (p *Pool) record(i int, ok bool) {
	if p.states[i].observe(ok, p.cfg.DownAfter, p.cfg.UpAfter) {
		up := p.states[i].up
		p.setGauge(p.targets[i], up)
		p.log.Warn("upstream health changed", "upstream", p.targets[i].Addr, "up", up)
	}
}

func (p *Pool) setGauge(t Target, up bool) {
	if p.up == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	p.up.WithLabelValues(t.Addr).Set(v)
}

// ProbeAll probes every upstream once, concurrently, and records the
// results before returning.
func (p *Pool) ProbeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for i, t := range p.targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			err := p.probe.Probe(pctx, t)
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.record(i, err == nil)
			p.mu.Unlock()
		}()
	}
	wg.Wait()
}

// Run probes every Interval until ctx ends.
func (p *Pool) Run(ctx context.Context) {
	if p.cfg.Interval < 0 || len(p.targets) == 0 || p.probe == nil {
		return
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.ProbeAll(ctx)
		}
	}
}

// ErrUnhealthy is what probers return for an answer that means "down"
// (408, 503).
var ErrUnhealthy = errors.New("upstream: unhealthy answer")
