package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/vip"
)

const withBGP = minimal + `  tags: [{name: vip-a, region: eu-west}]
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 198.18.0.254, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32}]
`

func TestParseAnnounceAndVIPs(t *testing.T) {
	cfg, err := Parse("edged.yaml", []byte(withBGP+`announce:
  hold_down: 5s
  required_caps: [cps]
  regions: [{region: eu-west, med: 50, prepend: 1}]
  drain: {prepend: 2, quiet: 1s}
vips:
  - {tag: vip-a, address: 203.0.113.21/32, interface: eth0}
  - {tag: vip-a, address: 203.0.113.31/32, mode: l3}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Announce
	if a.HoldDown != 5*time.Second || a.PollInterval != 100*time.Millisecond || a.Drain.Quiet != time.Second ||
		a.Drain.ShiftTimeout != 30*time.Second || a.Regions[0].MED != 50 {
		t.Errorf("announce %+v", a)
	}
	if cfg.VIPs[0].Mode != vip.ModeL2 || cfg.VIPs[1].Interface != "lo" {
		t.Errorf("vips %+v", cfg.VIPs)
	}

	// Without the section: the defaults.
	cfg, err = Parse("edged.yaml", []byte(minimal))
	if err != nil || cfg.Announce.HoldDown != 3*time.Second {
		t.Errorf("defaults: %v %+v", err, cfg.Announce)
	}
}

func TestParseAnnounceAndVIPErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", withBGP + "announce: {hold_dwn: 1s}\n", "edged.yaml:12: announce.hold_dwn: unknown key (did you mean hold_down?)"},
		{"policy for another prefix", withBGP + "announce: {regions: [{region: x, prefixes: [203.0.113.99/32]}]}\n",
			"edged.yaml:12: announce.regions[0].prefixes[0]: 203.0.113.99/32 is not one of the bgp prefixes"},
		{"prepend with ibgp", strings.Replace(withBGP, "asn: 65000", "asn: 65001", 1) + "announce: {drain: {prepend: 1}}\n",
			"a region policy or drain.prepend prepends, but peer 198.18.0.254 is iBGP"},
		{"unknown tag", withBGP + "vips: [{tag: nope, address: 203.0.113.21/32, interface: eth0}]\n",
			"vips[0].tag: \"nope\" is not one of cluster.tags"},
		{"l3 without bgp", minimal + "  tags: [{name: t, region: eu-west}]\nvips: [{tag: t, address: 203.0.113.31/32, mode: l3}]\n",
			"vips[0].mode: l3 VIPs are announced over BGP: they need the bgp section"},
	}
	for _, tc := range cases {
		_, err := Parse("edged.yaml", []byte(tc.yaml))
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
