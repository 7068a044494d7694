package config

import (
	"slices"
	"strings"
	"testing"
)

const diffBase = `
cluster: {node_id: 1, region: eu, key: 0123456789abcdef, seed: true}
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:5060"}]
cps:
  limits: [{name: a, rate: 10}]
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 198.18.0.254, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32, communities: ["65000:1"]}]
`

func TestDiffAndReloadable(t *testing.T) {
	base, err := Parse("a.yaml", []byte(diffBase))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		old, new string
		keys     []string
		reload   bool
	}{
		{"rate: 10", "rate: 20", []string{"cps.limits[0].rate"}, true},
		{`"65000:1"`, `"65000:2"`, []string{"bgp.prefixes[0].communities[0]"}, true},
		{"peers: [{address: 198.18.0.254, asn: 65000}]", "peers: []", []string{"bgp.peers"}, true},
		{"node_id: 1", "node_id: 2", []string{"cluster.node_id"}, false},
		{"router_id: 198.18.0.1", "router_id: 198.18.0.2", []string{"bgp.router_id"}, false},
		{"cps:\n  limits: [{name: a, rate: 10}]\n", "", []string{"cps"}, false},
		{"5060", "5061", []string{"sip.listeners[0].addr"}, false},
		{"cluster:", "log: {level: debug}\ncluster:", []string{"log.level"}, true},
		{"cluster:", "log: {format: json}\ncluster:", []string{"log.format"}, false},
	}
	for _, c := range cases {
		cfg, err := Parse("b.yaml", []byte(strings.Replace(diffBase, c.old, c.new, 1)))
		if err != nil {
			t.Fatalf("%q→%q: %v", c.old, c.new, err)
		}
		got := Diff(base, cfg)
		if !slices.Equal(got, c.keys) {
			t.Errorf("%q→%q: diff %q, want %q", c.old, c.new, got, c.keys)
			continue
		}
		for _, k := range got {
			if Reloadable(k) != c.reload {
				t.Errorf("Reloadable(%q) = %v", k, !c.reload)
			}
		}
	}
	if d := Diff(base, base); len(d) != 0 {
		t.Errorf("a config differs from itself: %q", d)
	}
	if Reloadable("announcement") || !Reloadable("announce.regions[0].med") || Reloadable("bgp.peersx") {
		t.Error("Reloadable matches by key boundaries")
	}
}
