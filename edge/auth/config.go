package auth

import (
	"errors"
	"fmt"
	"time"
)

// Config is the auth part of the edge config. Zero fields take the
// documented defaults.
type Config struct {
	// Realm is the digest realm. Default "": the request's domain (the To
	// host of a REGISTER, the From host otherwise), which is what UAs and
	// subscriber files expect in a multi-domain deployment.
	Realm string `yaml:"realm"`
	// NonceTTL is how long a nonce is accepted. Default 300 s: a UA reuses
	// a nonce for its next requests (nc counting up), so a longer TTL saves
	// challenges, but a captured nonce stays replay-guarded only while its
	// nc is remembered (see NonceCache).
	NonceTTL time.Duration `yaml:"nonce_ttl"`
	// Secret is the HMAC key that makes nonces verifiable without server
	// state. Default: random per process. Every node behind the anycast
	// address must share it, or a REGISTER landing on another node than its
	// challenge is challenged again; at least 16 bytes.
	Secret string `yaml:"secret"`
	// MaxFailures is how many failed attempts a source IP may make within
	// FailWindow before it is blocked. Default 5.
	MaxFailures int `yaml:"max_failures"`
	// FailWindow is the window failures are counted in. Default 60 s.
	FailWindow time.Duration `yaml:"fail_window"`
	// BlockFor is how long a blocked source stays blocked: its next request
	// gets 403, later ones are dropped silently (scanners stop getting
	// answers; a human sees why). Default 300 s.
	BlockFor time.Duration `yaml:"block_for"`
	// NonceCache bounds the nonce→highest-nc map used to refuse replays.
	// Default 65536 (a few MB). When a live nonce must be evicted, nonces
	// issued up to it are answered with a stale challenge instead of being
	// trusted, so a small cache costs challenges, never security.
	NonceCache int `yaml:"nonce_cache"`
	// MaxSources bounds the per-source failure table. Default 65536.
	// Evicting the least recently seen source loses its count, so an
	// attacker with more addresses than this is throttled less.
	MaxSources int `yaml:"max_sources"`
	// Algorithms are the digest algorithms offered, one challenge each, in
	// order of preference; credentials for an algorithm not listed are
	// challenged again. Default SHA-256 then MD5 (RFC 8760 §2.4). Many
	// phones (and SIPp) answer the first challenge they can parse even if
	// they only do MD5, so put MD5 first for such a fleet, or list only
	// SHA-256 to retire MD5.
	Algorithms []Algorithm `yaml:"algorithms"`
}

// DefaultConfig returns the defaults spelled out (Secret stays empty:
// New generates one).
func DefaultConfig() Config {
	return Config{
		NonceTTL:    300 * time.Second,
		MaxFailures: 5,
		FailWindow:  60 * time.Second,
		BlockFor:    300 * time.Second,
		NonceCache:  1 << 16,
		MaxSources:  1 << 16,
		Algorithms:  []Algorithm{SHA256, MD5},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.NonceTTL == 0 {
		c.NonceTTL = d.NonceTTL
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = d.MaxFailures
	}
	if c.FailWindow == 0 {
		c.FailWindow = d.FailWindow
	}
	if c.BlockFor == 0 {
		c.BlockFor = d.BlockFor
	}
	if c.NonceCache == 0 {
		c.NonceCache = d.NonceCache
	}
	if c.MaxSources == 0 {
		c.MaxSources = d.MaxSources
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = d.Algorithms
	}
	return c
}

// Validate reports whether c (with defaults filled in) is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.NonceTTL < time.Second {
		errs = append(errs, fmt.Errorf("auth: nonce_ttl %v: at least 1s", c.NonceTTL))
	}
	seen := map[Algorithm]bool{}
	for i, a := range c.Algorithms {
		alg, ok := parseAlgorithm(string(a))
		if !ok || a == "" {
			errs = append(errs, fmt.Errorf("auth: algorithms[%d]: %q is not MD5 or SHA-256", i, a))
		} else if seen[alg] {
			errs = append(errs, fmt.Errorf("auth: algorithms[%d]: %s listed twice", i, a))
		}
		seen[alg] = true
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		errs = append(errs, errors.New("auth: secret: at least 16 bytes"))
	}
	if c.MaxFailures < 1 {
		errs = append(errs, fmt.Errorf("auth: max_failures %d: at least 1", c.MaxFailures))
	}
	if c.FailWindow <= 0 || c.BlockFor <= 0 {
		errs = append(errs, fmt.Errorf("auth: fail_window %v and block_for %v must be positive", c.FailWindow, c.BlockFor))
	}
	if c.NonceCache < 1 || c.MaxSources < 1 {
		errs = append(errs, fmt.Errorf("auth: nonce_cache %d and max_sources %d must be positive", c.NonceCache, c.MaxSources))
	}
	return errors.Join(errs...)
}
