package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// GoBGP v3's server loop cannot be stopped (see GoBGP's doc comment);
// everything else must be gone after Close.
var gobgpLeaks = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/osrg/gobgp/v3/pkg/server.(*BgpServer).Serve"),
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, gobgpLeaks...) }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("BGP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freePort returns a TCP port that was free a moment ago on 127.0.0.1.
func freePort(t *testing.T) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// router is a GoBGP server standing in for the upstream router: it
// listens on 127.0.0.1 and accepts the speaker as a passive eBGP peer.
func startRouter(t *testing.T, port uint16) *server.BgpServer {
	r := server.NewBgpServer(server.LoggerOption(gobgpLogger{log: slog.New(slog.DiscardHandler)}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "10.255.0.1", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// routerPaths lists the router's received paths, one line each (see
// describePath), sorted.
func routerPaths(r *server.BgpServer) []string {
	var out []string
	for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
		r.ListPath(context.Background(), &api.ListPathRequest{
			TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST},
		}, func(d *api.Destination) {
			for _, p := range d.Paths {
				line, _ := describePath(p)
				out = append(out, line)
			}
		})
	}
	slices.Sort(out)
	return out
}

func poll(t *testing.T, what string, timeout time.Duration, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantPaths(r *server.BgpServer, want ...string) func() error {
	return func() error {
		if got := routerPaths(r); !slices.Equal(got, want) {
			return fmt.Errorf("router has\n%q\nwant\n%q", got, want)
		}
		return nil
	}
}

// The real speaker against a GoBGP router over loopback: connection
// errors are reported, the session comes up, Set announces, replaces
// attributes in place and withdraws, and Close takes the session down.
func TestGoBGPAgainstRouter(t *testing.T) {
	port := freePort(t)
	reg := prometheus.NewPedanticRegistry()
	var mu sync.Mutex
	var hooked []SessionState
	sp, err := New(Config{
		ASN: 65001, RouterID: "10.255.0.2",
		Peers: []PeerConfig{{Address: "127.0.0.1", ASN: 65000, Port: port, Families: []string{IPv4Unicast, IPv6Unicast}}},
	}, WithLogger(testLogger(t)), WithRegisterer(reg), WithPeerHook(func(p PeerStatus) {
		mu.Lock()
		hooked = append(hooked, p.State)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()

	// Nobody listens yet: the failure is reported.
	poll(t, "connect error reported", 10*time.Second, func() error {
		if p := sp.Peers(); len(p) != 1 || !strings.Contains(p[0].LastError, "connect") {
			return fmt.Errorf("peers %+v", p)
		}
		return nil
	})
	r := startRouter(t, port)
	defer r.Stop()
	took := poll(t, "established", 15*time.Second, func() error {
		if p := sp.Peers(); p[0].State != StateEstablished {
			return fmt.Errorf("state %v", p[0].State)
		}
		return nil
	})
	t.Logf("established %v after the router started", took)

	ctx := context.Background()
	a := Advertisement{Prefix: pfxA}
	b := Advertisement{Prefix: pfxB, Communities: []Community{NoExport}}
	v6 := Advertisement{Prefix: pfx6}
	if err := sp.Set(ctx, a, b, v6); err != nil {
		t.Fatal(err)
	}
	poll(t, "paths at the router", 5*time.Second, wantPaths(r,
		// IPv6 over an IPv4 session: GoBGP sends its IPv4 address as next hop.
		"2001:db8::10/128 aspath=65001 mpnh=127.0.0.1",
		"203.0.113.10/32 aspath=65001 nh=127.0.0.1",
		"203.0.113.64/26 aspath=65001 comm=65535:65281 nh=127.0.0.1",
	))
	// New attributes replace the path: still one path for the prefix.
	a2 := Advertisement{Prefix: pfxA, MED: 50, Communities: []Community{GracefulShutdown}, Prepend: 2}
	if err := sp.Set(ctx, a2, b); err != nil {
		t.Fatal(err)
	}
	poll(t, "replaced path", 5*time.Second, wantPaths(r,
		"203.0.113.10/32 aspath=65001 65001 65001 comm=65535:0 med=50 nh=127.0.0.1",
		"203.0.113.64/26 aspath=65001 comm=65535:65281 nh=127.0.0.1",
	))
	p := sp.Peers()[0]
	if p.PrefixesSent != 2 || p.Uptime <= 0 || p.ASN != 65000 || p.Address != netip.MustParseAddr("127.0.0.1") || p.BFDEnabled {
		t.Errorf("peer status %+v", p)
	}

	if got := testutil.ToFloat64(sp.m.sessionUp.WithLabelValues("127.0.0.1")); got != 1 {
		t.Errorf("session_up %v", got)
	}
	if got := testutil.ToFloat64(sp.m.announced); got != 2 {
		t.Errorf("announced_prefixes %v", got)
	}
	if got := testutil.ToFloat64(sp.m.advertInfo.WithLabelValues("203.0.113.10/32", "50", "65535:0", "2")); got != 1 {
		t.Errorf("advertisement_info %v", got)
	}
	if n := testutil.CollectAndCount(sp.m.advertInfo); n != 2 {
		t.Errorf("%d advertisement_info series, want 2", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", err, problems)
	}

	if err := sp.Set(ctx); err != nil {
		t.Fatal(err)
	}
	poll(t, "withdrawn", 5*time.Second, wantPaths(r))
	if err := sp.Set(ctx, a); err != nil {
		t.Fatal(err)
	}
	poll(t, "re-announced", 5*time.Second, wantPaths(r, "203.0.113.10/32 aspath=65001 nh=127.0.0.1"))

	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	poll(t, "router drops the path on close", 5*time.Second, wantPaths(r))
	if err := sp.Set(ctx, a); err == nil {
		t.Error("Set after Close")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(hooked, StateEstablished) {
		t.Errorf("hook saw %v", hooked)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := New(Config{ASN: 65001}); err == nil {
		t.Fatal("accepted a config without router_id")
	}
}
