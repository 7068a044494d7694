package edge

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/upstream"
)

func invite(t *testing.T, from *ua, to sip.Uri) (*sipgo.DialogClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := from.request(sip.INVITE, to)
	req.SetBody([]byte("v=0\r\n"))
	sess, err := from.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return sess, sess.WaitAnswer(ctx, sipgo.AnswerOptions{})
}

func finalCode(t *testing.T, err error) int {
	t.Helper()
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) {
		t.Fatalf("want a final error response, got %v", err)
	}
	return de.Res.StatusCode
}

func TestUnknownUser404(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	_, err := invite(t, alice, sip.Uri{Scheme: "sip", User: "nobody", Host: domain})
	if c := finalCode(t, err); c != 404 {
		t.Fatalf("got %d, want 404", c)
	}
}

func TestCancel(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	bob.behave(10*time.Second, nil)
	mustStatus(t, bob.register(300), 200)

	ctx, cancel := context.WithCancel(context.Background())
	req := alice.request(sip.INVITE, bob.uri())
	sess, err := alice.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
			if r.StatusCode == 180 {
				cancel() // hang up while it rings
			}
			return nil
		}})
	}()
	recv(t, bob.cancels, "CANCEL at bob")
	if err := recv(t, done, "WaitAnswer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitAnswer: %v", err)
	}
	if sess.InviteResponse == nil || sess.InviteResponse.StatusCode != 487 {
		t.Fatalf("INVITE final response %v, want 487", sess.InviteResponse)
	}
}

func TestParallelForking(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob1 := newUA(t, "bob", "udp", f.udp)
	bob2 := newUA(t, "bob", "udp", f.udp)
	bob1.behave(200*time.Millisecond, nil)
	bob2.behave(10*time.Second, nil)
	mustStatus(t, bob1.register(300), 200)
	mustStatus(t, bob2.register(300), 200)
	if n := f.store.Len(); n != 2 {
		t.Fatalf("%d bindings, want 2", n)
	}
	sess, err := invite(t, alice, bob1.uri())
	if err != nil {
		t.Fatal(err)
	}
	recv(t, bob1.invites, "INVITE at bob1")
	recv(t, bob2.invites, "INVITE at bob2")
	recv(t, bob2.cancels, "CANCEL at the losing branch")
	if got := sess.InviteResponse.Contact().Address.Port; got != bob1.contact.Address.Port {
		t.Fatalf("answered by port %d, want bob1", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob1.byes, "BYE at bob1")
}

func TestSerialForkingByQ(t *testing.T) {
	f := startServer(t, func(c *Config) { c.Forking = ForkSerial })
	alice := newUA(t, "alice", "udp", f.udp)
	hi := newUA(t, "bob", "udp", f.udp)
	lo := newUA(t, "bob", "udp", f.udp)
	hi.contact.Params = sip.HeaderParams{{K: "q", V: "0.9"}}
	lo.contact.Params = sip.HeaderParams{{K: "q", V: "0.1"}}
	hi.behave(0, func(*sip.Request) int { return 486 })
	var loFirst atomic.Bool
	lo.behave(0, func(*sip.Request) int {
		if len(hi.invites) == 0 {
			loFirst.Store(true)
		}
		return 200
	})
	mustStatus(t, lo.register(300), 200)
	mustStatus(t, hi.register(300), 200)
	sess, err := invite(t, alice, hi.uri())
	if err != nil {
		t.Fatal(err)
	}
	recv(t, hi.invites, "INVITE at q=0.9")
	recv(t, lo.invites, "INVITE at q=0.1")
	if loFirst.Load() {
		t.Fatal("q=0.1 rang before q=0.9 answered")
	}
	if got := sess.InviteResponse.Contact().Address.Port; got != lo.contact.Address.Port {
		t.Fatalf("answered by port %d, want the q=0.1 contact", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = sess.Ack(ctx)
	_ = sess.Bye(ctx)
}

// deadPeer is a UDP socket that reads and never answers.
func deadPeer(t *testing.T) (addr string, got *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got = &atomic.Int32{}
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String(), got
}

func TestUpstreamFailover(t *testing.T) {
	dead, hits := deadPeer(t)
	core := newUA(t, "core", "udp", "")
	f := startServer(t, func(c *Config) {
		// The dead upstream comes first in all but one in a million orders.
		c.Upstreams = []upstream.Target{{Addr: dead, Weight: 1000000}, {Addr: core.addr, Weight: 1}}
		c.UpstreamHealth.Interval = -1 // no probes: only the call decides
	})
	alice := newUA(t, "alice", "udp", f.udp)
	mustStatus(t, alice.register(300), 200)
	sess, err := invite(t, alice, sip.Uri{Scheme: "sip", User: "+15551234", Host: "carrier.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	inv := recv(t, core.invites, "INVITE at the second upstream")
	if inv.Recipient.Host != "carrier.example.net" {
		t.Errorf("Request-URI changed to %s", inv.Recipient.String())
	}
	if hits.Load() == 0 {
		t.Error("the first upstream was never tried")
	}
	if n := counter(t, f.reg, "anyedge_sip_upstream_failovers_total", nil); n < 1 {
		t.Errorf("failovers = %v", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = sess.Ack(ctx)
	_ = sess.Bye(ctx)
	recv(t, core.byes, "BYE at the upstream")
}

func TestNoOpenRelay(t *testing.T) {
	core := newUA(t, "core", "udp", "")
	f := startServer(t, func(c *Config) {
		c.Upstreams = []upstream.Target{{Addr: core.addr}}
		c.UpstreamHealth.Interval = -1
	})
	// Not registered, not trusted, no auth: may not call out.
	stranger := newUAAt(t, "mallory", "udp", f.udp, "127.0.0.2")
	_, err := invite(t, stranger, sip.Uri{Scheme: "sip", User: "+15551234", Host: "carrier.example.net"})
	if c := finalCode(t, err); c != 403 {
		t.Fatalf("got %d, want 403", c)
	}
	if len(core.invites) != 0 {
		t.Fatal("relayed to the upstream")
	}
	// A forged in-dialog request along a made-up route is refused too.
	req := stranger.request(sip.BYE, sip.Uri{Scheme: "sip", User: "x", Host: "carrier.example.net"})
	req.RemoveHeader("To")
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "x", Host: "carrier.example.net"}, Params: sip.HeaderParams{{K: "tag", V: "abc"}}})
	req.AppendHeader(sip.NewHeader("Route", "<sip:"+f.udp+";transport=udp;lr;ftag=x;sg=0000000000000000>"))
	mustStatus(t, stranger.do(req), 403)
}

func TestMaxForwardsAndLoop(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, bob.register(300), 200)

	req := alice.request(sip.MESSAGE, bob.uri())
	mf := sip.MaxForwardsHeader(0)
	req.AppendHeader(&mf)
	mustStatus(t, alice.do(req), 483)

	mustStatus(t, alice.do(alice.request(sip.MESSAGE, bob.uri())), 200)
	got := recv(t, bob.messages, "MESSAGE at bob")
	// The same request coming back to us (a routing loop): our Via with
	// the same request is in it.
	loop := got.Clone()
	loop.Recipient = bob.uri()
	loop.SetDestination(f.udp)
	loop.SetTransport("UDP")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tx, err := alice.cli.TransactionRequest(ctx, loop, sipgo.ClientRequestAddVia)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	select {
	case res := <-tx.Responses():
		mustStatus(t, res, 482)
	case <-ctx.Done():
		t.Fatal("no answer to the looped request")
	}
}
