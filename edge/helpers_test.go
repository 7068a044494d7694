package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/edge/location"
)

const domain = "example.com"

// testLog is a discard logger, or stderr with ANYEDGE_TEST_LOG=1.
func testLog() *slog.Logger {
	if os.Getenv("ANYEDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type fixture struct {
	srv   *Server
	store *location.Memory
	reg   *prometheus.Registry
	udp   string // "127.0.0.1:port"
	tcp   string
}

// startServer runs an edge on 127.0.0.1 random UDP and TCP ports.
func startServer(t *testing.T, mutate func(*Config), opts ...Option) *fixture {
	t.Helper()
	ign := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ign) })
	cfg := Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}},
		Domains:   []string{domain},
		Timeouts:  Timeouts{NoResponse: 500 * time.Millisecond},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	store := location.NewMemory()
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, store, append([]Option{WithLogger(testLog()), WithRegistry(reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	f := &fixture{srv: srv, store: store, reg: reg, udp: srv.Addr("udp").String()}
	if ap := srv.Addr("tcp"); ap.IsValid() {
		f.tcp = ap.String()
	}
	return f
}

// ua is a test user agent: a sipgo UA listening on its own UDP (or TCP
// client) socket, answering INVITEs as told.
type ua struct {
	t         *testing.T
	user      string
	transport string
	sua       *sipgo.UserAgent
	cli       *sipgo.Client
	srv       *sipgo.Server
	addr      string // listening "ip:port" (udp)
	contact   sip.ContactHeader
	dialogs   *sipgo.DialogServerCache
	dua       *sipgo.DialogUA
	edge      string // edge address to send to
	pc        net.PacketConn

	mu       sync.Mutex
	answer   func(req *sip.Request) int // status for an INVITE (default 200)
	delay    time.Duration              // ring time before answering
	invites  chan *sip.Request
	cancels  chan struct{}
	byes     chan *sip.Request
	messages chan *sip.Request
}

func newUA(t *testing.T, user, transport, edge string) *ua {
	t.Helper()
	return newUAAt(t, user, transport, edge, "127.0.0.1")
}

// newUAAt makes a UA on another loopback address (127.0.0.2: not the
// upstreams' address, so not trusted).
func newUAAt(t *testing.T, user, transport, edge, host string) *ua {
	t.Helper()
	lg := slog.New(slog.DiscardHandler)
	sua, err := sipgo.NewUA(sipgo.WithUserAgent(user),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(lg)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(lg)))
	if err != nil {
		t.Fatal(err)
	}
	u := &ua{t: t, user: user, transport: transport, sua: sua, edge: edge,
		invites: make(chan *sip.Request, 8), cancels: make(chan struct{}, 8),
		byes: make(chan *sip.Request, 8), messages: make(chan *sip.Request, 8)}
	u.srv, err = sipgo.NewServer(sua, sipgo.WithServerLogger(lg))
	if err != nil {
		t.Fatal(err)
	}
	u.srv.OnInvite(u.onInvite)
	u.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = u.dialogCache().ReadAck(req, tx) })
	u.srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		u.byes <- req
		if err := u.dialogCache().ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "No Dialog", nil))
		}
	})
	u.srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		u.messages <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	u.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	var port int
	if transport == "udp" {
		pc, err := net.ListenPacket("udp4", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		u.addr = pc.LocalAddr().String()
		u.pc = pc
		port = pc.LocalAddr().(*net.UDPAddr).Port
		go func() { _ = u.srv.ServeUDP(pc) }()
		eventually(t, 2*time.Second, func() error {
			c, err := sua.TransportLayer().GetConnection("udp", u.addr)
			if err != nil {
				return err
			}
			_, _ = c.TryClose()
			return nil
		})
		u.cli, err = sipgo.NewClient(sua, sipgo.WithClientLogger(lg), sipgo.WithClientConnectionAddr(u.addr),
			sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	} else {
		// A TCP phone: it dials the edge and receives everything over that
		// one connection; its advertised port is not reachable.
		u.addr = "127.0.0.1:9" // discard port: must never be dialled
		port = 9
		u.cli, err = sipgo.NewClient(sua, sipgo.WithClientLogger(lg), sipgo.WithClientHostname(host))
	}
	if err != nil {
		t.Fatal(err)
	}
	u.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: host, Port: port}}
	if transport != "udp" {
		u.contact.Address.UriParams = sip.HeaderParams{{K: "transport", V: transport}}
	}
	u.mu.Lock()
	u.dialogs = sipgo.NewDialogServerCache(u.cli, u.contact)
	u.mu.Unlock()
	u.dua = &sipgo.DialogUA{Client: u.cli, ContactHDR: u.contact}
	t.Cleanup(u.close)
	return u
}

// close stops the UA: its socket first, so that nothing arrives once
// sipgo has cleared its connection pools, then sipgo, then a sweep of what
// sipgo's in-flight message goroutines opened meanwhile (see Server.sweep).
func (u *ua) close() {
	if u.pc != nil {
		_ = u.pc.Close()
	}
	_ = u.sua.Close()
	tp := u.sua.TransportLayer()
	for i := 0; i < 10; i++ {
		time.Sleep(5 * time.Millisecond)
		for _, n := range []string{"udp", "tcp"} {
			_ = tp.Pool(n).Clear()
		}
	}
}

func (u *ua) dialogCache() *sipgo.DialogServerCache {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.dialogs
}

// behave sets how u answers INVITEs: after delay, with code (0: never).
func (u *ua) behave(delay time.Duration, answer func(*sip.Request) int) {
	u.mu.Lock()
	u.delay, u.answer = delay, answer
	u.mu.Unlock()
}

func (u *ua) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	u.invites <- req
	u.mu.Lock()
	answer, delay := u.answer, u.delay
	u.mu.Unlock()
	code := 200
	if answer != nil {
		code = answer(req)
	}
	if code == 0 {
		return // no answer at all (a dead phone)
	}
	sess, err := u.dialogCache().ReadInvite(req, tx)
	if err != nil {
		return
	}
	_ = sess.Respond(180, "Ringing", nil)
	canceled := make(chan struct{})
	tx.OnCancel(func(*sip.Request) { close(canceled) })
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-canceled:
			u.cancels <- struct{}{}
			return
		}
	}
	if code == 200 {
		_ = sess.RespondSDP([]byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
	} else {
		_ = sess.Respond(code, "Nope", nil)
	}
	// Keep the handler (and the transaction) until the dialog ends or the
	// ACK times out, as a UAS would.
	select {
	case <-sess.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

func (u *ua) uri() sip.Uri { return sip.Uri{Scheme: "sip", User: u.user, Host: domain} }

// request builds a request from u to uri, sent to the edge.
func (u *ua) request(method sip.RequestMethod, uri sip.Uri) *sip.Request {
	req := sip.NewRequest(method, uri)
	req.AppendHeader(&sip.FromHeader{Address: u.uri(), Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: uri.User, Host: uri.Host}})
	req.AppendHeader(&u.contact)
	req.SetTransport(strings.ToUpper(u.transport))
	req.SetDestination(u.edge)
	return req
}

func (u *ua) do(req *sip.Request) *sip.Response {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := u.cli.Do(ctx, req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", req.Method, req.Recipient.String(), err)
	}
	return res
}

// register registers u's contact for expires seconds (0: unregister).
func (u *ua) register(expires int) *sip.Response {
	u.t.Helper()
	return u.do(u.registerRequest(expires))
}

func (u *ua) registerRequest(expires int) *sip.Request {
	req := u.request(sip.REGISTER, sip.Uri{Scheme: "sip", Host: domain})
	req.RemoveHeader("To")
	req.AppendHeader(&sip.ToHeader{Address: u.uri()})
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	return req
}

func mustStatus(t *testing.T, res *sip.Response, want int) {
	t.Helper()
	if res == nil || res.StatusCode != want {
		got := "<nil>"
		if res != nil {
			got = res.StartLine()
		}
		t.Fatalf("want %d, got %s", want, got)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

var _ = fmt.Sprintf

// resetDialogs rebuilds the dialog helpers after the contact changed.
func (u *ua) resetDialogs() {
	u.mu.Lock()
	u.dialogs = sipgo.NewDialogServerCache(u.cli, u.contact)
	u.mu.Unlock()
	u.dua = &sipgo.DialogUA{Client: u.cli, ContactHDR: u.contact}
}

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }
