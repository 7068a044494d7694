package daemon

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
)

// fakeTxNode records what the relay sends.
type fakeTxNode struct {
	metas map[uint32]cluster.NodeMeta
	up    map[uint32]bool
	caps  []cluster.Capability
	sent  []uint32
	bcast []uint32
}

func (f *fakeTxNode) Register(c cluster.Capability) error { f.caps = append(f.caps, c); return nil }
func (f *fakeTxNode) Meta(id uint32) (cluster.NodeMeta, bool) {
	m, ok := f.metas[id]
	return m, ok
}
func (f *fakeTxNode) IsUp(id uint32) bool { return f.up[id] }
func (f *fakeTxNode) NodeBySIPHost(a netip.Addr) (uint32, bool) {
	for id, m := range f.metas {
		if ap, err := netip.ParseAddrPort(m.SIPAddr); err == nil && ap.Addr().Unmap() == a.Unmap() {
			return id, true
		}
	}
	return 0, false
}
func (f *fakeTxNode) Send(capName string, typ cluster.MsgType, to uint32, body []byte) error {
	if capName != TxCap || typ != txMsg {
		return errors.New("wrong capability or type")
	}
	f.sent = append(f.sent, to)
	return nil
}
func (f *fakeTxNode) SendMatching(capName string, typ cluster.MsgType, fl cluster.Filter, body []byte) int {
	n := 0
	for id, m := range f.metas {
		if f.up[id] && fl(m) {
			f.bcast = append(f.bcast, id)
			n++
		}
	}
	return n
}

func TestTxRelay(t *testing.T) {
	n := &fakeTxNode{
		metas: map[uint32]cluster.NodeMeta{1: {ID: 1, SIPAddr: "198.18.1.11:5060"}, 2: {ID: 2, SIPAddr: "198.18.1.12:5060"}, 3: {ID: 3}},
		up:    map[uint32]bool{1: true, 2: true},
	}
	r := txRelay{n: n, self: 1, sipAddr: "198.18.1.11:5060"}
	if err := r.SendTx(2, []byte("x")); err != nil || len(n.sent) != 1 || n.sent[0] != 2 {
		t.Fatalf("send to an up node: %v, sent %v", err, n.sent)
	}
	if err := r.SendTx(3, nil); !errors.Is(err, edge.ErrNodeDown) {
		t.Errorf("send to a down node: %v, want ErrNodeDown", err)
	}
	if err := r.SendTx(9, nil); !errors.Is(err, edge.ErrNodeUnknown) {
		t.Errorf("send to an unknown node: %v, want ErrNodeUnknown", err)
	}
	if got := r.BroadcastTx(nil); got != 1 || n.bcast[0] != 2 {
		t.Errorf("broadcast went to %v (%d), want node 2 only: not self, not down", n.bcast, got)
	}
	if !r.IsPeer(netip.MustParseAddr("198.18.1.12")) || r.IsPeer(netip.MustParseAddr("198.18.1.11")) ||
		r.IsPeer(netip.MustParseAddr("203.0.113.10")) {
		t.Error("IsPeer: want true for node 2's SIP host only (not self, not others)")
	}
}
