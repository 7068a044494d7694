package registrar

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// Contact-cap policies, as written in the config file.
const (
	PolicyReject        = "reject"
	PolicyReplaceOldest = "replace-oldest"
)

// Config is the registrar's part of the edge config. Zero fields take the
// documented defaults, so a config file only names what it changes.
type Config struct {
	// MinExpires is the shortest registration accepted. A shorter non-zero
	// expiry gets 423 Interval Too Brief with Min-Expires (RFC 3261 §10.3
	// step 7), and the UA retries with this value. Default 60 s: NAT
	// keepalives, not re-REGISTERs, are what keep pinholes open, and every
	// refresh costs a replicated write.
	MinExpires time.Duration `yaml:"min_expires"`
	// MaxExpires caps longer requests (the 200 OK says what was granted).
	// Default 3600 s: a UA that vanished without unregistering is dropped
	// within an hour.
	MaxExpires time.Duration `yaml:"max_expires"`
	// DefaultExpires applies when the REGISTER has neither an Expires
	// header nor an expires parameter. Default 3600 s (RFC 3261 suggests
	// 3600 for this case).
	DefaultExpires time.Duration `yaml:"default_expires"`
	// MaxContacts bounds the bindings of one AoR, and the contacts one
	// REGISTER may carry. Default 10: more than a user's devices, few
	// enough that a forking INVITE stays small. -1: no limit.
	MaxContacts int `yaml:"max_contacts"`
	// Policy when an AoR is full: "reject" answers 403; "replace-oldest"
	// (default) evicts the least recently registered binding, so a user
	// who replaced a phone without unregistering the old one is not
	// locked out.
	Policy string `yaml:"policy"`
	// Domains are the domains we are registrar for (AoR host, compared
	// case-insensitively). A REGISTER for any other domain gets 404 (RFC
	// 3261 §10.3 step 3). Empty: any domain (single-tenant labs).
	Domains []string `yaml:"domains"`
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{
		MinExpires:     60 * time.Second,
		MaxExpires:     3600 * time.Second,
		DefaultExpires: 3600 * time.Second,
		MaxContacts:    10,
		Policy:         PolicyReplaceOldest,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MinExpires == 0 {
		c.MinExpires = d.MinExpires
	}
	if c.MaxExpires == 0 {
		c.MaxExpires = d.MaxExpires
	}
	if c.DefaultExpires == 0 {
		c.DefaultExpires = d.DefaultExpires
	}
	if c.MaxContacts == 0 {
		c.MaxContacts = d.MaxContacts
	}
	if c.Policy == "" {
		c.Policy = d.Policy
	}
	return c
}

// Validate reports whether c (with defaults filled in) is usable. It is
// what `edged config check` runs.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.MinExpires < time.Second || c.MinExpires%time.Second != 0 {
		errs = append(errs, fmt.Errorf("registrar: min_expires %v: must be whole seconds, at least 1s", c.MinExpires))
	}
	if c.MaxExpires < c.MinExpires || c.MaxExpires%time.Second != 0 {
		errs = append(errs, fmt.Errorf("registrar: max_expires %v: must be whole seconds, at least min_expires %v", c.MaxExpires, c.MinExpires))
	}
	if c.DefaultExpires < c.MinExpires || c.DefaultExpires > c.MaxExpires || c.DefaultExpires%time.Second != 0 {
		errs = append(errs, fmt.Errorf("registrar: default_expires %v: must be whole seconds within [%v, %v]", c.DefaultExpires, c.MinExpires, c.MaxExpires))
	}
	if c.MaxContacts < -1 {
		errs = append(errs, fmt.Errorf("registrar: max_contacts %d: must be positive, or -1 for no limit", c.MaxContacts))
	}
	if _, err := parsePolicy(c.Policy); err != nil {
		errs = append(errs, err)
	}
	for _, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, " \t@;:") && !strings.HasPrefix(d, "[") {
			errs = append(errs, fmt.Errorf("registrar: domain %q: not a host name", d))
		}
	}
	return errors.Join(errs...)
}

func parsePolicy(p string) (location.Policy, error) {
	switch p {
	case PolicyReject:
		return location.PolicyReject, nil
	case PolicyReplaceOldest, "":
		return location.PolicyReplaceOldest, nil
	}
	return 0, fmt.Errorf("registrar: policy %q: want %q or %q", p, PolicyReject, PolicyReplaceOldest)
}
