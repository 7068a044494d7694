package proxy

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// fakeNet is an in-memory Transport: every client transaction it starts
// is recorded, and the test answers it.
type fakeNet struct {
	mu    sync.Mutex
	txs   []*fakeTx
	sent  chan *fakeTx
	wrote []sip.Message
}

func newFakeNet() *fakeNet { return &fakeNet{sent: make(chan *fakeTx, 64)} }

func (n *fakeNet) Request(_ context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	tx := &fakeTx{req: req, res: make(chan *sip.Response, 8), done: make(chan struct{})}
	n.mu.Lock()
	n.txs = append(n.txs, tx)
	n.mu.Unlock()
	n.sent <- tx
	return tx, nil
}

func (n *fakeNet) WriteRequest(req *sip.Request) error {
	n.mu.Lock()
	n.wrote = append(n.wrote, req)
	n.mu.Unlock()
	return nil
}

func (n *fakeNet) WriteResponse(res *sip.Response) error {
	n.mu.Lock()
	n.wrote = append(n.wrote, res)
	n.mu.Unlock()
	return nil
}

type fakeTx struct {
	req  *sip.Request
	res  chan *sip.Response
	done chan struct{}
	once sync.Once
}

func (t *fakeTx) Terminate()                             { t.once.Do(func() { close(t.done) }) }
func (t *fakeTx) OnTerminate(sip.FnTxTerminate) bool     { return true }
func (t *fakeTx) Done() <-chan struct{}                  { return t.done }
func (t *fakeTx) Err() error                             { return sip.ErrTransactionTimeout }
func (t *fakeTx) Responses() <-chan *sip.Response        { return t.res }
func (t *fakeTx) OnRetransmission(sip.FnTxResponse) bool { return true }

// answer sends a response to the branch request, with our Via on top as
// the network would deliver it.
func (t *fakeTx) answer(code int) {
	res := sip.NewResponseFromRequest(t.req, code, "X", nil)
	t.res <- res
}

type fakeServerTx struct {
	mu       sync.Mutex
	sent     []*sip.Response
	onCancel sip.FnTxCancel
	done     chan struct{}
}

func newFakeServerTx() *fakeServerTx { return &fakeServerTx{done: make(chan struct{})} }

func (s *fakeServerTx) Respond(res *sip.Response) error {
	s.mu.Lock()
	s.sent = append(s.sent, res)
	s.mu.Unlock()
	return nil
}
func (s *fakeServerTx) Acks() <-chan *sip.Request          { return nil }
func (s *fakeServerTx) Terminate()                         {}
func (s *fakeServerTx) OnTerminate(sip.FnTxTerminate) bool { return true }
func (s *fakeServerTx) Done() <-chan struct{}              { return s.done }
func (s *fakeServerTx) Err() error                         { return nil }
func (s *fakeServerTx) OnCancel(f sip.FnTxCancel) bool {
	s.mu.Lock()
	s.onCancel = f
	s.mu.Unlock()
	return true
}

func (s *fakeServerTx) codes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, r := range s.sent {
		out = append(out, r.StatusCode)
	}
	return out
}

func testSocket(transport string, port int) *Socket {
	return &Socket{Name: transport + ":127.0.0.1:" + strconv.Itoa(port), Transport: transport, Host: "127.0.0.1", Port: port,
		Laddr: sip.Addr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
}

func inbound(t *testing.T, method sip.RequestMethod) *sip.Request {
	t.Helper()
	raw := string(method) + " sip:bob@example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKabc;rport=5060;received=192.0.2.5\r\n" +
		"From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-1\r\n" +
		"CSeq: 1 " + string(method) + "\r\nMax-Forwards: 70\r\nContact: <sip:alice@192.0.2.5:5060>\r\nContent-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sip.Request)
}
