package edge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// byeDialogs is a DialogTracker that records the dialogs ended by BYE.
type byeDialogs struct {
	confirmedDialogs
	mu   sync.Mutex
	byes []DialogID
}

func (b *byeDialogs) Bye(id DialogID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byes = append(b.byes, id)
	return true
}

func (b *byeDialogs) ended() []DialogID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]DialogID(nil), b.byes...)
}

// A UDP BYE is proxied statelessly: its retransmission leaves under the
// same branch (the next hop's transaction absorbs it), the 200 is relayed
// back along the Via, and the dialog tracker sees the dialog end.
func TestByeProxiedStatelessly(t *testing.T) {
	dialogs := &byeDialogs{}
	f := startServer(t, func(c *Config) { c.Trusted = []string{"127.0.0.1/32"} }, WithHooks(Hooks{Dialogs: dialogs}))
	uac, uas := newRawPeer(t), newRawPeer(t)
	bye := parseReq(t, fmt.Sprintf(`BYE sip:bob@%[2]s SIP/2.0
Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-bye1;rport
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b1
Call-ID: stateless-bye
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

`, uac.addr, uas.addr))
	uac.send(f.udp, bye)
	first := uas.next("the BYE", isRequest(sip.BYE)).msg.(*sip.Request)
	uac.send(f.udp, bye) // the UAC's retransmission
	again := uas.next("the retransmitted BYE", isRequest(sip.BYE)).msg.(*sip.Request)
	if b1, b2 := branchOf(first.Via()), branchOf(again.Via()); b1 != b2 || b1 == "z9hG4bK-bye1" {
		t.Fatalf("branches %q and %q: a retransmission must leave under the same branch of ours", b1, b2)
	}
	if n := len(first.GetHeaders("Via")); n != 2 {
		t.Fatalf("forwarded BYE has %d Vias, want ours on top of the UAC's", n)
	}
	if len(dialogs.ended()) != 0 {
		t.Fatal("dialog ended before the BYE was answered")
	}
	uas.send(f.udp, sip.NewResponseFromRequest(first, 200, "OK", nil))
	res := uac.next("200 to the BYE", isResponse(200, sip.BYE)).msg.(*sip.Response)
	if n := len(res.GetHeaders("Via")); n != 1 || branchOf(res.Via()) != "z9hG4bK-bye1" {
		t.Fatalf("relayed 200 has Vias %v, want only the UAC's", res.GetHeaders("Via"))
	}
	eventually(t, 5*time.Second, func() error {
		ended := dialogs.ended()
		if len(ended) != 1 || ended[0] != (DialogID{CallID: "stateless-bye", FromTag: "a1", ToTag: "b1"}) {
			return fmt.Errorf("dialogs ended: %+v", ended)
		}
		return nil
	})
	if n := counter(t, f.reg, "anyedge_sip_requests_total", map[string]string{"method": "BYE"}); n != 2 {
		t.Fatalf("BYEs handled: %v, want 2 (each copy is forwarded)", n)
	}
}
