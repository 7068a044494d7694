package redisloc

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Defaults. Each is explained on the Config field it fills.
const (
	DefaultTimeout      = 500 * time.Millisecond
	DefaultKeyPrefix    = "al:"
	DefaultReapInterval = time.Second
	DefaultReapBatch    = 500
)

// Config configures the Redis Cluster location store. The daemon's YAML
// `location.redis:` section maps onto it. Zero values take the defaults
// documented on each field; Validate fills them in. Every node sharing the
// cluster must use the same KeyPrefix.
type Config struct {
	// Addrs are seed addresses ("host:port") of the Redis Cluster; the
	// client learns the other nodes from CLUSTER SLOTS. Required.
	Addrs []string `yaml:"addrs"`
	// Username is the ACL user (Redis 6+); empty means "default".
	Username string `yaml:"username"`
	// Password of the ACL user. Prefer PasswordFile, which keeps it out
	// of the config file; not both.
	Password string `yaml:"password"`
	// PasswordFile is a file holding the password (trailing newline
	// trimmed), read by Validate.
	PasswordFile string `yaml:"password_file"`
	// TLS turns on TLS to every cluster node when set.
	TLS *TLSConfig `yaml:"tls"`
	// Timeout bounds every operation (dial, read, write, and a whole Save
	// or Lookup including redirects). Default 500 ms: a REGISTER or an
	// INVITE must not hang on a dead cluster; on loopback or a LAN an
	// operation takes well under a millisecond. 1 ms..30 s.
	Timeout time.Duration `yaml:"timeout"`
	// WaitReplicas, when > 0, makes every Save wait (WAIT numreplicas)
	// until that many replicas of the AoR's master acknowledged the write
	// before the REGISTER is answered 200. A Save that times out waiting
	// still answers 200 (the write is on the master) and is counted in
	// anyedge_location_redis_wait_short_total. Default 0: no wait, a
	// failover can lose the last writes (see the package doc). 0..5.
	WaitReplicas int `yaml:"wait_replicas"`
	// WaitTimeout bounds the WAIT. Default Timeout/2.
	WaitTimeout time.Duration `yaml:"wait_timeout"`
	// PoolSize is the connection pool size per cluster node. Default 0:
	// go-redis's default (10 per GOMAXPROCS). 0..10000.
	PoolSize int `yaml:"pool_size"`
	// KeyPrefix starts every key this store writes, so that a cluster
	// can be shared with other users. Default "al:". Keep it short: it is
	// stored in every key.
	KeyPrefix string `yaml:"key_prefix"`
	// ReapInterval is how often the node prunes expired bindings of the
	// AoRs it is home for and flushes its home index. Redis's own key
	// expiry removes an AoR whose bindings all expired, whatever this is;
	// lookups never return an expired binding. Default 1 s.
	ReapInterval time.Duration `yaml:"reap_interval"`
}

// TLSConfig configures TLS to Redis.
type TLSConfig struct {
	// CA is a PEM file of the CAs that sign the servers' certificates
	// (default: the system pool).
	CA string `yaml:"ca"`
	// Cert and Key are a PEM client certificate and key, for clusters that
	// require client certificates (tls-auth-clients yes). Both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName is the name checked in the servers' certificates
	// (default: the host of each address).
	ServerName string `yaml:"server_name"`
}

// FieldError is a validation error naming the key within the section.
type FieldError struct{ Key, Err string }

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

func bad(key, format string, a ...any) error {
	return &FieldError{Key: key, Err: fmt.Sprintf(format, a...)}
}

// Validate fills defaults and checks every field. Errors are *FieldError.
// It reads PasswordFile and the TLS files, so that a bad path is refused
// at config check rather than at the first REGISTER.
func (c *Config) Validate() error {
	if len(c.Addrs) == 0 {
		return bad("addrs", "required: at least one host:port of the Redis Cluster")
	}
	for i, a := range c.Addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return bad(fmt.Sprintf("addrs[%d]", i), "must be host:port, not %q", a)
		}
	}
	if c.Password != "" && c.PasswordFile != "" {
		return bad("password_file", "set password or password_file, not both")
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return bad("password_file", "%v", err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
		c.PasswordFile = "" // read: Validate stays idempotent
		if c.Password == "" {
			return bad("password_file", "the file is empty")
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < time.Millisecond || c.Timeout > 30*time.Second {
		return bad("timeout", "must be 1ms..30s, not %v", c.Timeout)
	}
	if c.WaitReplicas < 0 || c.WaitReplicas > 5 {
		return bad("wait_replicas", "must be 0..5, not %d", c.WaitReplicas)
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = c.Timeout / 2
	}
	if c.WaitTimeout < time.Millisecond || c.WaitTimeout >= c.Timeout {
		return bad("wait_timeout", "must be at least 1ms and less than timeout (%v), not %v", c.Timeout, c.WaitTimeout)
	}
	if c.PoolSize < 0 || c.PoolSize > 10000 {
		return bad("pool_size", "must be 0..10000, not %d", c.PoolSize)
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		return bad("key_prefix", "must not contain { or }: they would change the hash slot")
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = DefaultReapInterval
	}
	if c.ReapInterval < 10*time.Millisecond || c.ReapInterval > time.Minute {
		return bad("reap_interval", "must be 10ms..1m, not %v", c.ReapInterval)
	}
	if c.TLS != nil {
		if _, err := c.TLS.build(); err != nil {
			return err
		}
	}
	return nil
}

// build loads the TLS files. Errors are *FieldError naming the tls key.
func (t *TLSConfig) build() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, bad("tls.ca", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, bad("tls.ca", "no PEM certificate in %s", t.CA)
		}
		cfg.RootCAs = pool
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, bad("tls.cert", "cert and key go together")
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, bad("tls.cert", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
