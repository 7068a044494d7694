package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startRouterAt is startRouter on another loopback address, so that one
// speaker can peer with several routers (peers are keyed by address).
func startRouterAt(t *testing.T, addr string, port uint16) *server.BgpServer {
	r := server.NewBgpServer(server.LoggerOption(gobgpLogger{log: slog.New(slog.DiscardHandler)}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "10.255.0.1", ListenPort: int32(port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// routerSession returns the router's session with the speaker: whether it
// is established and since when (the start of the current session).
func routerSession(r *server.BgpServer) (bool, time.Time) {
	var up bool
	var since time.Time
	r.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED {
			up = true
			if p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
				since = p.Timers.State.Uptime.AsTime()
			}
		}
	})
	return up, since
}

func waitSession(t *testing.T, what string, r *server.BgpServer) time.Time {
	t.Helper()
	var since time.Time
	poll(t, what, 20*time.Second, func() error {
		var up bool
		if up, since = routerSession(r); !up {
			return fmt.Errorf("not established")
		}
		return nil
	})
	return since
}

// UpdatePeers adds a router (which gets the announced paths), removes one
// (its session ends and its paths go) and never resets the session of a
// router whose settings did not change.
func TestUpdatePeersKeepsUnchangedSessions(t *testing.T) {
	portA, portB := freePort(t), freePort(t)
	ra := startRouterAt(t, "127.0.0.1", portA)
	defer ra.Stop()
	rb := startRouterAt(t, "127.0.0.2", portB)
	defer rb.Stop()
	peerA := PeerConfig{Address: "127.0.0.1", ASN: 65000, Port: portA}
	peerB := PeerConfig{Address: "127.0.0.2", ASN: 65000, Port: portB}
	reg := prometheus.NewPedanticRegistry()
	sp, err := New(Config{ASN: 65001, RouterID: "10.255.0.2", Peers: []PeerConfig{peerA}},
		WithLogger(testLogger(t)), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ctx := context.Background()
	if err := sp.Set(ctx, Advertisement{Prefix: pfxA}); err != nil {
		t.Fatal(err)
	}
	sinceA := waitSession(t, "router A established", ra)
	poll(t, "path at A", 10*time.Second, wantPaths(ra, "203.0.113.10/32 aspath=65001 nh=127.0.0.1"))

	// Unchanged list: nothing to do.
	if ch, err := sp.UpdatePeers(ctx, []PeerConfig{peerA}); err != nil || !ch.Empty() {
		t.Fatalf("same peers: %+v %v", ch, err)
	}
	// Add B.
	ch, err := sp.UpdatePeers(ctx, []PeerConfig{peerA, peerB})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Added, []string{"127.0.0.2"}) || len(ch.Removed)+len(ch.Replaced) != 0 {
		t.Fatalf("changes %+v", ch)
	}
	sinceB := waitSession(t, "router B established", rb)
	poll(t, "path at B", 10*time.Second, wantPaths(rb, "203.0.113.10/32 aspath=65001 nh=127.0.0.1"))
	if up, s := routerSession(ra); !up || !s.Equal(sinceA) {
		t.Fatalf("router A's session was reset by adding B: up %v since %v, was %v", up, s, sinceA)
	}
	if got := testutil.ToFloat64(sp.m.sessionUp.WithLabelValues("127.0.0.2")); got != 1 {
		t.Errorf("session_up{peer=127.0.0.2} = %v", got)
	}

	// Remove A: its session ends and the path goes; B's stays.
	ch, err = sp.UpdatePeers(ctx, []PeerConfig{peerB})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Removed, []string{"127.0.0.1"}) || len(ch.Added)+len(ch.Replaced) != 0 {
		t.Fatalf("changes %+v", ch)
	}
	poll(t, "A's path gone", 10*time.Second, wantPaths(ra))
	if up, s := routerSession(rb); !up || !s.Equal(sinceB) {
		t.Fatalf("router B's session was reset by removing A: up %v since %v, was %v", up, s, sinceB)
	}
	if p := sp.Peers(); len(p) != 1 || p[0].Address.String() != "127.0.0.2" {
		t.Fatalf("peers %+v", p)
	}
	if n := testutil.CollectAndCount(sp.m.sessionUp); n != 1 {
		t.Errorf("%d session_up series after removing A, want 1", n)
	}

	// A changed setting replaces only that peer.
	peerB2 := peerB
	peerB2.HoldTime = 30 * time.Second
	if ch, err = sp.UpdatePeers(ctx, []PeerConfig{peerB2}); err != nil || !slices.Equal(ch.Replaced, []string{"127.0.0.2"}) {
		t.Fatalf("changed hold time: %+v %v", ch, err)
	}
	waitSession(t, "router B re-established", rb)

	// A bad list changes nothing.
	if _, err := sp.UpdatePeers(ctx, []PeerConfig{peerB2, {Address: "bogus", ASN: 1}}); err == nil {
		t.Fatal("accepted a bad peer address")
	}
	if p := sp.Peers(); len(p) != 1 {
		t.Fatalf("peers after a refused update %+v", p)
	}
}

func TestDiffPeers(t *testing.T) {
	a := PeerConfig{Address: "192.0.2.1", ASN: 1}
	b := PeerConfig{Address: "192.0.2.2", ASN: 1}
	b2 := PeerConfig{Address: "192.0.2.2", ASN: 2}
	c := PeerConfig{Address: "192.0.2.10", ASN: 1}
	ch := DiffPeers([]PeerConfig{a, b}, []PeerConfig{c, b2})
	if !slices.Equal(ch.Added, []string{"192.0.2.10"}) || !slices.Equal(ch.Removed, []string{"192.0.2.1"}) ||
		!slices.Equal(ch.Replaced, []string{"192.0.2.2"}) {
		t.Fatalf("%+v", ch)
	}
	if !DiffPeers([]PeerConfig{a}, []PeerConfig{a}).Empty() {
		t.Fatal("same list differs")
	}
}
