package bgp

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const sampleYAML = `
asn: 65001
router_id: 198.18.0.11
peers:
  - address: 198.18.0.1
    asn: 65000
    password: s3cret
    bfd: {enabled: true, min_tx: 200ms}
  - address: 2001:db8:ff::1
    asn: 65000
    hold_time: 30s
    families: [ipv6-unicast, ipv4-unicast]
prefixes:
  - prefix: 203.0.113.10/32
    med: 10
    communities: ["65535:0", 64512:7, no_export, 4294967295]
    prepend: 2
  - prefix: 2001:db8::10/128
`

func TestConfigYAMLAndDefaults(t *testing.T) {
	var c Config
	if err := yaml.Unmarshal([]byte(sampleYAML), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p0, p1 := c.Peers[0], c.Peers[1]
	if p0.Port != 179 || p0.HoldTime != 9*time.Second || p0.Keepalive != 3*time.Second ||
		p0.ConnectRetry != time.Second || p0.IdleHold != time.Second || !slices.Equal(p0.Families, []string{IPv4Unicast}) {
		t.Errorf("peer 0 defaults: %+v", p0)
	}
	if p0.BFD.MinTx != 200*time.Millisecond || p0.BFD.MinRx != 300*time.Millisecond || p0.BFD.Multiplier != 3 {
		t.Errorf("peer 0 bfd: %+v", p0.BFD)
	}
	if p1.Keepalive != 10*time.Second || p1.BFD.Enabled {
		t.Errorf("peer 1: %+v", p1)
	}
	advs := c.Advertisements()
	want := Advertisement{
		Prefix: netip.MustParsePrefix("203.0.113.10/32"), MED: 10, Prepend: 2,
		Communities: []Community{GracefulShutdown, 64512<<16 | 7, NoExport, 0xffffffff},
	}
	if len(advs) != 2 || !advs[0].Equal(want) || advs[1].Prefix != netip.MustParsePrefix("2001:db8::10/128") {
		t.Errorf("advertisements %v", advs)
	}
}

func TestConfigErrors(t *testing.T) {
	base := func() Config {
		return Config{ASN: 65001, RouterID: "198.18.0.11",
			Peers:    []PeerConfig{{Address: "198.18.0.1", ASN: 65000}},
			Prefixes: []PrefixConfig{{Prefix: "203.0.113.10/32"}}}
	}
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"asn", func(c *Config) { c.ASN = 0 }},
		{"asn", func(c *Config) { c.ASN = 23456 }},
		{"router_id", func(c *Config) { c.RouterID = "" }},
		{"router_id", func(c *Config) { c.RouterID = "2001:db8::1" }},
		{"peers[0].address", func(c *Config) { c.Peers[0].Address = "router1" }},
		{"peers[1].address", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }},
		{"peers[0].asn", func(c *Config) { c.Peers[0].ASN = 0 }},
		{"peers[0].local_address", func(c *Config) { c.Peers[0].LocalAddress = "2001:db8::2" }},
		{"peers[0].password", func(c *Config) { c.Peers[0].Password = strings.Repeat("x", 81) }},
		{"peers[0].hold_time", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }},
		{"peers[0].hold_time", func(c *Config) { c.Peers[0].HoldTime = 9500 * time.Millisecond }},
		{"peers[0].keepalive", func(c *Config) { c.Peers[0].Keepalive = 9 * time.Second }},
		{"peers[0].connect_retry", func(c *Config) { c.Peers[0].ConnectRetry = 500 * time.Millisecond }},
		{"peers[0].idle_hold", func(c *Config) { c.Peers[0].IdleHold = -time.Second }},
		{"peers[0].families[0]", func(c *Config) { c.Peers[0].Families = []string{"l2vpn-evpn"} }},
		{"peers[0].families[1]", func(c *Config) { c.Peers[0].Families = []string{IPv4Unicast, IPv4Unicast} }},
		{"peers[0].bfd.enabled", func(c *Config) { c.Peers[0].Multihop = 2; c.Peers[0].BFD.Enabled = true }},
		{"peers[0].bfd.min_tx", func(c *Config) { c.Peers[0].BFD = BFDConfig{Enabled: true, MinTx: time.Millisecond} }},
		{"prefixes[0].prefix", func(c *Config) { c.Prefixes[0].Prefix = "203.0.113.10" }},
		{"prefixes[0].prefix", func(c *Config) { c.Prefixes[0].Prefix = "203.0.113.10/24" }},
		{"prefixes[1].prefix", func(c *Config) { c.Prefixes = append(c.Prefixes, c.Prefixes[0]) }},
		{"prefixes[0].next_hop", func(c *Config) { c.Prefixes[0].NextHop = "2001:db8::1" }},
		{"prefixes[0].prepend", func(c *Config) { c.Prefixes[0].Prepend = 9 }},
		{"prefixes[0].prepend", func(c *Config) { c.Peers[0].ASN = c.ASN; c.Prefixes[0].Prepend = 1 }},
	} {
		c := base()
		tc.mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("want an error on %s, got %v", tc.key, err)
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]Community{
		"65535:0": GracefulShutdown, "0:0": 0, "64512:7": 64512<<16 | 7, "graceful_shutdown": GracefulShutdown,
		"NO_EXPORT": NoExport, "no_advertise": NoAdvertise, "blackhole": Blackhole, "4294967041": NoExport, " 1:2 ": 1<<16 | 2,
	} {
		got, err := ParseCommunity(in)
		if err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "65536:0", "1:65536", "-1:0", "1:2:3", "4294967296", "gshut", "a:b"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", in)
		}
	}
	if s := GracefulShutdown.String(); s != "65535:0" {
		t.Errorf("String %q", s)
	}
	var cs []Community
	if err := yaml.Unmarshal([]byte(`["1:2", {a: b}]`), &cs); err == nil {
		t.Error("mapping accepted as a community")
	}
}

func TestAdvertisementHelpers(t *testing.T) {
	a := Advertisement{Prefix: pfxA, MED: 5, Communities: []Community{NoExport}}
	d := WithGracefulShutdown(a)
	if len(a.Communities) != 1 {
		t.Fatal("WithGracefulShutdown modified its argument")
	}
	if !slices.Equal(d[0].Communities, []Community{GracefulShutdown, NoExport}) || d[0].MED != 5 {
		t.Errorf("drained %v", d[0])
	}
	if a.Equal(d[0]) || !d[0].Equal(WithGracefulShutdown(d[0])[0]) {
		t.Error("Equal")
	}
	if s := d[0].String(); s != "203.0.113.10/32 med 5 communities 65535:0 65535:65281" {
		t.Errorf("String %q", s)
	}
}
