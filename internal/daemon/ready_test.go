package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anyedge/anyedge/bfd"
	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/cluster"
)

func TestReadyGate(t *testing.T) {
	synced := []cluster.CapView{{Name: "cps", State: "synced"}, {Name: "location", State: "synced"}}
	tests := []struct {
		name     string
		stopping bool
		drained  bool
		sip      *bool // nil: no SIP
		caps     []cluster.CapView
		want     []string // reasons; none means ready
	}{
		{name: "ready", sip: ptr(true), caps: synced},
		{name: "ready without SIP or capabilities"},
		{name: "sip down", sip: ptr(false), caps: synced, want: []string{"sip: listeners not up"}},
		{name: "drained", drained: true, sip: ptr(true), want: []string{"drained"}},
		{name: "not synced", sip: ptr(true),
			caps: []cluster.CapView{{Name: "cps", State: "syncing"}, {Name: "location", State: "synced"}, {Name: "geo", State: "not-synced"}},
			want: []string{"cluster: capability cps is syncing", "cluster: capability geo is not-synced"}},
		{name: "everything at once", stopping: true, drained: true, sip: ptr(false),
			caps: []cluster.CapView{{Name: "cps", State: "pending"}},
			want: []string{"shutting down", "drained", "sip: listeners not up", "cluster: capability cps is pending"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := readyGate{
				stopping: func() bool { return tt.stopping },
				drained:  func() bool { return tt.drained },
				caps:     func() []cluster.CapView { return tt.caps },
			}
			if tt.sip != nil {
				g.sipReady = func() bool { return *tt.sip }
			}
			r := g.check()
			if r.Ready != (len(tt.want) == 0) || !slices.Equal(r.Reasons, tt.want) {
				t.Errorf("check = %+v, want reasons %q", r, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

var testAdvs = []bgp.Advertisement{{Prefix: netip.MustParsePrefix("203.0.113.10/32")}}

// TestAnnouncerFollowsReadiness runs the announcer on synctest's clock:
// it withdraws while not ready, announces within one poll of becoming
// ready, calls Set only on changes, and retries a failed Set.
func TestAnnouncerFollowsReadiness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := bgp.NewFake()
		var ready atomic.Bool
		var logs syncBuffer
		a := &announcer{sp: sp, advs: testAdvs, every: readyPoll, log: slog.New(slog.NewTextHandler(&logs, nil)),
			ready: func() Readiness {
				if ready.Load() {
					return Readiness{Ready: true}
				}
				return Readiness{Reasons: []string{"drained"}}
			}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); a.run(ctx) }()

		sizes := func() string {
			var s []string
			for _, set := range sp.Sets() {
				s = append(s, fmt.Sprint(len(set)))
			}
			return strings.Join(s, " ")
		}
		synctest.Wait()
		if got := sizes(); got != "0" {
			t.Fatalf("at start Sets = %q, want one withdrawal", got)
		}
		time.Sleep(time.Second)
		if got := sizes(); got != "0" {
			t.Errorf("unchanged readiness called Set again: %q", got)
		}

		ready.Store(true)
		time.Sleep(readyPoll)
		synctest.Wait()
		if got := sizes(); got != "0 1" {
			t.Errorf("one poll after ready, Sets = %q, want an announcement", got)
		}

		sp.FailNext(errors.New("router said no"))
		ready.Store(false)
		time.Sleep(readyPoll)
		synctest.Wait()
		if len(sp.Announced()) != 1 {
			t.Errorf("the failed withdrawal changed the announced set")
		}
		time.Sleep(readyPoll)
		synctest.Wait()
		if got := sizes(); got != "0 1 0" || len(sp.Announced()) != 0 {
			t.Errorf("after a failed Set and one more poll, Sets = %q, want the withdrawal retried", got)
		}
		if !strings.Contains(logs.String(), "could not update the announcements; retrying") {
			t.Errorf("failure not logged:\n%s", logs.String())
		}

		cancel()
		<-done
		if err := a.withdraw(); err != nil || len(sp.Announced()) != 0 {
			t.Errorf("withdraw = %v, announced %v", err, sp.Announced())
		}
	})
}

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
	api := bgpAPI{sp, cfg}
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
