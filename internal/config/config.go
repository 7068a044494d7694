// Package config is the daemon's YAML configuration file (edged.yaml).
//
// The file is one mapping of sections. Each section maps onto the Config
// struct of the package it configures (the `cluster:` section is
// cluster.Config), so that a package's defaults and validation live with the
// package and the daemon only adds file names, key paths and line numbers to
// the errors.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/bgp/announce"
	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/cps"
	"github.com/anyedge/anyedge/edge/dialog"
	"github.com/anyedge/anyedge/geo"
	"github.com/anyedge/anyedge/vip"
)

// Config is the whole daemon configuration.
type Config struct {
	// Log configures the daemon's structured log on stderr.
	Log LogConfig `yaml:"log"`
	// Admin configures the admin HTTP API that edgectl and Prometheus use.
	Admin AdminConfig `yaml:"admin"`
	// Cluster configures the cluster protocol; see cluster.Config.
	Cluster cluster.Config `yaml:"cluster"`
	// SIP configures the SIP edge (registrar, proxy, NAT keepalives); see
	// edge.Config. Without it the node runs the cluster only.
	SIP *edge.Config `yaml:"sip"`
	// CPS configures the platform-wide calls-per-second limits on new
	// INVITEs; see cps.Config. It needs the sip section (only SIP calls are
	// limited). Without it no call is limited.
	CPS *cps.Config `yaml:"cps"`
	// BGP configures the BGP speaker that announces the node's prefixes
	// while the node is ready; see bgp.Config. Without it nothing is
	// announced.
	BGP *bgp.Config `yaml:"bgp"`
	// Announce decides when the bgp prefixes are announced (health gating,
	// hold-down, per-region policy) and how the node drains; see
	// announce.Config. Its defaults apply when the section is absent.
	Announce announce.Config `yaml:"announce"`
	// VIPs are the virtual addresses that follow sharing tags; see
	// vip.Config. An l3 VIP needs the bgp section.
	VIPs []vip.Config `yaml:"vips"`
	// Geo turns on distributed user location in the user-facing model
	// (bindings on their home node and its region partner, AoR→home
	// metadata on every node); see geo.Config. It needs the sip section
	// and, in cluster.tags, every region's HA tag (geo.tag_prefix +
	// region). Without it each node keeps its own bindings in memory.
	Geo *geo.Config `yaml:"geo"`
	// Location chooses where bindings live: user-facing (memory, the
	// default) or db-driven (a Redis Cluster shared by the site's nodes);
	// see LocationConfig.
	Location LocationConfig `yaml:"location"`
	// Dialog keeps call (dialog) state for the calls through the node,
	// replicated to its region partners (synced on startup), and limits
	// each authenticated user's concurrent calls (486 past the limit); see
	// dialog.Config. It needs the sip section. Without it no call state is
	// kept.
	Dialog *dialog.Config `yaml:"dialog"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is the lowest level logged: debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is "text" (default, for people) or "json" (for log shippers).
	Format string `yaml:"format"`
}

// AdminConfig configures the admin HTTP API.
type AdminConfig struct {
	// Listen is the admin API's TCP address. Default "127.0.0.1:9090": the
	// API can change cluster state, so it is not exposed unless asked for.
	Listen string `yaml:"listen"`
	// Token is the bearer token that state-changing calls must present.
	// Optional on a loopback address (local access is already trusted);
	// required otherwise, so that exposing the API never exposes it
	// unauthenticated.
	Token string `yaml:"token"`
	// TokenFile reads Token from a file (surrounding whitespace trimmed), to
	// keep the secret out of the config file. Exclusive with Token.
	TokenFile string `yaml:"token_file"`
}

// DefaultAdminListen is the admin API address when none is configured.
const DefaultAdminListen = "127.0.0.1:9090"

// SlogLevel returns the configured level as a slog.Level. Call it on a
// validated config; unknown levels map to info.
func (c LogConfig) SlogLevel() slog.Level {
	switch c.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// validate fills defaults and checks every section. Errors are *fieldError
// with the full key path (for example "cluster.tags[1].name").
func (c *Config) validate() error {
	if err := c.Log.validate(); err != nil {
		return err
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	if err := c.Cluster.Validate(); err != nil {
		var fe *cluster.FieldError
		if errors.As(err, &fe) {
			return &fieldError{key: "cluster." + fe.Key, msg: fe.Err}
		}
		return &fieldError{key: "cluster", msg: err.Error()}
	}
	if c.SIP != nil {
		if err := c.SIP.Validate(); err != nil {
			var fe *edge.FieldError
			if errors.As(err, &fe) {
				return &fieldError{key: "sip." + fe.Key, msg: fe.Msg}
			}
			return &fieldError{key: "sip", msg: err.Error()}
		}
	}
	if c.Geo != nil {
		if c.SIP == nil {
			return &fieldError{key: "geo", msg: "needs the sip section: it is where SIP bindings live"}
		}
		var fe *cluster.FieldError
		if err := c.Geo.Validate(); err != nil {
			if errors.As(err, &fe) {
				return &fieldError{key: "geo." + fe.Key, msg: fe.Err}
			}
			return &fieldError{key: "geo", msg: err.Error()}
		}
		if err := geo.CheckClusterTags(c.Geo, &c.Cluster); err != nil {
			if errors.As(err, &fe) {
				return &fieldError{key: "cluster." + fe.Key, msg: fe.Err}
			}
			return &fieldError{key: "cluster.tags", msg: err.Error()}
		}
	}
	if c.Dialog != nil {
		if c.SIP == nil {
			return &fieldError{key: "dialog", msg: "needs the sip section: it tracks SIP calls"}
		}
		if err := c.Dialog.Validate(); err != nil {
			var fe *cluster.FieldError
			if errors.As(err, &fe) {
				return &fieldError{key: "dialog." + fe.Key, msg: fe.Err}
			}
			return &fieldError{key: "dialog", msg: err.Error()}
		}
	}
	if err := c.validateLocation(); err != nil {
		return err
	}
	if c.CPS != nil {
		if c.SIP == nil {
			return &fieldError{key: "cps", msg: "needs the sip section: the limits apply to new SIP calls"}
		}
		if err := c.CPS.Validate(); err != nil {
			var fe *cps.FieldError
			if errors.As(err, &fe) {
				return &fieldError{key: "cps." + fe.Key, msg: fe.Err}
			}
			return &fieldError{key: "cps", msg: err.Error()}
		}
	}
	if c.BGP != nil {
		if err := c.BGP.Validate(); err != nil {
			var fe *bgp.FieldError
			if errors.As(err, &fe) {
				return &fieldError{key: "bgp." + fe.Key, msg: fe.Err}
			}
			return &fieldError{key: "bgp", msg: err.Error()}
		}
	}
	if err := c.validateAnnounce(); err != nil {
		return err
	}
	return c.validateVIPs()
}

func (c *Config) validateAnnounce() error {
	a := &c.Announce
	if err := a.Validate(); err != nil {
		var fe *announce.FieldError
		if errors.As(err, &fe) {
			return &fieldError{key: "announce." + fe.Key, msg: fe.Err}
		}
		return &fieldError{key: "announce", msg: err.Error()}
	}
	if c.BGP == nil {
		return nil
	}
	if err := a.CheckPrefixes(c.BGP.Advertisements()); err != nil {
		var fe *announce.FieldError
		if errors.As(err, &fe) {
			return &fieldError{key: "announce." + fe.Key, msg: fe.Err}
		}
		return &fieldError{key: "announce", msg: err.Error()}
	}
	if a.HasPrepend() {
		for _, p := range c.BGP.Peers {
			if p.ASN == c.BGP.ASN {
				return &fieldError{key: "announce", msg: fmt.Sprintf(
					"a region policy or drain.prepend prepends, but peer %s is iBGP: it would see its own AS and drop the path", p.Address)}
			}
		}
	}
	return nil
}

func (c *Config) validateVIPs() error {
	var tags []string
	for _, t := range c.Cluster.Tags {
		tags = append(tags, t.Name)
	}
	vips, err := vip.Parse(c.VIPs, tags)
	if err != nil {
		var fe *vip.FieldError
		if errors.As(err, &fe) {
			return &fieldError{key: "vips" + fe.Key, msg: fe.Err}
		}
		return &fieldError{key: "vips", msg: err.Error()}
	}
	for i, v := range vips {
		if v.Mode == vip.ModeL3 && c.BGP == nil {
			return &fieldError{key: fmt.Sprintf("vips[%d].mode", i), msg: "l3 VIPs are announced over BGP: they need the bgp section"}
		}
	}
	return nil
}

func (c *LogConfig) validate() error {
	switch c.Level {
	case "":
		c.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		return &fieldError{key: "log.level", msg: fmt.Sprintf("must be debug, info, warn or error, not %q", c.Level)}
	}
	switch c.Format {
	case "":
		c.Format = "text"
	case "text", "json":
	default:
		return &fieldError{key: "log.format", msg: fmt.Sprintf("must be text or json, not %q", c.Format)}
	}
	return nil
}

func (c *AdminConfig) validate() error {
	if c.Listen == "" {
		c.Listen = DefaultAdminListen
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return &fieldError{key: "admin.listen", msg: fmt.Sprintf("not host:port: %v", err)}
	}
	if c.Token != "" && c.TokenFile != "" {
		return &fieldError{key: "admin.token_file", msg: "set token or token_file, not both"}
	}
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return &fieldError{key: "admin.token_file", msg: err.Error()}
		}
		c.Token = strings.TrimSpace(string(b))
		if c.Token == "" {
			return &fieldError{key: "admin.token_file", msg: fmt.Sprintf("%s is empty", c.TokenFile)}
		}
	}
	if c.Token == "" && !isLoopback(host) {
		return &fieldError{key: "admin.token", msg: fmt.Sprintf(
			"required when admin.listen (%s) is not a loopback address: set token or token_file", c.Listen)}
	}
	return nil
}

// isLoopback reports whether host only accepts local connections. An empty
// host listens on every interface, so it is not loopback.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
