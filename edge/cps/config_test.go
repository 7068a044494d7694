package cps

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Limits: []LimitConfig{{Name: "global", Rate: 100}, {Name: "per-ip", Rate: 5, Selector: SourceIP, Response: ResponseConfig{Code: 486}}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Slot != 100*time.Millisecond || c.Interval != 50*time.Millisecond || c.PartitionPolicy != Split ||
		c.MaxKeys != 100000 || c.KeyIdle != time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	g := c.Limits[0]
	if g.Window != time.Second || g.Algorithm != Sliding || g.Selector != Global || g.Response.Code != 503 || g.Response.RetryAfter != time.Second {
		t.Errorf("limit defaults: %+v", g)
	}
	if r := c.Limits[1].Response; r.Code != 486 || r.RetryAfter != 0 {
		t.Errorf("486 takes no Retry-After by default: %+v", r)
	}
	// Validate is idempotent (the daemon validates, then New does again).
	before := c
	before.Limits = append([]LimitConfig(nil), c.Limits...)
	if err := c.Validate(); err != nil || c.Limits[0] != before.Limits[0] || c.Limits[1] != before.Limits[1] {
		t.Errorf("second Validate changed the config or failed: %v", err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	ok := func() Config {
		return Config{Limits: []LimitConfig{{Name: "a", Rate: 10}, {Name: "b", Rate: 10}, {Name: "c", Rate: 10}}}
	}
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"slot", func(c *Config) { c.Slot = 5 * time.Millisecond }},
		{"interval", func(c *Config) { c.Interval = 200 * time.Millisecond }},
		{"partition_policy", func(c *Config) { c.PartitionPolicy = "both" }},
		{"max_keys", func(c *Config) { c.MaxKeys = -1 }},
		{"key_idle", func(c *Config) { c.KeyIdle = -time.Second }},
		{"limits[1].name", func(c *Config) { c.Limits[1].Name = "" }},
		{"limits[2].name", func(c *Config) { c.Limits[2].Name = "a" }},
		{"limits[2].name", func(c *Config) { c.Limits[2].Name = strings.Repeat("x", 65) }},
		{"limits[2].rate", func(c *Config) { c.Limits[2].Rate = 0 }},
		{"limits[2].rate", func(c *Config) { c.Limits[2].Rate = -3 }},
		{"limits[2].rate", func(c *Config) { c.Limits[2].Rate = 0.5 }}, // less than one call per 1 s window
		{"limits[0].window", func(c *Config) { c.Limits[0].Window = 150 * time.Millisecond }},
		{"limits[0].window", func(c *Config) { c.Limits[0].Window = time.Hour }},
		{"limits[1].window", func(c *Config) {
			c.Limits[1].Selector, c.Limits[1].Window = AuthUser, 2*time.Minute
		}},
		{"limits[1].algorithm", func(c *Config) { c.Limits[1].Algorithm = "leaky" }},
		{"limits[1].selector", func(c *Config) { c.Limits[1].Selector = "to_domain" }},
		{"limits[2].response.code", func(c *Config) { c.Limits[2].Response.Code = 404 }},
		{"limits[2].response.retry_after", func(c *Config) { c.Limits[2].Response.RetryAfter = 1500 * time.Millisecond }},
	}
	for _, tc := range cases {
		c := ok()
		tc.mutate(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("want an error on %s, got %v", tc.key, err)
		}
	}
	c := ok()
	c.Limits = make([]LimitConfig, MaxLimits+1)
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "limits:") {
		t.Errorf("too many limits: %v", err)
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
slot: 50ms
interval: 25ms
partition_policy: full
max_keys: 1000
key_idle: 30s
limits:
  - name: global
    rate: 2000
  - name: per-ip
    rate: 10
    window: 2s
    algorithm: red
    selector: source_ip
    response: {code: 480, retry_after: 5s}
  - name: eu
    rate: 500
    region: eu-west
    algorithm: taildrop
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Slot != 50*time.Millisecond || c.PartitionPolicy != Full || c.MaxKeys != 1000 || len(c.Limits) != 3 {
		t.Fatalf("decoded %+v", c)
	}
	if l := c.Limits[1]; l.Window != 2*time.Second || l.Algorithm != RED || l.Selector != SourceIP ||
		l.Response.Code != 480 || l.Response.RetryAfter != 5*time.Second {
		t.Errorf("per-ip: %+v", l)
	}
	if l := c.Limits[2]; l.Region != "eu-west" || l.Algorithm != Taildrop {
		t.Errorf("eu: %+v", l)
	}
}
