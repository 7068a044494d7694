// Package daemon wires one edged process together: logger, metrics
// registry, cluster node and admin API, and runs it until a signal.
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/internal/admin"
	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/version"
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

// NodeFactory builds the cluster node. The default is cluster.New.
type NodeFactory func(cfg cluster.Config, log *slog.Logger, reg prometheus.Registerer) (Node, error)

func newClusterNode(cfg cluster.Config, log *slog.Logger, reg prometheus.Registerer) (Node, error) {
	return cluster.New(cfg, cluster.WithLogger(log), cluster.WithRegistry(reg))
}

// Daemon is one configured edged process.
type Daemon struct {
	cfg     *config.Config
	version string
	logOut  io.Writer
	newNode NodeFactory
	signals <-chan os.Signal // nil: subscribe to the process's signals

	log  *slog.Logger
	reg  *prometheus.Registry
	node Node
	ln   net.Listener

	// The SIP edge, when the config has a sip section.
	sip   *edge.Server
	store *location.Memory
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
	d := &Daemon{cfg: cfg, version: version.Version, logOut: os.Stderr, newNode: newClusterNode}
	for _, o := range opts {
		o(d)
	}
	// No "node" attribute here: the cluster logs other nodes under that key.
	d.log = NewLogger(d.logOut, cfg.Log)
	reg, err := NewRegistry(d.version)
	if err != nil {
		return nil, err
	}
	d.reg = reg
	// The cluster package names its own components in its log lines.
	d.node, err = d.newNode(cfg.Cluster, d.log, reg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if cfg.SIP != nil {
		d.store = location.NewMemory(location.WithLogger(d.log.With("component", "location")))
		d.sip, err = edge.New(*cfg.SIP, d.store,
			edge.WithLogger(d.log.With("component", "sip")),
			edge.WithRegistry(reg),
			edge.WithNodeID(cfg.Cluster.NodeID))
		if err != nil {
			return nil, fmt.Errorf("sip: %w", err)
		}
	}
	return d, nil
}

// NewLogger builds the daemon's logger from the log section.
func NewLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
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

// Run starts the node and the admin API and blocks until ctx ends or
// SIGINT/SIGTERM arrives, then shuts down gracefully: the node leaves the
// cluster first, then the admin API drains. It returns an error if the
// node or the admin API fails; a requested shutdown returns nil.
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
	if d.sip != nil {
		go func() { _ = d.store.Run(nodeCtx) }()
		if err := d.sip.Start(nodeCtx); err != nil {
			d.ln.Close()
			return errors.Join(fmt.Errorf("sip: %w", err), d.node.Close())
		}
	}

	srv := &http.Server{
		Handler: admin.New(d.node,
			admin.WithLogger(d.log.With("component", "admin")),
			admin.WithGatherer(d.reg),
			admin.WithToken(d.cfg.Admin.Token)),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(d.ln) }()
	d.log.Info("edged started", "version", d.version, "node_id", d.cfg.Cluster.NodeID,
		"region", d.cfg.Cluster.Region, "admin", addr.String(), "cluster", d.cfg.Cluster.Listen)

	var runErr error
loop:
	for {
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

// shutdown closes the node, then the admin API. A blocking Start is waited
// for, so that no goroutine outlives Run.
func (d *Daemon) shutdown(srv *http.Server, stopNode context.CancelFunc, nodeErr <-chan error) error {
	var errs []error
	if d.sip != nil {
		if err := d.sip.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sip: close: %w", err))
		}
	}
	if err := d.node.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: close: %w", err))
	}
	stopNode()
	if nodeErr != nil {
		<-nodeErr // Start either already failed or returns now that the node is closed
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin: shutdown: %w", err))
	}
	d.log.Info("edged stopped")
	return errors.Join(errs...)
}

// reload applies what can change without a restart (SIGHUP). A bad file
// keeps the old state.
func (d *Daemon) reload() {
	if d.sip == nil {
		d.log.Info("reload: nothing to reload")
		return
	}
	if err := d.sip.ReloadSubscribers(); err != nil {
		d.log.Error("reload: subscribers kept as they were", "err", err)
		return
	}
	d.log.Info("reload: subscribers reloaded")
}
