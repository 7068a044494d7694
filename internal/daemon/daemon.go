// Package daemon wires one edged process together: logger, metrics
// registry, cluster node, the modules configured (SIP edge, CPS limits,
// BGP announcements gated on readiness) and the admin API, and runs it
// until a signal.
//
// It owns the process-wide pieces so that the packages it wires stay free of
// globals: each gets its logger and registry injected here.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/bgp/announce"
	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/cps"
	"github.com/anyedge/anyedge/edge/dialog"
	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/geo"
	"github.com/anyedge/anyedge/geo/redisloc"
	"github.com/anyedge/anyedge/internal/admin"
	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/version"
	"github.com/anyedge/anyedge/vip"
)

// shutdownTimeout bounds the graceful HTTP shutdown: an edgectl call in
// flight gets this long to finish.
const shutdownTimeout = 5 * time.Second

// Node is what the daemon needs from a cluster node; *cluster.Node is one.
type Node interface {
	cluster.API
	// Start starts the node. It may return once running, or block until
	// the node stops; either way an error means the node did not run.
	Start(ctx context.Context) error
	Close() error
}

// NodeFactory builds the cluster node. The default is cluster.New. With a
// cps section the node must be a ClusterNode; a node that can also
// SetDrained advertises the operator's drain to the cluster.
type NodeFactory func(cfg cluster.Config, log *slog.Logger, reg prometheus.Registerer) (Node, error)

func newClusterNode(cfg cluster.Config, log *slog.Logger, reg prometheus.Registerer) (Node, error) {
	return cluster.New(cfg, cluster.WithLogger(log), cluster.WithRegistry(reg))
}

// Daemon is one configured edged process.
type Daemon struct {
	cfg        *config.Config
	version    string
	logOut     io.Writer
	newNode    NodeFactory
	newSpeaker SpeakerFactory
	signals    <-chan os.Signal // nil: subscribe to the process's signals

	log  *slog.Logger
	reg  *prometheus.Registry
	node Node
	ln   net.Listener

	// The SIP edge, when the config has a sip section.
	sip   *edge.Server
	store *location.Memory // single-node location, without geo
	geo   *geo.Service     // user-facing distributed location

	redisloc *redisloc.Store // db-driven location (location.go)
	// The CPS limiter, when the config has a cps section.
	cps *cps.Service
	// Call state, when the config has a dialog section (dialog.go).
	dialogs *dialog.Service
	// The BGP speaker, when the config has a bgp section; created by Run.
	speaker bgp.Speaker
	// The announcement controller (readiness, announcements, drain) and
	// the VIP mover, created by Run; read by the cluster's event hook.
	ctl          atomic.Pointer[announce.Controller]
	mover        atomic.Pointer[vip.Mover]
	vipRouter    vip.Router
	newVIPRouter VIPRouterFactory
	stopAnnounce func() // stops their loops and waits for them

	sipStarted bool

	rl reloadState // SIGHUP: see reload.go

	bg sync.WaitGroup // goroutines Run starts besides the node's
}

// Option sets an optional dependency of a Daemon.
type Option func(*Daemon)

// WithLogOutput sends the log to w (default os.Stderr).
func WithLogOutput(w io.Writer) Option { return func(d *Daemon) { d.logOut = w } }

// WithVersion sets the version reported in logs and anyedge_build_info
// (default: version.Version, stamped by the Makefile).
func WithVersion(v string) Option { return func(d *Daemon) { d.version = v } }

// WithNodeFactory replaces cluster.New, for tests.
func WithNodeFactory(f NodeFactory) Option { return func(d *Daemon) { d.newNode = f } }

// WithSignals delivers signals from ch instead of the process, for tests.
func WithSignals(ch <-chan os.Signal) Option { return func(d *Daemon) { d.signals = ch } }

// New builds the daemon from a validated config: logger, registry and
// cluster node. Nothing runs until Run.
func New(cfg *config.Config, opts ...Option) (*Daemon, error) {
	d := &Daemon{cfg: cfg, version: version.Version, logOut: os.Stderr, newNode: newClusterNode, newSpeaker: newGoBGP}
	d.newVIPRouter = newLinuxVIPRouter(d)
	for _, o := range opts {
		o(d)
	}
	// No "node" attribute here: the cluster logs other nodes under that key.
	d.rl.level = new(slog.LevelVar)
	d.rl.level.Set(cfg.Log.SlogLevel())
	d.log = newLogger(d.logOut, cfg.Log.Format, d.rl.level)
	reg, err := NewRegistry(d.version)
	if err != nil {
		return nil, err
	}
	d.reg = reg
	if err := d.initReload(); err != nil {
		return nil, err
	}
	// The cluster package names its own components in its log lines.
	ccfg := cfg.Cluster
	// A node drained before it stopped joins drained: it must not win a
	// sharing tag in the moment before the controller re-advertises it.
	// An unreadable drain state refuses the start: unknown is not "not
	// drained".
	if ccfg.Drained, err = drainedAtStart(ccfg.StateDir); err != nil {
		return nil, err
	}
	d.node, err = d.newNode(ccfg, d.log, reg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := d.build(); err != nil {
		_ = d.node.Close() // never started: nothing to report
		return nil, err
	}
	return d, nil
}

// build creates the modules on the node, before it starts: capabilities
// can only be registered then.
func (d *Daemon) build() error {
	cfg := d.cfg
	var err error
	if sn, ok := d.node.(subscriber); ok {
		sn.Subscribe(d.onClusterEvent)
	}
	if cfg.CPS != nil {
		if err := d.newCPS(); err != nil {
			return fmt.Errorf("cps: %w", err)
		}
	}
	if cfg.SIP != nil {
		var hooks edge.Hooks
		if d.cps != nil {
			hooks.BeforeNewDialog = cpsHook(d.cps.Limiter())
		}
		var store location.Store
		if cfg.Geo != nil {
			if err := d.newGeo(&hooks); err != nil {
				return fmt.Errorf("geo: %w", err)
			}
			store = d.geo
		} else if cfg.Location.DBDriven() {
			if store, err = d.newRedisLocation(&hooks); err != nil {
				return fmt.Errorf("location: %w", err)
			}
		} else {
			d.store = location.NewMemory(location.WithLogger(d.log.With("component", "location")))
			store = d.store
		}
		if cfg.Dialog != nil {
			if err := d.newDialog(&hooks); err != nil {
				return fmt.Errorf("dialog: %w", err)
			}
		}
		if err := d.newTxRelay(&hooks, &d.sip); err != nil {
			return fmt.Errorf("sip: anycast transactions: %w", err)
		}
		d.sip, err = edge.New(*cfg.SIP, store,
			edge.WithLogger(d.log.With("component", "sip")),
			edge.WithRegistry(d.reg),
			edge.WithNodeID(cfg.Cluster.NodeID),
			edge.WithHooks(hooks))
		if err != nil {
			return fmt.Errorf("sip: %w", err)
		}
	}
	if cfg.BGP != nil && cfg.SIP == nil {
		d.log.Warn("bgp without sip: the prefixes are announced while the cluster is synced, but no SIP listens here")
	}
	return nil
}

// NewLogger builds the daemon's logger from the log section.
func NewLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	return newLogger(w, c.Format, c.SlogLevel())
}

// newLogger builds a logger whose level may be a *slog.LevelVar, which a
// reload changes.
func newLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// NewRegistry builds the daemon's metrics registry with the Go runtime and
// process collectors and anyedge_build_info, which lets dashboards tell
// which build each node runs.
func NewRegistry(version string) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "anyedge_build_info",
		Help: "Build information of the running edged; the value is always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// Listen binds the admin API's address. Run calls it if it has not been
// called; calling it first lets a caller learn the address (port 0).
func (d *Daemon) Listen() (net.Addr, error) {
	if d.ln == nil {
		ln, err := net.Listen("tcp", d.cfg.Admin.Listen)
		if err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
		d.ln = ln
	}
	return d.ln.Addr(), nil
}

// Run starts the node, the modules and the admin API and blocks until ctx
// ends or SIGINT/SIGTERM arrives, then shuts down gracefully (see
// shutdown). It returns an error if the node, a module or the admin API
// fails; a requested shutdown returns nil.
func (d *Daemon) Run(ctx context.Context) error {
	addr, err := d.Listen()
	if err != nil {
		_ = d.node.Close() // never started: nothing to report
		return err
	}
	sigs := d.signals
	if sigs == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(ch)
		sigs = ch
	}

	// The node's context outlives Run's select so that the node is stopped
	// by Close, in order, rather than by a cancellation racing it.
	nodeCtx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNode()
	nodeErr := make(chan error, 1)
	go func() { nodeErr <- d.node.Start(nodeCtx) }()

	runErr := d.startModules(nodeCtx)
	srv := &http.Server{
		Handler:           admin.New(d.node, d.adminOptions()...),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	httpErr := make(chan error, 1)
	if runErr == nil {
		go func() { httpErr <- srv.Serve(d.ln) }()
		d.log.Info("edged started", "version", d.version, "node_id", d.cfg.Cluster.NodeID,
			"region", d.cfg.Cluster.Region, "admin", addr.String(), "cluster", d.cfg.Cluster.Listen,
			"sip", d.sip != nil, "cps", d.cps != nil, "bgp", d.speaker != nil)
		sdNotify("READY=1")
	} else {
		_ = d.ln.Close()
	}

loop:
	for runErr == nil {
		select {
		case err := <-nodeErr:
			nodeErr = nil // Start has returned: nothing more to wait for
			if err != nil {
				runErr = fmt.Errorf("cluster: %w", err)
				break loop
			}
			// Start returned once running; the node runs until Close.
		case err := <-httpErr:
			runErr = fmt.Errorf("admin: %w", err)
			break loop
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("shutting down", "signal", sig.String())
			break loop
		case <-ctx.Done():
			d.log.Info("shutting down", "reason", context.Cause(ctx))
			break loop
		}
	}
	return errors.Join(runErr, d.shutdown(srv, stopNode, nodeErr))
}

// startModules starts what runs beside the node: the CPS service, the
// SIP edge, the BGP speaker, and the announcement controller and VIP
// mover that drive it. Whatever it started is stopped by shutdown, also
// when it fails half-way.
func (d *Daemon) startModules(ctx context.Context) error {
	if d.cps != nil {
		d.cps.Start(ctx)
	}
	if d.sip != nil {
		// The location runs before SIP: geo's Save waits on its loop.
		if d.geo != nil {
			d.bg.Go(func() { _ = d.geo.Run(ctx) })
		} else if d.redisloc != nil {
			d.bg.Go(func() { _ = d.redisloc.Run(ctx) })
		} else {
			d.bg.Go(func() { _ = d.store.Run(ctx) })
		}
		d.startDialog(ctx)
		if err := d.sip.Start(ctx); err != nil {
			return fmt.Errorf("sip: %w", err)
		}
		d.sipStarted = true
	}
	var sp bgp.Speaker = &nopSpeaker{}
	if d.cfg.BGP != nil {
		var err error
		sp, err = d.newSpeaker(*d.cfg.BGP, d.log.With("component", "bgp"), d.reg)
		if err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		d.speaker = sp
	}
	return d.startAnnounce(ctx, sp)
}

// adminOptions are the admin API's settings and the modules it serves:
// call it after startModules.
func (d *Daemon) adminOptions() []admin.Option {
	opts := []admin.Option{
		admin.WithLogger(d.log.With("component", "admin")),
		admin.WithGatherer(d.reg),
		admin.WithToken(d.cfg.Admin.Token),
		admin.WithReadiness(func() (bool, []string) {
			r := d.Readiness()
			return r.Ready, r.Reasons
		}),
		admin.WithDrainer(drainer{d}),
	}
	if d.cps != nil {
		opts = append(opts, admin.WithCPS(cpsAPI{d.cps}))
	}
	opts = d.dialogAdmin(opts)
	if d.speaker != nil {
		opts = append(opts, admin.WithBGP(bgpAPI{d.speaker, func() []bgp.PeerConfig { return d.liveConfig().BGP.Peers }}))
	}
	if d.geo != nil {
		opts = append(opts, admin.WithLocation(d.geo))
	}
	return opts
}

// shutdown stops everything in the order that loses no traffic: every
// path is withdrawn first, so the routers send new calls elsewhere, and
// the transactions in flight get announce.shutdown_timeout to finish;
// then the SIP edge closes; then the node leaves the cluster (its
// partners take its sharing tags) and gives up its VIPs; then the CPS
// service and the speaker stop (the routers get a Cease); the admin API
// goes last. A blocking Start is waited for, so that no goroutine
// outlives Run.
func (d *Daemon) shutdown(srv *http.Server, stopNode context.CancelFunc, nodeErr <-chan error) error {
	sdNotify("STOPPING=1")
	var errs []error
	if c := d.ctl.Load(); c != nil {
		if err := c.Shutdown(context.Background()); err != nil {
			d.log.Warn("shutdown: closing with transactions in flight", "err", err)
		}
	}
	if d.stopAnnounce != nil {
		d.stopAnnounce()
	}
	if d.sipStarted {
		if err := d.sip.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sip: close: %w", err))
		}
	}
	if err := d.node.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: close: %w", err))
	}
	if m := d.mover.Load(); m != nil {
		// The addresses would outlive the process and keep answering ARP.
		if err := m.Release(); err != nil {
			errs = append(errs, fmt.Errorf("vips: release: %w", err))
		}
	}
	if d.vipRouter != nil {
		if err := d.vipRouter.Close(); err != nil {
			errs = append(errs, fmt.Errorf("vips: close: %w", err))
		}
	}
	// After the node: the service's goroutine may be waiting on a node
	// that never ran, and Close of the node releases it.
	if d.cps != nil {
		if err := d.cps.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cps: close: %w", err))
		}
	}
	if d.speaker != nil {
		if err := d.speaker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bgp: close: %w", err))
		}
	}
	stopNode()
	if nodeErr != nil {
		<-nodeErr // Start either already failed or returns now that the node is closed
	}
	d.bg.Wait()
	if err := d.closeLocation(); err != nil {
		errs = append(errs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin: shutdown: %w", err))
	}
	d.log.Info("edged stopped")
	return errors.Join(errs...)
}
