package proxy

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBranch(t *testing.T) {
	b := Branch(42, 0xdeadbeef, "")
	if b[:7] != "z9hG4bK" {
		t.Fatalf("%q lacks the RFC 3261 cookie", b)
	}
	n, l, ok := ParseBranch(b)
	if !ok || n != 42 || l != 0xdeadbeef {
		t.Fatalf("ParseBranch(%q) = %d %x %v", b, n, l, ok)
	}
	if Branch(42, 1, "") == Branch(42, 1, "") {
		t.Error("random branches repeat")
	}
	if Branch(42, 1, "seed") != Branch(42, 1, "seed") {
		t.Error("seeded branches differ: a retransmitted ACK would get a new branch")
	}
	for _, foreign := range []string{"z9hG4bKabc", "z9hG4bK-zzzzzzzz-00000000-ab", ""} {
		if _, _, ok := ParseBranch(foreign); ok {
			t.Errorf("parsed foreign branch %q", foreign)
		}
	}
}

func TestLoopAndSpiral(t *testing.T) {
	s := testSocket("udp", 5060)
	p := New(Config{Node: 3, Sockets: []*Socket{s}}, newFakeNet(), nil)
	req := inbound(t, sip.INVITE)
	loop := LoopHash(req)
	fwd := p.prepare(req, Target{URI: req.Recipient, Socket: s}, Plan{Loop: loop}, Branch(3, loop, ""))
	back := fwd.Clone()
	back.Recipient = req.Recipient // comes back unchanged: a loop
	if !p.Looped(back, LoopHash(back)) {
		t.Fatal("loop not detected")
	}
	spiral := fwd.Clone()
	spiral.Recipient.User = "carol" // retargeted by the core: a spiral
	if p.Looped(spiral, LoopHash(spiral)) {
		t.Fatal("spiral taken for a loop")
	}
	other := New(Config{Node: 4, Sockets: []*Socket{s}}, newFakeNet(), nil)
	if other.Looped(back, LoopHash(back)) {
		t.Fatal("another node's Via taken for ours")
	}
}

func TestPrepare(t *testing.T) {
	udp, tcp := testSocket("udp", 5060), testSocket("tcp", 5060)
	p := New(Config{Sockets: []*Socket{udp, tcp}}, newFakeNet(), nil)
	req := inbound(t, sip.INVITE)
	target := sip.Uri{Scheme: "sip", User: "bob", Host: "10.0.0.9", Port: 5070}
	out := p.prepare(req, Target{URI: target, Dest: "127.0.0.1:40000", Socket: tcp,
		RRParams: sip.HeaderParams{{K: "ne", V: "x"}}}, Plan{In: udp, RecordRoute: true, RRParams: sip.HeaderParams{{K: "ftag", V: "a1"}}}, "z9hG4bK-test")
	if out.Recipient.String() != target.String() {
		t.Errorf("R-URI %s", out.Recipient.String())
	}
	if mf := out.MaxForwards(); mf.Val() != 69 {
		t.Errorf("Max-Forwards %d", mf.Val())
	}
	if req.MaxForwards().Val() != 70 {
		t.Error("the inbound request was modified")
	}
	rrs := out.GetHeaders("Record-Route")
	if len(rrs) != 2 {
		t.Fatalf("UDP→TCP: %d Record-Route, want 2", len(rrs))
	}
	top := rrs[0].(*sip.RecordRouteHeader).Address
	if tp, _ := top.UriParams.Get("transport"); tp != "tcp" {
		t.Errorf("top RR faces %s, want the callee's tcp side", tp)
	}
	if v, _ := top.UriParams.Get("ne"); v != "x" {
		t.Error("branch RR params missing")
	}
	if out.Via().Transport != "TCP" || out.Destination() != "127.0.0.1:40000" || out.Laddr.IP != nil {
		t.Errorf("via %s dest %s laddr %v", out.Via().Transport, out.Destination(), out.Laddr)
	}
	if len(out.GetHeaders("Via")) != 2 {
		t.Error("our Via not pushed on top")
	}
	// Same socket in and out: a single Record-Route.
	out = p.prepare(req, Target{URI: target, Socket: udp}, Plan{In: udp, RecordRoute: true}, "z9hG4bK-t2")
	if n := len(out.GetHeaders("Record-Route")); n != 1 {
		t.Errorf("%d Record-Route on one socket", n)
	}
	if out.Laddr.Port != 5060 || out.Destination() != "10.0.0.9:5070" {
		t.Errorf("udp from %v to %s", out.Laddr, out.Destination())
	}
}

func TestPopRoutes(t *testing.T) {
	udp := testSocket("udp", 5060)
	tcp := testSocket("tcp", 5060)
	p := New(Config{Sockets: []*Socket{udp, tcp}}, newFakeNet(), nil)
	req := inbound(t, sip.BYE)
	req.AppendHeader(sip.NewHeader("Route", "<sip:127.0.0.1:5060;transport=udp;lr>"))
	req.AppendHeader(sip.NewHeader("Route", "<sip:127.0.0.1:5060;transport=tcp;lr;ftag=a1>"))
	req.AppendHeader(sip.NewHeader("Route", "<sip:core.example.net;lr>"))
	m, _ := sip.ParseMessage([]byte(req.String()))
	req = m.(*sip.Request)
	// OwnRoutes reads what PopRoutes removes, and a branch leaves it off.
	n, last, next, strictly := p.OwnRoutes(req)
	if n != 2 || strictly || p.SocketFor(last) != tcp || next == nil || next.Host != "core.example.net" {
		t.Fatalf("OwnRoutes: %d, last %v, next %v, strict %v", n, last, next, strictly)
	}
	out := p.prepare(req, Target{URI: req.Recipient, Socket: udp, Pop: n}, Plan{}, "z9hG4bK-t3")
	if rs := out.GetHeaders("Route"); len(rs) != 1 || rs[0].(*sip.RouteHeader).Address.Host != "core.example.net" {
		t.Fatalf("branch routes %v", rs)
	}
	if len(req.GetHeaders("Route")) != 3 {
		t.Fatal("the inbound request lost its routes")
	}
	popped := p.PopRoutes(req)
	if len(popped) != 2 {
		t.Fatalf("popped %d, want our two", len(popped))
	}
	if p.SocketFor(&popped[1]) != tcp {
		t.Error("last popped route should name the tcp socket")
	}
	if r := req.Route(); r == nil || r.Address.Host != "core.example.net" {
		t.Fatalf("remaining route %v", r)
	}
	// Strict router before us: our RR URI is the Request-URI.
	strict := inbound(t, sip.BYE)
	strict.Recipient = sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5060, UriParams: sip.HeaderParams{{K: "transport", V: "udp"}, {K: "lr", V: ""}}}
	strict.AppendHeader(&sip.RouteHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "192.0.2.9"}})
	if _, _, _, strictly := p.OwnRoutes(strict); !strictly {
		t.Fatal("OwnRoutes missed the strict router")
	}
	p.PopRoutes(strict)
	if strict.Recipient.Host != "192.0.2.9" || strict.Route() != nil {
		t.Fatalf("strict fix-up: R-URI %s, route %v", strict.Recipient.String(), strict.Route())
	}
}

func forward(t *testing.T, p *Proxy, req *sip.Request, stx *fakeServerTx, plan Plan) chan *sip.Response {
	t.Helper()
	out := make(chan *sip.Response, 1)
	go func() { out <- p.Forward(context.Background(), req, stx, plan) }()
	return out
}

func next(t *testing.T, n *fakeNet) *fakeTx {
	t.Helper()
	select {
	case tx := <-n.sent:
		return tx
	case <-time.After(2 * time.Second):
		t.Fatal("no branch sent")
		return nil
	}
}

func waitFinal(t *testing.T, ch chan *sip.Response) *sip.Response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(3 * time.Second):
		t.Fatal("Forward did not return")
		return nil
	}
}

func TestParallelFirst2xxWinsOthersCancelled(t *testing.T) {
	s := testSocket("udp", 5060)
	n := newFakeNet()
	p := New(Config{Sockets: []*Socket{s}, NoResponseTimeout: time.Second}, n, nil)
	stx := newFakeServerTx()
	req := inbound(t, sip.INVITE)
	done := forward(t, p, req, stx, Plan{Groups: [][]Target{{{URI: req.Recipient, Socket: s}, {URI: req.Recipient, Socket: s}}}})
	a, b := next(t, n), next(t, n)
	a.answer(180)
	b.answer(180)
	waitCodes(t, stx, 2) // branches are watched concurrently: let both 180s through first
	a.answer(200)
	// b gets a CANCEL, then answers 487.
	c := next(t, n)
	if c.req.Method != sip.CANCEL || c.req.Via().Params.GetOr("branch", "") != b.req.Via().Params.GetOr("branch", "x") {
		t.Fatalf("want CANCEL on b's branch, got %s", c.req.StartLine())
	}
	c.answer(200)
	c.Terminate()
	b.answer(487)
	if r := waitFinal(t, done); r == nil || r.StatusCode != 200 {
		t.Fatalf("final %v", r)
	}
	if got := stx.codes(); !slices.Equal(got, []int{180, 180, 200}) {
		t.Errorf("upstream saw %v", got)
	}
	p.Wait()
}

func TestSerialGroupsAndBestResponse(t *testing.T) {
	s := testSocket("udp", 5060)
	n := newFakeNet()
	p := New(Config{Sockets: []*Socket{s}, NoResponseTimeout: 200 * time.Millisecond}, n, nil)
	stx := newFakeServerTx()
	req := inbound(t, sip.INVITE)
	tg := Target{URI: req.Recipient, Socket: s}
	var decided []int
	done := forward(t, p, req, stx, Plan{Groups: [][]Target{{tg}, {tg}, {tg}},
		OnDecided: func(_ Target, code int, _ bool) { decided = append(decided, code) }})
	next(t, n).answer(486) // group 1: busy → next group
	// group 2: silent → 408 after NoResponseTimeout → next group
	silent := next(t, n)
	next(t, n).answer(503) // group 3: 503
	_ = silent
	r := waitFinal(t, done)
	// 486 is the lowest class and specific: it wins over 408 and 503.
	if r.StatusCode != 486 {
		t.Fatalf("best response %d, want 486", r.StatusCode)
	}
	if !slices.Equal(decided, []int{486, 408, 503}) {
		t.Errorf("decided %v", decided)
	}
	p.Wait()
}

func TestUpstream503BecomesServerError(t *testing.T) {
	s := testSocket("udp", 5060)
	n := newFakeNet()
	p := New(Config{Sockets: []*Socket{s}}, n, nil)
	stx := newFakeServerTx()
	req := inbound(t, sip.MESSAGE)
	done := forward(t, p, req, stx, Plan{Groups: [][]Target{{{URI: req.Recipient, Socket: s}}}})
	next(t, n).answer(503)
	if r := waitFinal(t, done); r.StatusCode != 500 {
		t.Fatalf("503 forwarded as %d, want 500 (RFC 3261 §16.7)", r.StatusCode)
	}
}

func TestUpstreamCancel(t *testing.T) {
	s := testSocket("udp", 5060)
	n := newFakeNet()
	p := New(Config{Sockets: []*Socket{s}}, n, nil)
	stx := newFakeServerTx()
	req := inbound(t, sip.INVITE)
	done := forward(t, p, req, stx, Plan{Groups: [][]Target{{{URI: req.Recipient, Socket: s}}}})
	b := next(t, n)
	b.answer(180)
	waitCodes(t, stx, 1)
	stx.mu.Lock()
	cb := stx.onCancel
	stx.mu.Unlock()
	cb(req)
	c := next(t, n)
	if c.req.Method != sip.CANCEL {
		t.Fatalf("want CANCEL, got %s", c.req.Method)
	}
	c.Terminate()
	b.answer(487)
	if r := waitFinal(t, done); r != nil {
		t.Fatalf("Forward returned %v after CANCEL, want nil (sipgo answers 487)", r.StatusCode)
	}
	p.Wait()
}

func waitCodes(t *testing.T, stx *fakeServerTx, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for len(stx.codes()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("upstream got %v, want %d responses", stx.codes(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
