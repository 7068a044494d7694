package edge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anyedge/anyedge/edge/nat"
	"github.com/anyedge/anyedge/edge/registrar"
	"github.com/anyedge/anyedge/edge/upstream"
)

// Config is the SIP side of one edge node; the daemon's YAML `sip:`
// section maps onto it field by field. Zero values take the defaults
// documented on each field; Validate fills them in.
type Config struct {
	// Listeners are the sockets the node serves SIP on: its own address,
	// the anycast addresses and the VIPs. At least one is required.
	Listeners []Listener `yaml:"listeners"`
	// Domains are the SIP domains served here: REGISTER and requests for
	// them are handled locally, anything else is relayed upstream (if the
	// sender may). The advertised hosts of the listeners always count as
	// local too, for phones configured with an IP as their domain.
	Domains []string `yaml:"domains"`
	// Registrar configures REGISTER handling (expiry bounds, contact caps).
	Registrar registrar.Config `yaml:"registrar"`
	// Auth configures digest authentication.
	Auth AuthConfig `yaml:"auth"`
	// Forking is how a request for an AoR with several contacts is
	// forked: "parallel" (default, every contact rings at once) or
	// "serial" (by q-value, highest first; contacts with equal q in
	// parallel; the next q is tried when a group fails).
	Forking string `yaml:"forking"`
	// Upstreams are the core elements (softswitch, PBX, SBC) that requests
	// for non-local domains go to, with failover on timeout or 503.
	Upstreams []upstream.Target `yaml:"upstreams"`
	// UpstreamHealth configures the OPTIONS probes of the upstreams.
	UpstreamHealth upstream.Health `yaml:"upstream_health"`
	// Trusted are CIDRs whose requests are accepted without
	// authentication, and may be relayed anywhere: the upstreams and other
	// trusted peers. Upstreams given as IP:port are trusted implicitly;
	// list the addresses of upstreams given by name here.
	Trusted []string `yaml:"trusted"`
	// Keepalive configures the NAT keepalives of contacts registered
	// through this node.
	Keepalive nat.Config `yaml:"keepalive"`
	// MaxMessageSize bounds a SIP message, in bytes. Larger ones get 513
	// (UDP) or lose their connection (TCP, where there is no boundary left
	// to resync on). Default 32768, sipgo's UDP read buffer: a larger UDP
	// datagram would be cut anyway.
	MaxMessageSize int `yaml:"max_message_size"`
	// MaxBodySize bounds a message body, in bytes; larger requests get
	// 413. Default 16384: far above any SDP, far below abuse.
	MaxBodySize int `yaml:"max_body_size"`
	// MaxRegistersInFlight bounds the UDP REGISTERs being handled at once.
	// Past it a REGISTER datagram is dropped before parsing (the UA
	// retransmits): under a re-registration storm the node sheds the
	// excess instead of queueing work it cannot finish before the UA gives
	// up, which would also starve its cluster heartbeats. Default 4000:
	// 400 ms of work at 10,000 REGISTER/s, when UAs start retransmitting
	// (T1, 500 ms). A REGISTER whose 200 waits for geo's partner ack is
	// no longer counted: its handler has returned.
	MaxRegistersInFlight int `yaml:"max_registers_in_flight"`
	// Timeouts of forwarded requests.
	Timeouts Timeouts `yaml:"timeouts"`
	// RecordRouteKey signs the Record-Route entries we add, so that an
	// in-dialog request from an untrusted source is only relayed along a
	// route we created for its dialog (never an open relay). Nodes that
	// share an anycast address must share the key. Default: random per
	// process, so dialogs do not survive a restart of this node's key.
	RecordRouteKey string `yaml:"record_route_key"`
}

// Listener is one socket.
type Listener struct {
	// Transport is "udp", "tcp" or "tls".
	Transport string `yaml:"transport"`
	// Addr is the "ip:port" to bind, IPv4 or IPv6. Port 0 picks a free
	// port (tests). The address need not be on the box yet: sockets are
	// bound with IP_FREEBIND on Linux, so a backup node can listen on a
	// VIP before it owns it.
	Addr string `yaml:"addr"`
	// Advertise is the "host:port" written into Via and Record-Route:
	// the anycast address for a node behind anycast. Default: Addr (with
	// the real port when Addr's port is 0).
	Advertise string `yaml:"advertise"`
	// CertFile and KeyFile are the TLS certificate and key (PEM); required
	// for transport tls.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// AuthConfig configures digest authentication.
type AuthConfig struct {
	// Enabled turns authentication on. Off, REGISTER is accepted from
	// anybody and only registered users may call out (by source address).
	Enabled bool `yaml:"enabled"`
	// SubscribersFile is the subscriber list (required when enabled). It
	// also tells an unknown user (404) from a known one that is offline
	// (480).
	SubscribersFile string `yaml:"subscribers_file"`
	// Invite challenges (407) out-of-dialog requests other than REGISTER
	// from untrusted sources: calls, MESSAGE, SUBSCRIBE and the rest.
	// Default true when auth is enabled.
	Invite *bool `yaml:"invite"`
	// Realm of the challenges. Default: the domain of each request (the
	// To host of a REGISTER, the From host otherwise), which suits a
	// multi-domain subscriber file.
	Realm string `yaml:"realm"`
	// Secret signs nonces. Nodes sharing an anycast address must share it,
	// or a REGISTER landing on another node than its challenge is
	// challenged again. Default: random per process; at least 16 bytes.
	Secret string `yaml:"secret"`
	// Algorithms lists the digest algorithms offered, in order of
	// preference: "SHA-256", "MD5". Default SHA-256 then MD5. Phones that
	// take the first challenge even when they only do MD5 need MD5 first.
	Algorithms []string `yaml:"algorithms"`
}

// Timeouts of forwarded requests.
type Timeouts struct {
	// NoResponse ends a branch that sent nothing back, not even 100 Trying:
	// the next upstream is tried. Default 4 s.
	NoResponse time.Duration `yaml:"no_response"`
	// Invite ends an INVITE branch that is ringing without an answer: it
	// is cancelled. Default 120 s.
	Invite time.Duration `yaml:"invite"`
}

// Forking modes.
const (
	ForkParallel = "parallel"
	ForkSerial   = "serial"
)

// FieldError is a config error naming its key, relative to the SIP
// section (for example "listeners[0].addr").
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// prefixed re-keys the FieldError of a sub-config under prefix.
func prefixed(prefix string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Key: prefix + "." + fe.Key, Msg: fe.Msg}
	}
	var ne *nat.FieldError
	if errors.As(err, &ne) {
		return &FieldError{Key: prefix + "." + ne.Key, Msg: ne.Msg}
	}
	var ue *upstream.FieldError
	if errors.As(err, &ue) {
		return &FieldError{Key: prefix + "." + ue.Key, Msg: ue.Msg}
	}
	return &FieldError{Key: prefix, Msg: err.Error()}
}

// Validate checks the config and fills defaults. Errors are *FieldError.
func (c *Config) Validate() error {
	if len(c.Listeners) == 0 {
		return bad("listeners", "at least one listener is required")
	}
	for i := range c.Listeners {
		if err := c.Listeners[i].validate(); err != nil {
			return prefixed(fmt.Sprintf("listeners[%d]", i), err)
		}
	}
	for i, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, " @;:<>") {
			return bad(fmt.Sprintf("domains[%d]", i), "not a domain: %q", d)
		}
		c.Domains[i] = strings.ToLower(d)
	}
	if err := c.Auth.validate(); err != nil {
		return prefixed("auth", err)
	}
	switch c.Forking {
	case "":
		c.Forking = ForkParallel
	case ForkParallel, ForkSerial:
	default:
		return bad("forking", "must be parallel or serial, not %q", c.Forking)
	}
	for i := range c.Upstreams {
		if err := c.Upstreams[i].Validate(); err != nil {
			return prefixed(fmt.Sprintf("upstreams[%d]", i), err)
		}
	}
	if err := c.UpstreamHealth.Validate(); err != nil {
		return prefixed("upstream_health", err)
	}
	for i, t := range c.Trusted {
		if _, err := parseCIDR(t); err != nil {
			return bad(fmt.Sprintf("trusted[%d]", i), "not a CIDR or IP: %q", t)
		}
	}
	if err := c.Registrar.Validate(); err != nil {
		return &FieldError{Key: "registrar", Msg: strings.ReplaceAll(err.Error(), "registrar: ", "")}
	}
	if err := c.Keepalive.Validate(); err != nil {
		return prefixed("keepalive", err)
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 32768
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > 65535 {
		return bad("max_message_size", "must be 1024..65535, not %d", c.MaxMessageSize)
	}
	if c.MaxBodySize == 0 {
		c.MaxBodySize = min(16384, c.MaxMessageSize)
	}
	if c.MaxBodySize < 0 || c.MaxBodySize > c.MaxMessageSize {
		return bad("max_body_size", "must be 0..max_message_size (%d)", c.MaxMessageSize)
	}
	if c.MaxRegistersInFlight == 0 {
		c.MaxRegistersInFlight = 4000
	}
	if c.MaxRegistersInFlight < 1 || c.MaxRegistersInFlight > 1_000_000 {
		return bad("max_registers_in_flight", "must be 1..1000000, not %d", c.MaxRegistersInFlight)
	}
	if c.Timeouts.NoResponse == 0 {
		c.Timeouts.NoResponse = 4 * time.Second
	}
	if c.Timeouts.Invite == 0 {
		c.Timeouts.Invite = 120 * time.Second
	}
	if c.Timeouts.NoResponse < 100*time.Millisecond || c.Timeouts.NoResponse > 30*time.Second {
		return bad("timeouts.no_response", "must be 100ms..30s, not %v", c.Timeouts.NoResponse)
	}
	if c.Timeouts.Invite < c.Timeouts.NoResponse {
		return bad("timeouts.invite", "must be at least timeouts.no_response")
	}
	if c.RecordRouteKey != "" && len(c.RecordRouteKey) < 16 {
		return bad("record_route_key", "at least 16 bytes when set")
	}
	return nil
}

func (l *Listener) validate() error {
	l.Transport = strings.ToLower(l.Transport)
	switch l.Transport {
	case "udp", "tcp":
	case "tls":
		if l.CertFile == "" || l.KeyFile == "" {
			return bad("cert_file", "tls needs cert_file and key_file")
		}
		for _, f := range []struct{ key, path string }{{"cert_file", l.CertFile}, {"key_file", l.KeyFile}} {
			if _, err := os.Stat(f.path); err != nil {
				return bad(f.key, "%v", err)
			}
		}
	case "":
		return bad("transport", "required: udp, tcp or tls")
	default:
		return bad("transport", "must be udp, tcp or tls, not %q", l.Transport)
	}
	if l.Transport != "tls" && (l.CertFile != "" || l.KeyFile != "") {
		return bad("cert_file", "only for transport tls")
	}
	ap, err := netip.ParseAddrPort(l.Addr)
	if err != nil {
		return bad("addr", "not ip:port: %q", l.Addr)
	}
	if ap.Addr().Zone() != "" {
		return bad("addr", "zoned addresses are not supported: %q", l.Addr)
	}
	if ap.Addr().IsUnspecified() && l.Advertise == "" {
		return bad("advertise", "required when addr is a wildcard (%s): Via and Record-Route need a real address", l.Addr)
	}
	if l.Advertise != "" {
		host, port, err := net.SplitHostPort(l.Advertise)
		if err != nil || host == "" {
			return bad("advertise", "not host:port: %q", l.Advertise)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return bad("advertise", "bad port in %q", l.Advertise)
		}
	}
	return nil
}

func (a *AuthConfig) validate() error {
	if !a.Enabled {
		return nil
	}
	if a.SubscribersFile == "" {
		return bad("subscribers_file", "required when auth is enabled")
	}
	if _, err := os.Stat(a.SubscribersFile); err != nil {
		return bad("subscribers_file", "%v", err)
	}
	if a.Invite == nil {
		t := true
		a.Invite = &t
	}
	if a.Secret != "" && len(a.Secret) < 16 {
		return bad("secret", "at least 16 bytes when set")
	}
	seen := map[string]bool{}
	for i, alg := range a.Algorithms {
		up := strings.ToUpper(alg)
		if up != "MD5" && up != "SHA-256" {
			return bad(fmt.Sprintf("algorithms[%d]", i), "%q is not MD5 or SHA-256", alg)
		}
		if seen[up] {
			return bad(fmt.Sprintf("algorithms[%d]", i), "%s listed twice", alg)
		}
		seen[up] = true
	}
	return nil
}

// inviteAuth reports whether out-of-dialog requests are challenged.
func (a *AuthConfig) inviteAuth() bool { return a.Enabled && a.Invite != nil && *a.Invite }

// parseCIDR accepts a CIDR or a bare IP (a /32 or /128).
func parseCIDR(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.BitLen()), nil
}
