package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/anyedge/anyedge/bfd"
	"github.com/anyedge/anyedge/bgp"
)

func TestBGPRoutesView(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.254"), netip.MustParseAddr("2001:db8::fe")
	down := netip.MustParseAddr("198.18.0.253")
	sp := bgp.NewFake( // sorted by address, as Speaker.Peers promises
		bgp.PeerStatus{Address: down, ASN: 65000, State: bgp.StateActive, LastError: "connect: connection refused"},
		bgp.PeerStatus{Address: v4, ASN: 65000, State: bgp.StateEstablished, Uptime: time.Minute, PrefixesSent: 2,
			BFDEnabled: true, BFD: bfd.Up},
		bgp.PeerStatus{Address: v6, ASN: 65000, State: bgp.StateEstablished},
	)
	cfg := bgp.Config{Peers: []bgp.PeerConfig{
		{Address: v4.String(), Families: []string{bgp.IPv4Unicast}},
		// An IPv6 session that carries both families.
		{Address: v6.String(), Families: []string{bgp.IPv6Unicast, bgp.IPv4Unicast}},
		{Address: down.String(), Families: []string{bgp.IPv4Unicast}},
	}}
	api := bgpAPI{sp, func() []bgp.PeerConfig { return cfg.Peers }}
	if r := api.Routes(); len(r) != 0 {
		t.Errorf("routes before any Set = %+v", r)
	}
	err := sp.Set(context.Background(),
		bgp.Advertisement{Prefix: netip.MustParsePrefix("203.0.113.10/32"), MED: 10,
			Communities: []bgp.Community{bgp.MustParseCommunity("65000:100")}},
		bgp.Advertisement{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), NextHop: netip.MustParseAddr("2001:db8::1")},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%+v", api.Routes())
	want := "[{Prefix:203.0.113.10/32 NextHop: MED:10 LocalPref:0 Communities:[65000:100] Prepend:0 Peers:[198.18.0.254 2001:db8::fe]} " +
		"{Prefix:2001:db8:1::/48 NextHop:2001:db8::1 MED:0 LocalPref:0 Communities:[] Prepend:0 Peers:[2001:db8::fe]}]"
	if got != want {
		t.Errorf("routes\n got %s\nwant %s", got, want)
	}
	peers := api.Peers()
	if len(peers) != 3 || peers[0].Address != "198.18.0.253" || peers[0].State != "active" ||
		peers[0].LastError != "connect: connection refused" || peers[0].BFD != "" ||
		peers[1].State != "established" || peers[1].BFD != "up" || peers[1].Uptime != time.Minute {
		t.Errorf("peers = %+v", peers)
	}
}
