package daemon

import (
	"fmt"
	"net/netip"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
)

// TxCap is the cluster capability that carries misdelivered SIP
// transaction messages (responses, CANCELs, ACKs) to the node that owns
// the transaction. It holds no state: nothing to sync.
const TxCap = "sip.tx"

// txMsg is the capability's only message type (append-only).
const txMsg cluster.MsgType = 1

// txNode is what the relay needs from the cluster node; *cluster.Node is
// one.
type txNode interface {
	Register(cluster.Capability) error
	Meta(id uint32) (cluster.NodeMeta, bool)
	IsUp(id uint32) bool
	Send(capName string, typ cluster.MsgType, to uint32, body []byte) error
	SendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte) int
	NodeBySIPHost(a netip.Addr) (uint32, bool)
}

// txRelay implements edge.TxRelay over the cluster. Frames only arrive
// over authenticated cluster links, so only peers can inject into our
// transactions.
type txRelay struct {
	n       txNode
	self    uint32
	sipAddr string // cluster.sip_addr
}

func (r txRelay) SelfAddr() string { return r.sipAddr }

func (r txRelay) IsPeer(a netip.Addr) bool {
	id, ok := r.n.NodeBySIPHost(a)
	return ok && id != r.self
}

func (r txRelay) SendTx(node uint32, msg []byte) error {
	if _, ok := r.n.Meta(node); !ok {
		return fmt.Errorf("node %d: %w", node, edge.ErrNodeUnknown)
	}
	if !r.n.IsUp(node) {
		return fmt.Errorf("node %d: %w", node, edge.ErrNodeDown)
	}
	return r.n.Send(TxCap, txMsg, node, msg)
}

func (r txRelay) BroadcastTx(msg []byte) int {
	return r.n.SendMatching(TxCap, txMsg, func(m cluster.NodeMeta) bool { return m.ID != r.self }, msg)
}

// newTxRelay registers the capability on the node (before it starts) and
// sets the SIP hook. The handler reaches the server through srv, set once
// the server is built: a frame before then is dropped.
func (d *Daemon) newTxRelay(hooks *edge.Hooks, srv **edge.Server) error {
	n, ok := d.node.(txNode)
	if !ok {
		d.log.Warn("the cluster node cannot carry capabilities: misdelivered SIP responses are dropped", "node", fmt.Sprintf("%T", d.node))
		return nil
	}
	r, err := registerTxRelay(n, d.cfg.Cluster.NodeID, d.cfg.Cluster.SIPAddr, srv)
	if err != nil {
		return err
	}
	hooks.TxRelay = r
	return nil
}

func registerTxRelay(n txNode, self uint32, sipAddr string, srv **edge.Server) (edge.TxRelay, error) {
	err := n.Register(cluster.Capability{
		Name: TxCap,
		Handle: func(from uint32, typ cluster.MsgType, body []byte) {
			if typ != txMsg || *srv == nil {
				return
			}
			(*srv).HandleTxRelay(from, body) // copies and returns at once
		},
	})
	if err != nil {
		return nil, err
	}
	return txRelay{n: n, self: self, sipAddr: sipAddr}, nil
}
