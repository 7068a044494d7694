package edge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// confirmedDialogs is a DialogTracker that knows which dialogs were
// answered, and nothing else.
type confirmedDialogs struct {
	mu       sync.Mutex
	answered map[string]bool // by Call-ID
}

func (c *confirmedDialogs) Begin(DialogStart) error                      { return nil }
func (c *confirmedDialogs) Provisional(string, string, string, []string) {}
func (c *confirmedDialogs) Answer(string, string, string, []string)      {}
func (c *confirmedDialogs) InviteEnded(string, string)                   {}
func (c *confirmedDialogs) Request(DialogID, uint32) bool                { return false }
func (c *confirmedDialogs) Bye(DialogID) bool                            { return false }
func (c *confirmedDialogs) Confirmed(id DialogID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answered[id.CallID]
}

// An ACK from a trusted peer without a Route of ours is the hop-by-hop
// ACK of a failure unless the dialog was answered: it is dropped and
// counted, never sent on along its Request-URI; the end-to-end ACK of an
// answered dialog still is.
func TestStrayAckFromTrustedPeerNotForwarded(t *testing.T) {
	dialogs := &confirmedDialogs{answered: map[string]bool{"answered": true}}
	f := startServer(t, func(c *Config) { c.Trusted = []string{"127.0.0.1/32"} }, WithHooks(Hooks{Dialogs: dialogs}))
	peer, target := newRawPeer(t), newRawPeer(t)
	ack := func(callID string) *sip.Request {
		return parseReq(t, fmt.Sprintf(`ACK sip:bob@%[2]s SIP/2.0
Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-%[3]s;rport
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b1
Call-ID: %[3]s
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

`, peer.addr, target.addr, callID))
	}
	peer.send(f.udp, ack("failed"))
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, f.reg, "anyedge_sip_relay_denied_total", map[string]string{"reason": "stray_ack"}); n != 1 {
			return fmt.Errorf("stray ACKs dropped: %v, want 1", n)
		}
		return nil
	})
	peer.send(f.udp, ack("answered"))
	got := target.next("the answered dialog's ACK", isRequest(sip.ACK)).msg.(*sip.Request)
	if id := callID(got); id != "answered" {
		t.Fatalf("the target got the ACK of Call-ID %q first, want the answered dialog's (the failure's ACK must not travel on)", id)
	}
}
