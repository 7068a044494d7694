package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/internal/config"
)

// A reload (SIGHUP) re-reads the config file and applies what changed to
// the running daemon, without a restart: no call and no BGP session is
// dropped for it. What it applies is config.Reloadable:
//
//   - log.level;
//   - cps.limits and cps.partition_policy (counters of unchanged limits
//     are kept; see cps.Limiter.Reconfigure);
//   - bgp.peers: routers added, removed or changed (only those sessions
//     are touched; see bgp.GoBGP.UpdatePeers);
//   - bgp.prefixes and the announce section (region policy, hold-down,
//     drain timers): the announced set is reconciled declaratively, a
//     drained node stays drained;
//   - the SIP subscribers file, re-read at every reload.
//
// Any other change (cluster identity and listeners, admin, sip, geo, vips,
// a section added or removed, ...) needs a restart, and the reload is
// then refused as a whole, naming every such key: the running config is
// always exactly one version of the file, never a mix. A file that does
// not parse or validate is refused the same way (file, line and key in
// the error). Either way the old config stays in force.

// Reload results, the label of anyedge_config_reload_total.
const (
	reloadSuccess         = "success"
	reloadInvalid         = "invalid"          // the file does not parse or validate
	reloadRestartRequired = "restart_required" // it changes a key a reload cannot apply
	reloadFailed          = "failed"           // applying it failed at run time
)

// RestartRequiredError refuses a reload that changes keys only a restart
// applies.
type RestartRequiredError struct {
	File string
	Keys []string
}

func (e *RestartRequiredError) Error() string {
	var b strings.Builder
	for i, k := range e.Keys {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: cannot change without a restart", k)
	}
	if e.File != "" {
		return e.File + ": " + b.String()
	}
	return b.String()
}

// reloadState is the daemon's part for reloads.
type reloadState struct {
	path  string         // the config file; "" when the daemon was given a config only
	level *slog.LevelVar // the log level, changed by a reload
	live  atomic.Pointer[config.Config]

	total  *prometheus.CounterVec
	lastOK prometheus.Gauge
	certs  *certMetrics
}

// WithConfigPath names the file a reload (SIGHUP) reads. Without it a
// SIGHUP only re-reads the subscribers file.
func WithConfigPath(path string) Option { return func(d *Daemon) { d.rl.path = path } }

// initReload sets up the reload metrics and the live config. It runs in
// New, after the registry.
func (d *Daemon) initReload() error {
	d.rl.live.Store(d.cfg)
	d.rl.total = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "anyedge_config_reload_total",
		Help: "Config reloads (SIGHUP), by result: success, invalid (parse or validation error), restart_required (a key only a restart applies), failed (applying failed).",
	}, []string{"result"})
	for _, r := range []string{reloadSuccess, reloadInvalid, reloadRestartRequired, reloadFailed} {
		d.rl.total.WithLabelValues(r)
	}
	d.rl.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "anyedge_config_last_reload_success_timestamp_seconds",
		Help: "When the config was last loaded successfully, at start or by a reload (Unix seconds).",
	})
	d.rl.lastOK.SetToCurrentTime()
	d.rl.certs = newCertMetrics(d.log)
	for _, c := range []prometheus.Collector{d.rl.total, d.rl.lastOK, d.rl.certs.expiry} {
		if err := d.reg.Register(c); err != nil {
			return err
		}
	}
	d.rl.certs.load(d.cfg)
	return nil
}

// liveConfig is the config in force: the one the daemon started with or
// the last one a reload applied.
func (d *Daemon) liveConfig() *config.Config { return d.rl.live.Load() }

// reload handles SIGHUP: it reads the config file and applies it (see
// Reload). Errors are logged and counted; the old config stays.
func (d *Daemon) reload() {
	sdNotify("RELOADING=1")
	defer sdNotify("READY=1")
	if d.rl.path == "" {
		if d.sip == nil {
			d.log.Info("reload: nothing to reload", "reason", "no config file given")
		} else {
			if err := d.sip.ReloadSubscribers(); err != nil {
				d.log.Error("reload: subscribers kept as they were", "err", err)
				return
			}
			d.log.Info("reload: subscribers reloaded")
		}
		return
	}
	cfg, err := config.Load(d.rl.path)
	if err != nil {
		// Logged before counted: whoever waits on the counter finds the
		// reason in the log.
		d.log.Error("reload refused: the old config stays in force", "err", err)
		d.rl.total.WithLabelValues(reloadInvalid).Inc()
		return
	}
	_ = d.reload1(d.rl.path, cfg)
}

// Reload applies cfg, a validated config, to the running daemon: see the
// comment at the top of this file. It returns *RestartRequiredError when
// cfg changes a key only a restart applies (nothing is applied then), or
// the error of a part that failed to apply (the parts before it are
// applied, and a reload of the same file retries the rest). The outcome
// is logged and counted.
func (d *Daemon) Reload(cfg *config.Config) error { return d.reload1("", cfg) }

// reload1 is Reload of a config read from file (named in the errors).
func (d *Daemon) reload1(file string, cfg *config.Config) error {
	old := d.liveConfig()
	changed := config.Diff(old, cfg)
	var restart []string
	for _, k := range changed {
		if !config.Reloadable(k) {
			restart = append(restart, k)
		}
	}
	if len(restart) > 0 {
		err := &RestartRequiredError{File: file, Keys: restart}
		d.log.Error("reload refused: the old config stays in force", "err", err)
		d.rl.total.WithLabelValues(reloadRestartRequired).Inc()
		return err
	}
	if err := d.apply(old, cfg); err != nil {
		d.log.Error("reload failed: what came before the failure is applied; reload again to retry", "err", err)
		d.rl.total.WithLabelValues(reloadFailed).Inc()
		return err
	}
	d.rl.live.Store(cfg)
	if len(changed) == 0 {
		d.log.Info("reload: config unchanged; subscribers re-read")
	} else {
		d.log.Info("reload: config applied", "changed", changed)
	}
	d.rl.lastOK.SetToCurrentTime()
	d.rl.total.WithLabelValues(reloadSuccess).Inc()
	return nil
}

// apply changes the running modules from old to cfg. Only reloadable keys
// differ (Reload checked).
func (d *Daemon) apply(old, cfg *config.Config) error {
	if cfg.Log.Level != old.Log.Level {
		d.rl.level.Set(cfg.Log.SlogLevel())
		d.log.Info("reload: log level", "level", cfg.Log.Level)
	}
	if d.cps != nil && !reflect.DeepEqual(old.CPS, cfg.CPS) {
		ch, err := d.cps.Reconfigure(*cfg.CPS)
		if err != nil {
			return err
		}
		d.log.Info("reload: cps limits", "added", ch.Added, "removed", ch.Removed, "rates", ch.Rates,
			"replaced", ch.Replaced, "updated", ch.Updated)
	}
	if err := d.applyBGP(old, cfg); err != nil {
		return err
	}
	if d.sip != nil {
		if err := d.sip.ReloadSubscribers(); err != nil {
			return fmt.Errorf("sip.auth.subscribers_file: %w", err)
		}
	}
	d.rl.certs.check(cfg)
	return nil
}

// applyBGP applies the peers, then the prefixes and policy, or the other
// way round when the new config has an iBGP peer: a prepend must be gone
// before an iBGP peer comes, and may come only once it is gone.
func (d *Daemon) applyBGP(old, cfg *config.Config) error {
	peers := func() error {
		if old.BGP == nil || reflect.DeepEqual(old.BGP.Peers, cfg.BGP.Peers) {
			return nil
		}
		pu, ok := d.speaker.(bgp.PeerUpdater)
		if !ok {
			return fmt.Errorf("bgp.peers: the speaker (%T) cannot change peers at run time", d.speaker)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := pu.UpdatePeers(ctx, cfg.BGP.Peers)
		return err
	}
	policy := func() error {
		samePrefixes := old.BGP == nil || reflect.DeepEqual(old.BGP.Prefixes, cfg.BGP.Prefixes)
		if samePrefixes && reflect.DeepEqual(old.Announce, cfg.Announce) {
			return nil
		}
		ctl := d.ctl.Load()
		if ctl == nil {
			return errors.New("announce: not running")
		}
		var advs []bgp.Advertisement
		if cfg.BGP != nil {
			advs = cfg.BGP.Advertisements()
		}
		return ctl.Reconfigure(cfg.Announce, advs)
	}
	steps := []func() error{peers, policy}
	if cfg.BGP != nil && hasIBGP(cfg.BGP) {
		steps = []func() error{policy, peers}
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func hasIBGP(c *bgp.Config) bool {
	for _, p := range c.Peers {
		if p.ASN == c.ASN {
			return true
		}
	}
	return false
}
