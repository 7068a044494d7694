package edge

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// fastAck takes a stray UDP ACK (one with no route of ours, from an
// untrusted source) through the handler without a sipgo transaction: it is
// counted as a stray ACK, as sipgo's path counts it. Other methods and
// unparsable datagrams stay with sipgo.
func TestFastAck(t *testing.T) {
	f := startServer(t, nil)
	var sock *socket
	for _, so := range f.srv.sockets {
		if so.pc != nil {
			sock = so
		}
	}
	props := sip.TransportReadProps{Transport: "UDP", LocalAddr: sock.pc.LocalAddr(),
		RemoteAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5099}}
	msg := func(method string) []byte {
		return []byte(strings.ReplaceAll(method+" sip:bob@198.18.0.9 SIP/2.0\n"+
			"Via: SIP/2.0/UDP 127.0.0.2:5099;branch=z9hG4bK-ack1\n"+
			"From: <sip:a@example.com>;tag=1\nTo: <sip:bob@example.com>;tag=2\n"+
			"Call-ID: fastack\nCSeq: 1 "+method+"\nMax-Forwards: 70\nContent-Length: 0\n\n", "\n", "\r\n"))
	}
	if f.srv.fastAck(props, msg("BYE")) {
		t.Fatal("a BYE taken as an ACK")
	}
	if f.srv.fastAck(props, []byte("ACK nonsense\r\n\r\n")) {
		t.Fatal("an unparsable ACK taken: sipgo must see it")
	}
	if !f.srv.fastAck(props, msg("ACK")) {
		t.Fatal("a stray ACK left to sipgo")
	}
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, f.reg, "anyedge_sip_relay_denied_total", map[string]string{"reason": "stray_ack"}); n != 1 {
			return errorf("stray_ack %v, want 1", n)
		}
		return nil
	})
}
