package edge

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func TestOptionsToEdge(t *testing.T) {
	f := startServer(t, nil)
	if !f.srv.Ready() {
		t.Fatal("not ready after Start")
	}
	a := newUA(t, "alice", "udp", f.udp)
	uri := sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: int(f.srv.Addr("udp").Port())}
	mustStatus(t, a.do(a.request(sip.OPTIONS, uri)), 200)
}

func TestRegisterFetchUnregister(t *testing.T) {
	f := startServer(t, nil)
	a := newUA(t, "alice", "udp", f.udp)
	res := a.register(300)
	mustStatus(t, res, 200)
	if c := res.Contact(); c == nil || c.Address.Port != a.contact.Address.Port {
		t.Fatalf("200 lists no/wrong contact: %v", res.GetHeaders("Contact"))
	}
	if n := f.store.Len(); n != 1 {
		t.Fatalf("store has %d bindings, want 1", n)
	}
	// Fetch: a REGISTER without Contact lists the bindings.
	req := a.request(sip.REGISTER, sip.Uri{Scheme: "sip", Host: domain})
	req.RemoveHeader("Contact")
	req.RemoveHeader("To")
	req.AppendHeader(&sip.ToHeader{Address: a.uri()})
	res = a.do(req)
	mustStatus(t, res, 200)
	if len(res.GetHeaders("Contact")) != 1 {
		t.Fatalf("fetch lists %d contacts", len(res.GetHeaders("Contact")))
	}
	mustStatus(t, a.register(0), 200)
	if n := f.store.Len(); n != 0 {
		t.Fatalf("store has %d bindings after unregister", n)
	}
}

func TestCallFlow(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	bob.behave(50*time.Millisecond, nil) // sipgo handles each message on its own goroutine: keep 180 before 200
	mustStatus(t, bob.register(300), 200)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := alice.request(sip.INVITE, bob.uri())
	req.SetBody([]byte("v=0\r\n"))
	sess, err := alice.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	ringing := false
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.StatusCode == 180 {
			ringing = true
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	if !ringing {
		t.Error("no 180 passed on")
	}
	if n := len(sess.InviteResponse.GetHeaders("Record-Route")); n != 1 {
		t.Errorf("200 carries %d Record-Route, want 1", n)
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	inv := recv(t, bob.invites, "INVITE at bob")
	if mf := inv.MaxForwards(); mf == nil || mf.Val() != 69 {
		t.Errorf("Max-Forwards at bob = %v, want 69", mf)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.byes, "BYE at bob")
}
