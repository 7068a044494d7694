package edge

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestTCPConnectionReuse: a phone registered over TCP is reached over its
// own connection (its advertised port is the discard port, never dialled),
// and a call from UDP to TCP is double record-routed.
func TestTCPConnectionReuse(t *testing.T) {
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "tcp", f.tcp)
	bob.behave(20*time.Millisecond, nil)
	mustStatus(t, bob.register(300), 200)

	sess, err := invite(t, alice, bob.uri())
	if err != nil {
		t.Fatal(err)
	}
	inv := recv(t, bob.invites, "INVITE at bob over TCP")
	if inv.Transport() != "TCP" {
		t.Errorf("INVITE came over %s", inv.Transport())
	}
	if inv.Recipient.Port != 9 {
		t.Errorf("Request-URI %s: want the registered Contact", inv.Recipient.String())
	}
	rrs := sess.InviteResponse.GetHeaders("Record-Route")
	if len(rrs) != 2 {
		t.Fatalf("want a double Record-Route (UDP in, TCP out), got %d: %v", len(rrs), rrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.byes, "BYE at bob over TCP")
}

// TestNATReceived: a binding whose Contact is not where the REGISTER came
// from is reached at the received address; the Contact stays the
// Request-URI and nothing is ever sent to it.
func TestNATReceived(t *testing.T) {
	trap, hits := deadPeer(t)
	f := startServer(t, nil)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	// bob believes he is at the trap's address (a private address behind
	// a NAT, in real life).
	trapAddr := sip.Uri{}
	if err := sip.ParseUri("sip:bob@"+trap, &trapAddr); err != nil {
		t.Fatal(err)
	}
	bob.contact.Address.Port = trapAddr.Port
	bob.resetDialogs()
	mustStatus(t, bob.register(300), 200)
	bs, _ := f.store.Lookup(context.Background(), "sip:bob@"+domain)
	if len(bs) != 1 || !bs[0].NATed || bs[0].Received != bob.addr {
		t.Fatalf("binding %+v: want NATed, received %s", bs, bob.addr)
	}

	sess, err := invite(t, alice, bob.uri())
	if err != nil {
		t.Fatal(err)
	}
	inv := recv(t, bob.invites, "INVITE at bob's real address")
	if inv.Recipient.Port != trapAddr.Port {
		t.Errorf("Request-URI %s: want the Contact as registered", inv.Recipient.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.byes, "BYE at bob's real address")
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d packets went to the private Contact", n)
	}
}
