package daemon

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/location"
)

// BenchmarkMisdeliveredResponseCluster: two real cluster nodes on loopback,
// each with a SIP edge advertising the same address. The callee's 200 goes
// to the owner ("direct") or to the other node, which relays it over the
// cluster link ("relayed"); the two alternate so that both see the same
// load. Reported: medians from the callee's send to the caller's receive,
// and the median per-pair difference (the relay's cost).
func BenchmarkMisdeliveredResponseCluster(b *testing.B) {
	const key = "0123456789abcdef0123456789abcdef"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var srvs [3]*edge.Server
	var nodes [3]*cluster.Node
	seedAddr := freeAddr(b, "tcp")
	for id := uint32(1); id <= 2; id++ {
		cfg := cluster.Config{NodeID: id, Region: "r1", Key: key, Listen: freeAddr(b, "tcp"), SeedSyncDelay: 50 * time.Millisecond}
		if id == 1 {
			cfg.Listen, cfg.Seed = seedAddr, true
		} else {
			cfg.Join = []string{seedAddr}
		}
		n, err := cluster.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		relay, err := registerTxRelay(n, id, "", &srvs[id])
		if err != nil {
			b.Fatal(err)
		}
		sc := edge.Config{
			Listeners: []edge.Listener{{Transport: "udp", Addr: "127.0.0.1:0", Advertise: "203.0.113.10:5060"}},
			Domains:   []string{"example.com"},
		}
		sc.Keepalive.Enabled = new(bool)
		srv, err := edge.New(sc, location.NewMemory(), edge.WithNodeID(id), edge.WithHooks(edge.Hooks{TxRelay: relay}))
		if err != nil {
			b.Fatal(err)
		}
		srvs[id], nodes[id] = srv, n
		go func() { _ = n.Start(ctx) }()
		if err := srv.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		defer n.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for !(nodes[1].IsUp(2) && nodes[2].IsUp(1)) {
		if time.Now().After(deadline) {
			b.Fatal("the two nodes did not link")
		}
		time.Sleep(10 * time.Millisecond) // polling the cluster view, bounded
	}
	owner, other := srvs[1].Addr("udp").String(), srvs[2].Addr("udp").String()
	uac, callee := listenUDP(b), listenUDP(b)
	defer uac.Close()
	defer callee.Close()
	sendRecv(b, callee, owner, fmt.Sprintf("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP %[1]s;branch=z9hG4bK-r;rport\r\n"+
		"From: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: <sip:bob@%[1]s>\r\nExpires: 300\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", callee.LocalAddr()), "SIP/2.0 200")
	call := func(branch, to string) time.Duration {
		inv := fmt.Sprintf("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %[1]s;branch=%[2]s;rport\r\n"+
			"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: %[2]s\r\nCSeq: 1 INVITE\r\n"+
			"Contact: <sip:alice@%[1]s>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", uac.LocalAddr(), branch)
		send(b, uac, owner, inv)
		fwd := recvMsg(b, callee, "INVITE ").(*sip.Request)
		res := sip.NewResponseFromRequest(fwd, 200, "OK", nil)
		res.To().Params.Add("tag", "b")
		res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+callee.LocalAddr().String()+">"))
		t0 := time.Now()
		send(b, callee, to, res.String())
		recvMsg(b, uac, "SIP/2.0 200")
		return time.Since(t0)
	}
	var direct, relayed, diff []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := call(fmt.Sprintf("z9hG4bK-d%d", i), owner)
		r := call(fmt.Sprintf("z9hG4bK-r%d", i), other)
		direct, relayed, diff = append(direct, d), append(relayed, r), append(diff, r-d)
	}
	b.StopTimer()
	med := func(v []time.Duration) float64 {
		slices.Sort(v)
		return float64(v[len(v)/2].Nanoseconds())
	}
	b.ReportMetric(med(direct), "ns/direct")
	b.ReportMetric(med(relayed), "ns/relayed")
	b.ReportMetric(med(diff), "ns/extra")
}

func freeAddr(b *testing.B, network string) string {
	l, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func listenUDP(b *testing.B) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func send(b *testing.B, c *net.UDPConn, to, msg string) {
	a, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.WriteToUDP([]byte(msg), a); err != nil {
		b.Fatal(err)
	}
}

// recvMsg returns the next message starting with prefix, skipping others.
func recvMsg(b *testing.B, c *net.UDPConn, prefix string) sip.Message {
	buf := make([]byte, 65535)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			b.Fatalf("waiting for %q: %v", prefix, err)
		}
		if !strings.HasPrefix(string(buf[:n]), prefix) {
			continue
		}
		m, err := sip.NewParser().ParseSIP(buf[:n])
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
}

func sendRecv(b *testing.B, c *net.UDPConn, to, msg, prefix string) {
	send(b, c, to, msg)
	recvMsg(b, c, prefix)
}
