package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/internal/admin"
	"github.com/anyedge/anyedge/internal/config"
)

// realConfig runs a real cluster node (a seed, alone) with the SIP edge
// and a CPS limit of one call per 10 s, everything on loopback port 0.
const realConfig = `
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 1
  region: test
  key: 0123456789abcdef
  listen: 127.0.0.1:0
  seed: true
  seed_sync_delay: 100ms
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
  domains: [example.com]
cps:
  limits:
    - {name: platform, rate: 0.1, window: 10s}
`

// startRealNode runs a daemon built from yaml with the real cluster node
// (no fakes), its admin API on a free loopback port; stop it with f.stop.
func startRealNode(t *testing.T, yaml string) (*Daemon, *modulesFixture) {
	t.Helper()
	cfg, err := config.Parse("edged.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	sigs := make(chan os.Signal)
	d, err := New(cfg, WithLogOutput(logs), WithSignals(sigs))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	f := &modulesFixture{d: d, base: "http://" + addr.String(), logs: logs, sigs: sigs, done: make(chan error, 1),
		http: newHTTPClient()}
	go func() { f.done <- d.Run(context.Background()) }()
	return d, f
}

// TestRealNodeWithSIPAndCPS wires the real cluster node (cluster.New, not
// a fake): the CPS capability syncs on the seed, /readyz turns ready,
// /v1/cps lists the limit, and the limit answers the second INVITE over
// UDP with 503 and Retry-After.
func TestRealNodeWithSIPAndCPS(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, f := startRealNode(t, realConfig)
	defer f.stop(t)

	eventually(t, "ready", func() bool { return f.readyz(t).Ready })
	var limits []admin.CPSLimit
	if code := f.call(t, "GET", "/v1/cps", &limits); code != 200 || len(limits) != 1 ||
		limits[0].Name != "platform" || limits[0].Limit != 0.1 || limits[0].Window != 10*time.Second {
		t.Fatalf("/v1/cps = %d %+v", code, limits)
	}

	sipAddr := d.sip.Addr("udp")
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// No binding for bob: a call that passes the limit is a 404; the
	// next one within the window is refused by the limit.
	if got := sendInvite(t, conn, sipAddr.String(), 1); !strings.HasPrefix(got, "SIP/2.0 404") {
		t.Fatalf("first INVITE: %q, want 404 (passed the limit, no such user)", got)
	}
	got := sendInvite(t, conn, sipAddr.String(), 2)
	if !strings.HasPrefix(got, "SIP/2.0 503 Service Unavailable\r\n") || !strings.Contains(got, "\r\nRetry-After: 1\r\n") {
		t.Fatalf("second INVITE: %q, want 503 with Retry-After: 1", got)
	}
	if f.call(t, "GET", "/v1/cps", &limits); limits[0].Rejected != 1 {
		t.Errorf("rejected = %d, want 1", limits[0].Rejected)
	}
}

func newHTTPClient() *http.Client { return &http.Client{Transport: &http.Transport{}} }

// sendInvite sends INVITE number n from conn and returns its final
// response.
func sendInvite(t *testing.T, conn *net.UDPConn, to string, n int) string {
	t.Helper()
	local := conn.LocalAddr().String()
	msg := strings.Join([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-cps-%d;rport", local, n),
		"From: <sip:alice@example.com>;tag=a" + fmt.Sprint(n),
		"To: <sip:bob@example.com>",
		fmt.Sprintf("Call-ID: cps-%d@test", n),
		"CSeq: 1 INVITE",
		"Contact: <sip:alice@" + local + ">",
		"Max-Forwards: 70",
		"Content-Length: 0",
		"", "",
	}, "\r\n")
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP([]byte(msg), raddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = conn.SetReadDeadline(deadline)
		k, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("INVITE %d: no final response: %v", n, err)
		}
		res := string(buf[:k])
		// Skip 100 Trying, and retransmissions of the previous call's
		// final response (we send no ACK).
		if !strings.HasPrefix(res, "SIP/2.0 1") && strings.Contains(res, fmt.Sprintf("\r\nCall-ID: cps-%d@test\r\n", n)) {
			return res
		}
	}
}
