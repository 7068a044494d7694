package edge

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/proxy"
)

// anycastHost is what both test nodes advertise, as nodes behind one
// anycast address do; it is never sent to: the test's peers decide where
// each message goes.
const anycastHost = "203.0.113.10:5060"

// txNet is a fake cluster for TxRelay: it hands frames to the servers
// registered in it, synchronously.
type txNet struct {
	mu    sync.Mutex
	nodes map[uint32]*Server
	down  map[uint32]bool
}

func (n *txNet) relay(self uint32) TxRelay { return txNetRelay{n, self} }

func (n *txNet) add(id uint32, s *Server) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes == nil {
		n.nodes = map[uint32]*Server{}
	}
	n.nodes[id] = s
}

type txNetRelay struct {
	n    *txNet
	self uint32
}

func (r txNetRelay) SendTx(node uint32, msg []byte) error {
	r.n.mu.Lock()
	s, ok := r.n.nodes[node]
	down := r.n.down[node]
	r.n.mu.Unlock()
	switch {
	case down:
		return ErrNodeDown
	case !ok:
		return ErrNodeUnknown
	}
	s.HandleTxRelay(r.self, msg)
	return nil
}

func (r txNetRelay) SelfAddr() string       { return "" }
func (r txNetRelay) IsPeer(netip.Addr) bool { return false }

func (r txNetRelay) BroadcastTx(msg []byte) int {
	r.n.mu.Lock()
	var to []*Server
	for id, s := range r.n.nodes {
		if id != r.self && !r.n.down[id] {
			to = append(to, s)
		}
	}
	r.n.mu.Unlock()
	for _, s := range to {
		s.HandleTxRelay(r.self, msg)
	}
	return len(to)
}

// anycastPair starts nodes 1 and 2 on their own loopback ports, both
// advertising anycastHost, joined by a fake cluster.
func anycastPair(t *testing.T) (a, b *fixture, cl *txNet) {
	t.Helper()
	cl = &txNet{}
	adv := func(c *Config) {
		c.Listeners = []Listener{{Transport: "udp", Addr: "127.0.0.1:0", Advertise: anycastHost}}
		c.Keepalive.Enabled = new(bool) // no OPTIONS to the raw callee
	}
	a = startServer(t, adv, WithNodeID(1), WithHooks(Hooks{TxRelay: cl.relay(1)}))
	b = startServer(t, adv, WithNodeID(2), WithHooks(Hooks{TxRelay: cl.relay(2)}))
	cl.add(1, a.srv)
	cl.add(2, b.srv)
	// Both closed before either's leak check, which would see the other's
	// goroutines.
	t.Cleanup(func() { _ = b.srv.Close(); _ = a.srv.Close() })
	return a, b, cl
}

// rawPeer is a UDP socket that sends hand-written SIP and parses what it
// gets, so that the test decides which node each message reaches.
type rawPeer struct {
	t    testing.TB
	pc   net.PacketConn
	addr string
	in   chan rawMsg
}

type rawMsg struct {
	msg  sip.Message
	from string
}

func newRawPeer(t testing.TB) *rawPeer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, pc: pc, addr: pc.LocalAddr().String(), in: make(chan rawMsg, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		parser := sip.NewParser()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if len(bytes.TrimSpace(buf[:n])) == 0 {
				continue
			}
			m, err := parser.ParseSIP(bytes.Clone(buf[:n]))
			if err != nil {
				continue
			}
			select {
			case p.in <- rawMsg{m, from.String()}:
			default:
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return p
}

func (p *rawPeer) send(to string, m sip.Message) {
	p.t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.pc.WriteTo([]byte(m.String()), ua); err != nil {
		p.t.Fatal(err)
	}
}

// next returns the next message that want accepts, skipping others
// (retransmissions, 100 Trying).
func (p *rawPeer) next(what string, want func(sip.Message) bool) rawMsg {
	p.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-p.in:
			if want(m.msg) {
				return m
			}
		case <-deadline:
			p.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func isRequest(method sip.RequestMethod) func(sip.Message) bool {
	return func(m sip.Message) bool {
		r, ok := m.(*sip.Request)
		return ok && r.Method == method
	}
}

func isResponse(code int, method sip.RequestMethod) func(sip.Message) bool {
	return func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == code && r.CSeq() != nil && r.CSeq().MethodName == method
	}
}

func parseReq(t testing.TB, s string) *sip.Request {
	t.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(strings.ReplaceAll(s, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sip.Request)
}

// registerRaw registers bob at node with the callee's address as contact.
func registerRaw(t testing.TB, callee *rawPeer, node string) {
	t.Helper()
	callee.send(node, parseReq(t, fmt.Sprintf(`REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-reg1;rport
From: <sip:bob@example.com>;tag=r1
To: <sip:bob@example.com>
Call-ID: reg-%[1]s
CSeq: 1 REGISTER
Contact: <sip:bob@%[1]s>
Expires: 300
Max-Forwards: 70
Content-Length: 0

`, callee.addr)))
	callee.next("200 to REGISTER", isResponse(200, sip.REGISTER))
}

// inviteRaw is the caller's INVITE for bob.
func inviteRaw(t testing.TB, uac *rawPeer, branch string) *sip.Request {
	return parseReq(t, fmt.Sprintf(`INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP %[1]s;branch=%[2]s;rport
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>
Call-ID: call-%[2]s
CSeq: 1 INVITE
Contact: <sip:alice@%[1]s>
Max-Forwards: 70
Content-Length: 0

`, uac.addr, branch))
}

func answer(inv *sip.Request, code int, reason, contact string) *sip.Response {
	res := sip.NewResponseFromRequest(inv, code, reason, nil)
	if to := res.To(); to != nil {
		to.Params.Add("tag", "b1")
	}
	res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+contact+">"))
	return res
}

// The callee's 180 and 200 reach node 2, which did not send the INVITE:
// node 2 relays them to node 1, whose client transaction completes and
// forwards them to the caller; node 2 never sends them on itself.
func TestAnycastResponseRelayedToOwner(t *testing.T) {
	a, b, _ := anycastPair(t)
	uac, callee := newRawPeer(t), newRawPeer(t)
	registerRaw(t, callee, a.udp)
	twoxx := func() float64 {
		return counter(t, a.reg, "anyedge_sip_responses_total", map[string]string{"class": "2xx"})
	}
	eventually(t, 5*time.Second, func() error { // counted just after it is sent
		if n := twoxx(); n != 1 {
			return fmt.Errorf("%v 2xx for the REGISTER", n)
		}
		return nil
	})

	uac.send(a.udp, inviteRaw(t, uac, "z9hG4bK-uac-1"))
	inv := callee.next("INVITE forwarded by node 1", isRequest(sip.INVITE)).msg.(*sip.Request)
	if owner, _, ok := proxy.ParseBranch(branchOf(inv.Via())); !ok || owner != 1 {
		t.Fatalf("top Via %v does not name node 1", inv.Via())
	}
	// One at a time: each relayed message is injected on a goroutine of
	// its own, as sipgo handles each one read, so two may swap.
	callee.send(b.udp, answer(inv, 180, "Ringing", callee.addr))
	ringing := uac.next("180 at the caller", isResponse(180, sip.INVITE))
	callee.send(b.udp, answer(inv, 200, "OK", callee.addr))
	ok := uac.next("200 at the caller", isResponse(200, sip.INVITE))
	for _, m := range []rawMsg{ringing, ok} {
		if m.from != a.udp {
			t.Errorf("%s came from %s, want node 1 (%s), the owner", strings.SplitN(m.msg.String(), "\r\n", 2)[0], m.from, a.udp)
		}
	}
	eventually(t, 5*time.Second, func() error { // counted just after the relay is sent
		if n := counter(t, b.reg, "anyedge_sip_misdelivered_relayed_total", map[string]string{"kind": "response"}); n != 2 {
			return fmt.Errorf("node 2 relayed %v responses, want 2", n)
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, a.reg, "anyedge_sip_misdelivered_injected_total", map[string]string{"kind": "response"}); n != 2 {
			return fmt.Errorf("node 1 injected %v responses, want 2", n)
		}
		return nil
	})
	// Node 2 sent nothing upstream (OpenSIPS #2445: relayed and sent on).
	if n := counter(t, b.reg, "anyedge_sip_responses_total", nil); n != 0 {
		t.Errorf("node 2 sent %v responses itself", n)
	}
	eventually(t, 5*time.Second, func() error {
		if n := twoxx() - 1; n != 1 {
			return fmt.Errorf("node 1 forwarded %v 2xx for the INVITE, want exactly 1", n)
		}
		return nil
	})
}

func branchOf(v *sip.ViaHeader) string {
	if v == nil {
		return ""
	}
	b, _ := v.Params.Get("branch")
	return b
}

// A response naming an unknown or unreachable node is dropped and counted;
// one naming nobody of ours (foreign branch) is left to the usual stray
// handling.
func TestAnycastResponseDrops(t *testing.T) {
	_, b, cl := anycastPair(t)
	peer := newRawPeer(t)
	cl.mu.Lock()
	cl.down = map[uint32]bool{4: true}
	cl.mu.Unlock()
	for _, owner := range []uint32{3, 4} {
		inv := inviteRaw(t, peer, proxy.Branch(owner, 0, ""))
		inv.RemoveHeader("Via")
		inv.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
			Host: "203.0.113.10", Port: 5060, Params: sip.HeaderParams{{K: "branch", V: proxy.Branch(owner, 0, "")}}})
		peer.send(b.udp, sip.NewResponseFromRequest(inv, 200, "OK", nil))
	}
	eventually(t, 5*time.Second, func() error {
		u := counter(t, b.reg, "anyedge_sip_misdelivered_dropped_total", map[string]string{"reason": "unknown_node"})
		d := counter(t, b.reg, "anyedge_sip_misdelivered_dropped_total", map[string]string{"reason": "node_down"})
		if u != 1 || d != 1 {
			return fmt.Errorf("dropped unknown_node=%v node_down=%v, want 1 and 1", u, d)
		}
		return nil
	})
	if n := counter(t, b.reg, "anyedge_sip_misdelivered_relayed_total", nil); n != 0 {
		t.Errorf("relayed %v", n)
	}
}

// The caller's CANCEL reaches node 2, which has no INVITE: node 2 answers
// 200 and relays it to every node; node 1, which holds the INVITE, answers
// 487 over its own socket and cancels the callee's branch. The ACK of the
// 487, also at node 2, ends node 1's transaction.
func TestAnycastCancelAndAckRelayed(t *testing.T) {
	a, b, _ := anycastPair(t)
	uac, callee := newRawPeer(t), newRawPeer(t)
	registerRaw(t, callee, a.udp)

	invite := inviteRaw(t, uac, "z9hG4bK-uac-2")
	uac.send(a.udp, invite)
	inv := callee.next("INVITE forwarded by node 1", isRequest(sip.INVITE)).msg.(*sip.Request)
	callee.send(a.udp, answer(inv, 180, "Ringing", callee.addr))
	uac.next("180 at the caller", isResponse(180, sip.INVITE))

	cancel := sip.NewRequest(sip.CANCEL, invite.Recipient)
	cancel.AppendHeader(sip.HeaderClone(invite.Via()))
	for _, h := range []string{"From", "To", "Call-ID", "Max-Forwards"} {
		cancel.AppendHeader(sip.HeaderClone(invite.GetHeader(h)))
	}
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.CANCEL})
	cancel.SetBody(nil)
	uac.send(b.udp, cancel)

	ok := uac.next("200 to the CANCEL", isResponse(200, sip.CANCEL))
	if ok.from != b.udp {
		t.Errorf("200 to the CANCEL from %s, want node 2 (%s), which received it", ok.from, b.udp)
	}
	terminated := uac.next("487 to the INVITE", isResponse(487, sip.INVITE))
	if terminated.from != a.udp {
		t.Errorf("487 from %s, want node 1 (%s), the owner", terminated.from, a.udp)
	}
	c := callee.next("CANCEL of the branch", isRequest(sip.CANCEL)).msg.(*sip.Request)
	callee.send(a.udp, sip.NewResponseFromRequest(c, 200, "OK", nil))
	callee.send(a.udp, answer(inv, 487, "Request Terminated", callee.addr))

	// The ACK of the 487: same branch as the INVITE, To tag of the 487.
	ack := sip.NewRequest(sip.ACK, invite.Recipient)
	ack.AppendHeader(sip.HeaderClone(invite.Via()))
	for _, h := range []string{"From", "Call-ID", "Max-Forwards"} {
		ack.AppendHeader(sip.HeaderClone(invite.GetHeader(h)))
	}
	ack.AppendHeader(sip.HeaderClone(terminated.msg.(*sip.Response).To()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.ACK})
	ack.SetBody(nil)
	uac.send(b.udp, ack)

	eventually(t, 5*time.Second, func() error {
		for _, kind := range []string{"cancel", "ack"} {
			if n := counter(t, b.reg, "anyedge_sip_misdelivered_relayed_total", map[string]string{"kind": kind}); n != 1 {
				return fmt.Errorf("node 2 relayed %v %s, want 1", n, kind)
			}
			if n := counter(t, a.reg, "anyedge_sip_misdelivered_injected_total", map[string]string{"kind": kind}); n != 1 {
				return fmt.Errorf("node 1 injected %v %s, want 1", n, kind)
			}
		}
		return nil
	})
}

// A frame whose kind does not match its message (an INVITE sent as a
// "response", a BYE as a "cancel") is dropped, never fed to a transaction.
func TestAnycastRelayKindChecked(t *testing.T) {
	a, _, _ := anycastPair(t)
	inv := inviteRaw(t, newRawPeer(t), "z9hG4bK-kind")
	for _, k := range []txKind{txResponse, txCancel, txAck} {
		b, err := (&txFrame{kind: k, origin: 2, transport: "UDP", source: "127.0.0.1:9", sip: []byte(inv.String())}).encode()
		if err != nil {
			t.Fatal(err)
		}
		a.srv.HandleTxRelay(2, b)
	}
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, a.reg, "anyedge_sip_misdelivered_dropped_total", map[string]string{"reason": "malformed"}); n != 3 {
			return fmt.Errorf("dropped as malformed: %v, want 3", n)
		}
		return nil
	})
	if n := counter(t, a.reg, "anyedge_sip_misdelivered_injected_total", nil); n != 0 {
		t.Errorf("injected %v", n)
	}
}

// Frames are checked: truncated, unknown version or kind, no message.
func TestTxFrameDecode(t *testing.T) {
	good, err := (&txFrame{kind: txCancel, origin: 7, sent: 42, transport: "UDP", source: "198.18.0.1:5060",
		sip: []byte("CANCEL sip:x SIP/2.0\r\n\r\n")}).encode()
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeTxFrame(good)
	if err != nil || f.kind != txCancel || f.origin != 7 || f.sent != 42 || f.source != "198.18.0.1:5060" {
		t.Fatalf("round trip: %+v, %v", f, err)
	}
	bad := map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"kind":      append([]byte{1, 9}, good[2:]...),
		"truncated": good[:16],
		"no sip":    good[:len(good)-len("CANCEL sip:x SIP/2.0\r\n\r\n")],
	}
	for name, b := range bad {
		if _, err := decodeTxFrame(b); !errors.Is(err, errTxFrame) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzTxFrameDecode(f *testing.F) {
	good, _ := (&txFrame{kind: txResponse, transport: "UDP", source: "a", sip: []byte("SIP/2.0 200 OK\r\n\r\n")}).encode()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeTxFrame(b)
		if err != nil {
			return
		}
		again, err := fr.encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encode differs: %v", err)
		}
	})
}

// BenchmarkMisdeliveredResponse measures the callee's 200 to the caller
// through the owner node, from the callee's send to the caller's receive:
// sent to the owner ("direct"), and sent to the other node, which relays it
// ("relayed": over the in-process fake cluster, so frame encode, parse and
// injection, without the cluster's TCP hop). The two alternate within one
// run so that both see the same machine load; reported are their medians
// and the median of the per-pair difference.
func BenchmarkMisdeliveredResponse(b *testing.B) {
	cl := &txNet{}
	mk := func(id uint32) *Server {
		cfg := Config{
			Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0", Advertise: anycastHost}},
			Domains:   []string{domain},
			Timeouts:  Timeouts{NoResponse: 2 * time.Second},
		}
		cfg.Keepalive.Enabled = new(bool)
		srv, err := New(cfg, location.NewMemory(), WithNodeID(id), WithHooks(Hooks{TxRelay: cl.relay(id)}))
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Close() })
		cl.add(id, srv)
		return srv
	}
	a, o := mk(1), mk(2)
	aAddr, oAddr := a.Addr("udp").String(), o.Addr("udp").String()
	uac, callee := newRawPeer(b), newRawPeer(b)
	registerRaw(b, callee, aAddr)
	call := func(branch, to string) time.Duration {
		uac.send(aAddr, inviteRaw(b, uac, branch))
		inv := callee.next("INVITE", isRequest(sip.INVITE)).msg.(*sip.Request)
		t0 := time.Now()
		callee.send(to, answer(inv, 200, "OK", callee.addr))
		uac.next("200", isResponse(200, sip.INVITE))
		return time.Since(t0)
	}
	var direct, relayed, diff []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := call(fmt.Sprintf("z9hG4bK-bench-d%d", i), aAddr)
		r := call(fmt.Sprintf("z9hG4bK-bench-r%d", i), oAddr)
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

// peerRelay is a TxRelay that knows the cluster's SIP addresses.
type peerRelay struct {
	txNetRelay
	self string
	peer netip.Addr
}

func (p peerRelay) SelfAddr() string         { return p.self }
func (p peerRelay) IsPeer(a netip.Addr) bool { return a == p.peer }

// A request routed on to another node leaves from this node's own address,
// not from the shared one it came in on (the peer would drop a packet from
// an address it holds itself); towards anybody else the socket is kept.
func TestTowardPeerLeavesFromOwnAddress(t *testing.T) {
	relay := &peerRelay{peer: netip.MustParseAddr("127.0.0.3")}
	f := startServer(t, func(c *Config) {
		c.Listeners = []Listener{{Transport: "udp", Addr: "127.0.0.2:0"}, {Transport: "udp", Addr: "127.0.0.1:0"}}
	}, WithNodeID(1), WithHooks(Hooks{TxRelay: relay}))
	shared, own := f.srv.sockets[0], f.srv.sockets[1]
	relay.self = own.ap.String()
	route := func(host string) *sip.Uri { // the next hop's Route
		return &parseReq(t, "BYE sip:bob@198.18.0.9 SIP/2.0\nVia: SIP/2.0/UDP 198.18.0.8;branch=z9hG4bK-x\n"+
			"Route: <sip:"+host+":5060;lr>\nFrom: <sip:a@example.com>;tag=1\nTo: <sip:b@example.com>;tag=2\n"+
			"Call-ID: c\nCSeq: 2 BYE\nMax-Forwards: 70\nContent-Length: 0\n\n").Route().Address
	}
	if got := f.srv.towardPeer(route("127.0.0.3"), shared); got != own {
		t.Errorf("to a peer: socket %s, want the node's own %s", got.ap, own.ap)
	}
	if got := f.srv.towardPeer(route("198.18.0.7"), shared); got != shared {
		t.Errorf("to a non-peer: socket %s, want the one chosen, %s", got.ap, shared.ap)
	}
}

// A request relayed to a binding's home node leaves from this node's own
// address too, even when a shared (anycast) listener comes first.
func TestHomeRelayLeavesFromOwnAddress(t *testing.T) {
	relay := &peerRelay{peer: netip.MustParseAddr("127.0.0.3")}
	hooks := Hooks{TxRelay: relay, HomeAddr: func(uint32) (string, bool) { return "127.0.0.3:5060", true }}
	f := startServer(t, func(c *Config) {
		c.Listeners = []Listener{{Transport: "udp", Addr: "127.0.0.2:0"}, {Transport: "udp", Addr: "127.0.0.1:0"}}
	}, WithNodeID(1), WithHooks(hooks))
	own := f.srv.sockets[1]
	relay.self = own.ap.String()
	var ruri sip.Uri
	if err := sip.ParseUri("sip:alice@example.com", &ruri); err != nil {
		t.Fatal(err)
	}
	tg, ok := f.srv.bindingTarget(location.Binding{AoR: "alice@example.com", Home: 2}, ruri)
	if !ok || tg.Dest != "127.0.0.3:5060" {
		t.Fatalf("target %+v %v, want a relay to the home", tg, ok)
	}
	if tg.Socket != own.ps {
		t.Errorf("relay socket %v, want the node's own %s", tg.Socket, own.ap)
	}
}

// The fan-out bucket lets a burst through, then the rate, never more.
func TestFanoutBucket(t *testing.T) {
	b := newBucket(10, 5)
	t0 := time.Unix(1_700_000_000, 0)
	n := 0
	for i := 0; i < 20; i++ {
		if b.take(t0) {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("burst let %d through, want 5", n)
	}
	n = 0
	for i := 1; i <= 100; i++ { // one second in 10 ms steps
		if b.take(t0.Add(time.Duration(i) * 10 * time.Millisecond)) {
			n++
		}
	}
	if n < 9 || n > 11 {
		t.Fatalf("%d through in a second at rate 10", n)
	}
}

// An IPv6 Via gives a bracketed destination (sipgo's own is unbracketed
// and unusable); IPv4 is left to sipgo.
func TestViaDestinationIPv6(t *testing.T) {
	for via, want := range map[string]string{
		"SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK-1":                             "[2001:db8::1]:5070",
		"SIP/2.0/UDP [fd00::1];branch=z9hG4bK-1;received=2001:db8::9;rport=40000":     "[2001:db8::9]:40000",
		"SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK-1":                                  "[2001:db8::1]:5060",
		"SIP/2.0/UDP 198.18.0.1:5070;branch=z9hG4bK-1;received=198.18.0.2;rport=4000": "",
	} {
		res := sip.NewResponseFromRequest(parseReq(t, "OPTIONS sip:a@example.com SIP/2.0\nVia: "+via+
			"\nFrom: <sip:b@example.com>;tag=1\nTo: <sip:a@example.com>\nCall-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"), 200, "OK", nil)
		if got := viaDestination(res); got != want {
			t.Errorf("%s: %q, want %q", via, got, want)
		}
	}
}
