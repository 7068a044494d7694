package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// minimal is the smallest valid config: everything else has a default.
const minimal = `
cluster:
  node_id: 1
  region: eu-west
  key: 0123456789abcdef
`

func TestParseMinimalFillsDefaults(t *testing.T) {
	cfg, err := Parse("edged.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "text"},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9090"},
		{"admin.token", cfg.Admin.Token, ""},
		{"cluster.node_id", cfg.Cluster.NodeID, uint32(1)},
		{"cluster.listen", cfg.Cluster.Listen, "127.0.0.1:5600"},
		{"cluster.advertise", cfg.Cluster.Advertise, "127.0.0.1:5600"},
		{"cluster.priority", cfg.Cluster.Priority, 100},
		{"cluster.profile", cfg.Cluster.Profile, "lan"},
		{"cluster.lan.ping_interval", cfg.Cluster.LAN.PingInterval, 100 * time.Millisecond},
		{"cluster.wan.dead_after", cfg.Cluster.WAN.DeadAfter, 5 * time.Second},
		{"cluster.seed_sync_delay", cfg.Cluster.SeedSyncDelay, 3 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if lvl := cfg.Log.SlogLevel(); lvl.String() != "INFO" {
		t.Errorf("SlogLevel = %v, want INFO", lvl)
	}
}

// TestDurationsFromStrings proves that yaml.v3 decodes "100ms" into the
// plain time.Duration fields of cluster.Config, so that package needs no
// custom unmarshalling.
func TestDurationsFromStrings(t *testing.T) {
	cfg, err := Parse("edged.yaml", []byte(minimal+`
  lan: {ping_interval: 50ms, dead_after: 250ms}
  wan:
    ping_interval: 1.5s
    dead_after: 1m
  seed_sync_delay: 2s
  sync_timeout: 1h30m
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	for _, d := range []struct {
		name      string
		got, want time.Duration
	}{
		{"lan.ping_interval", c.LAN.PingInterval, 50 * time.Millisecond},
		{"lan.dead_after", c.LAN.DeadAfter, 250 * time.Millisecond},
		{"wan.ping_interval", c.WAN.PingInterval, 1500 * time.Millisecond},
		{"wan.dead_after", c.WAN.DeadAfter, time.Minute},
		{"seed_sync_delay", c.SeedSyncDelay, 2 * time.Second},
		{"sync_timeout", c.SyncTimeout, 90 * time.Minute},
	} {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.name, d.got, d.want)
		}
	}

	// And the same directly against yaml.v3, without our shape check, to
	// pin the library behaviour we rely on: strings parse, bare integers
	// are refused rather than read as nanoseconds.
	var v struct {
		D time.Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 100ms"), &v); err != nil || v.D != 100*time.Millisecond {
		t.Errorf("yaml.v3 d: 100ms = %v, %v", v.D, err)
	}
	if err := yaml.Unmarshal([]byte("d: 100"), &v); err == nil {
		t.Errorf("yaml.v3 accepted a bare integer duration")
	}
}

func TestParseFullConfig(t *testing.T) {
	cfg, err := Parse("edged.yaml", []byte(`
log: {level: debug, format: json}
admin:
  listen: 0.0.0.0:9090
  token: s3cret
cluster:
  node_id: 4294967295
  region: us-east
  listen: 10.0.0.1:5600
  advertise: 198.18.0.1:5600
  priority: 200
  seed: true
  join: [10.0.0.2:5600, "[2001:db8::2]:5600"]
  key: 0123456789abcdef0123
  profile: wan
  tags:
    - name: vip-a
      region: us-east
    - name: vip-b
      nodes: [1, 2]
      priorities: {1: 10, 2: 20}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.SlogLevel().String() != "DEBUG" || cfg.Log.Format != "json" {
		t.Errorf("log = %+v", cfg.Log)
	}
	if cfg.Admin.Token != "s3cret" {
		t.Errorf("admin.token = %q", cfg.Admin.Token)
	}
	c := cfg.Cluster
	if c.NodeID != 4294967295 || !c.Seed || len(c.Join) != 2 || c.Profile != "wan" {
		t.Errorf("cluster = %+v", c)
	}
	if len(c.Tags) != 2 || c.Tags[1].Priorities[2] != 20 || c.Tags[1].Nodes[1] != 2 {
		t.Errorf("cluster.tags = %+v", c.Tags)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole error message
	}{
		// Required fields.
		{"empty file", ``,
			`edged.yaml: cluster.node_id: required, must be 1..4294967295`},
		{"node_id missing", "cluster:\n  region: r\n  key: 0123456789abcdef\n",
			`edged.yaml: cluster.node_id: required, must be 1..4294967295`},
		{"node_id zero", "cluster:\n  node_id: 0\n  region: r\n  key: 0123456789abcdef\n",
			`edged.yaml:2: cluster.node_id: required, must be 1..4294967295`},
		{"region missing", "cluster:\n  node_id: 1\n  key: 0123456789abcdef\n",
			`edged.yaml: cluster.region: required`},
		{"key missing", "cluster:\n  node_id: 1\n  region: r\n",
			`edged.yaml: cluster.key: required, at least 16 bytes`},
		{"key short", "cluster:\n  node_id: 1\n  region: r\n  key: short\n",
			`edged.yaml:4: cluster.key: required, at least 16 bytes`},
		{"tag name missing", minimal + "  tags:\n    - name: a\n      region: r\n    - region: r\n",
			`edged.yaml: cluster.tags[1].name: required`},
		{"tag without members", minimal + "  tags:\n    - name: a\n",
			`edged.yaml:7: cluster.tags[0]: needs a region or a node list`},
		{"admin token required off loopback", "admin: {listen: ':9090'}\n" + minimal,
			`edged.yaml: admin.token: required when admin.listen (:9090) is not a loopback address: set token or token_file`},
		{"admin token and token_file", "admin: {token: a, token_file: /x}\n" + minimal,
			`edged.yaml:1: admin.token_file: set token or token_file, not both`},

		// Unknown and misspelt keys, at every depth.
		{"unknown top-level section", "sipp: {}\n" + minimal,
			`edged.yaml:1: sipp: unknown key (did you mean sip?)`},
		{"sip section validated", "sip: {}\n" + minimal,
			`edged.yaml: sip.listeners: at least one listener is required`},
		{"geo needs sip", "geo: {}\n" + minimal,
			`edged.yaml:1: geo: needs the sip section: it is where SIP bindings live`},
		{"geo needs the region's HA tag", "geo: {}\nsip: {listeners: [{transport: udp, addr: \"127.0.0.1:5060\"}]}\n" + minimal,
			`edged.yaml: cluster.tags: missing geo's HA tag of this region: {name: home-eu-west, region: eu-west} (geo.tag_prefix + region)`},
		{"misspelt key", "cluster:\n  nodeid: 1\n",
			`edged.yaml:2: cluster.nodeid: unknown key (did you mean node_id?)`},
		{"misspelt nested key", minimal + "  lan:\n    ping_intervall: 1s\n",
			`edged.yaml:7: cluster.lan.ping_intervall: unknown key (did you mean ping_interval?)`},
		{"unknown key in list item", minimal + "  tags:\n    - name: a\n      regoin: r\n",
			`edged.yaml:8: cluster.tags[0].regoin: unknown key (did you mean region?)`},

		// Bad types.
		{"string for uint32", "cluster:\n  node_id: one\n",
			`edged.yaml:2: cluster.node_id: want an integer 0..4294967295, got "one"`},
		{"negative node_id", "cluster:\n  node_id: -1\n",
			`edged.yaml:2: cluster.node_id: want an integer 0..4294967295, got "-1"`},
		{"node_id too big", "cluster:\n  node_id: 4294967296\n",
			`edged.yaml:2: cluster.node_id: want an integer 0..4294967295, got "4294967296"`},
		{"bool", minimal + "  seed: maybe\n",
			`edged.yaml:6: cluster.seed: want true or false, got "maybe"`},
		{"list for string", minimal + "  sip_addr: [a]\n",
			`edged.yaml:6: cluster.sip_addr: want a string, got a list`},
		{"scalar for list", minimal + "  join: 10.0.0.1:5600\n",
			`edged.yaml:6: cluster.join: want a list, got "10.0.0.1:5600"`},
		{"scalar for section", "log: loud\n" + minimal,
			`edged.yaml:1: log: want a mapping of keys, got "loud"`},
		{"bad map key", minimal + "  tags:\n    - name: a\n      nodes: [1]\n      priorities: {x: 1}\n",
			`edged.yaml:9: cluster.tags[0].priorities[x]: want an integer 0..4294967295, got "x"`},

		// Bad durations.
		{"duration without unit", minimal + "  seed_sync_delay: 100\n",
			`edged.yaml:6: cluster.seed_sync_delay: want a duration such as "100ms" or "5s", got "100"`},
		{"duration bad unit", minimal + "  lan: {ping_interval: 100 ms}\n",
			`edged.yaml:6: cluster.lan.ping_interval: want a duration such as "100ms" or "5s", got "100 ms"`},
		{"negative duration", minimal + "  sync_timeout: -5s\n",
			`edged.yaml:6: cluster.sync_timeout: must not be negative, got "-5s"`},
		{"dead_after too short", minimal + "  lan: {ping_interval: 1s, dead_after: 1s}\n",
			`edged.yaml:6: cluster.lan.dead_after: must be at least twice ping_interval`},

		// Bad values of our own sections.
		{"log level", "log: {level: verbose}\n" + minimal,
			`edged.yaml:1: log.level: must be debug, info, warn or error, not "verbose"`},
		{"log format", "log: {format: xml}\n" + minimal,
			`edged.yaml:1: log.format: must be text or json, not "xml"`},
		{"admin listen", "admin: {listen: nowhere}\n" + minimal,
			`edged.yaml:1: admin.listen: not host:port: address nowhere: missing port in address`},

		// Not YAML at all.
		{"syntax error", "cluster:\n  node_id: 1\n region: x\n",
			`edged.yaml:2: did not find expected key`},
		{"two documents", minimal + "---\nlog: {}\n",
			`edged.yaml:6: more than one YAML document`},
		{"duplicate key", "cluster: {}\ncluster: {}\n",
			`edged.yaml:2: mapping key "cluster" already defined at line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("edged.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error is %T, want *config.Error", err)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("edged.yaml", []byte("admin: {listen: '[::]:9090', token_file: "+path+"}\n"+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token != "from-file" {
		t.Errorf("token = %q, want from-file", cfg.Admin.Token)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Parse("edged.yaml", []byte("admin: {token_file: "+empty+"}\n"+minimal))
	if err == nil || !strings.Contains(err.Error(), "admin.token_file: "+empty+" is empty") {
		t.Errorf("empty token file: err = %v", err)
	}
}

func TestLoopbackNeedsNoToken(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"} {
		if _, err := Parse("edged.yaml", []byte("admin: {listen: '"+listen+"'}\n"+minimal)); err != nil {
			t.Errorf("listen %s: %v", listen, err)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edged.yaml")
	if err := os.WriteFile(path, []byte("cluster: {node_id: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ": cluster.region: required"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want not exist", err)
	}
}

// withSIP is minimal plus the smallest sip section, which cps needs.
const withSIP = minimal + `
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:5060"}]
`

func TestParseCPSAndBGP(t *testing.T) {
	cfg, err := Parse("edged.yaml", []byte(withSIP+`
cps:
  partition_policy: full
  limits:
    - name: platform
      rate: 200
    - name: per-ip
      rate: 5
      selector: source_ip
      response: {code: 486}
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers:
    - address: 198.18.0.254
      asn: 65000
      bfd: {enabled: true}
  prefixes:
    - prefix: 203.0.113.10/32
      communities: ["65000:100", no_export]
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.CPS
	if c == nil || len(c.Limits) != 2 || c.PartitionPolicy != "full" {
		t.Fatalf("cps = %+v", c)
	}
	// Defaults come from cps.Config.Validate.
	if c.Slot != 100*time.Millisecond || c.Limits[0].Window != time.Second ||
		c.Limits[0].Response.Code != 503 || c.Limits[0].Response.RetryAfter != time.Second ||
		c.Limits[1].Selector != "source_ip" || c.Limits[1].Response.RetryAfter != 0 {
		t.Errorf("cps defaults not filled: %+v", c)
	}
	b := cfg.BGP
	if b == nil || b.ASN != 65001 || len(b.Peers) != 1 || len(b.Prefixes) != 1 {
		t.Fatalf("bgp = %+v", b)
	}
	// Defaults come from bgp.Config.Validate.
	if p := b.Peers[0]; p.Port != 179 || p.HoldTime != 9*time.Second || p.BFD.Multiplier != 3 {
		t.Errorf("bgp peer defaults not filled: %+v", p)
	}
	advs := b.Advertisements()
	if len(advs) != 1 || advs[0].String() != "203.0.113.10/32 communities 65000:100 65535:65281" {
		t.Errorf("advertisements = %v", advs)
	}

	// Both sections are optional.
	cfg, err = Parse("edged.yaml", []byte(withSIP))
	if err != nil || cfg.CPS != nil || cfg.BGP != nil {
		t.Errorf("without cps and bgp: cps %v, bgp %v, err %v", cfg.CPS, cfg.BGP, err)
	}
}

// TestParseCPSAndBGPErrors checks that the cps and bgp sections' own
// validation errors come out under the section's key, with the line.
func TestParseCPSAndBGPErrors(t *testing.T) {
	const bgpHead = "bgp:\n  asn: 65001\n  router_id: 198.18.0.1\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"cps without sip", minimal + "cps: {}\n",
			`edged.yaml:6: cps: needs the sip section: the limits apply to new SIP calls`},
		{"cps limit without name", withSIP + "cps:\n  limits:\n    - rate: 10\n",
			`edged.yaml: cps.limits[0].name: required`},
		{"cps rate", withSIP + "cps:\n  limits:\n    - name: a\n      rate: 0\n",
			`edged.yaml:12: cps.limits[0].rate: required, calls per second in (0, 1e9], not 0`},
		{"cps duplicate name", withSIP + "cps:\n  limits:\n    - {name: a, rate: 1}\n    - {name: a, rate: 2}\n",
			`edged.yaml:12: cps.limits[1].name: "a" already used by limits[0]`},
		{"cps response code", withSIP + "cps:\n  limits:\n    - name: a\n      rate: 1\n      response: {code: 500}\n",
			`edged.yaml:13: cps.limits[0].response.code: must be 503, 486 or 480, not 500`},
		{"cps slot", withSIP + "cps:\n  slot: 5ms\n",
			`edged.yaml:10: cps.slot: must be 10ms..1s, not 5ms`},
		{"cps selector", withSIP + "cps:\n  limits:\n    - {name: a, rate: 1, selector: to_domain}\n",
			`edged.yaml:11: cps.limits[0].selector: must be global, source_ip, from_domain or auth_user, not "to_domain"`},
		{"cps misspelt key", withSIP + "cps:\n  limts: []\n",
			`edged.yaml:10: cps.limts: unknown key (did you mean limits?)`},
		{"cps window type", withSIP + "cps:\n  limits:\n    - {name: a, rate: 1, window: 10}\n",
			`edged.yaml:11: cps.limits[0].window: want a duration such as "100ms" or "5s", got "10"`},

		{"bgp asn missing", minimal + "bgp:\n  router_id: 198.18.0.1\n",
			`edged.yaml: bgp.asn: required, 1..4294967295 and not 23456 (AS_TRANS)`},
		{"bgp router_id", minimal + "bgp:\n  asn: 65001\n  router_id: ::1\n",
			`edged.yaml:8: bgp.router_id: not an IPv4 address: "::1"`},
		{"bgp peer address", minimal + bgpHead + "  peers:\n    - {address: router, asn: 65000}\n",
			`edged.yaml:10: bgp.peers[0].address: required, an IP address: "router"`},
		{"bgp hold time", minimal + bgpHead + "  peers:\n    - address: 198.18.0.254\n      asn: 65000\n      hold_time: 1500ms\n",
			`edged.yaml:12: bgp.peers[0].hold_time: must be whole seconds, 3s..18h12m15s, got 1.5s`},
		{"bgp prefix host bits", minimal + bgpHead + "  prefixes:\n    - prefix: 203.0.113.10/24\n",
			`edged.yaml:10: bgp.prefixes[0].prefix: 203.0.113.10/24 has host bits set (did you mean 203.0.113.0/24?)`},
		{"bgp bad community", minimal + bgpHead + "  prefixes:\n    - {prefix: 203.0.113.10/32, communities: [\"65536:1\"]}\n",
			`edged.yaml:10: bgp.prefixes[0].communities[0]: community "65536:1": want AS:value, each 0..65535`},
		{"bgp misspelt key", minimal + bgpHead + "  peer: []\n",
			`edged.yaml:9: bgp.peer: unknown key (did you mean peers?)`},
		{"bgp port range", minimal + bgpHead + "  peers:\n    - {address: 198.18.0.254, asn: 65000, port: 70000}\n",
			`edged.yaml:10: bgp.peers[0].port: want an integer 0..65535, got "70000"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("edged.yaml", []byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
}
