//go:build linux

package bfd

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func listen(t *testing.T, m *Metrics) *Endpoint {
	t.Helper()
	e, err := Listen(loopback, WithPort(0), WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// waitState waits for a change to want on ch.
func waitState(t *testing.T, ch <-chan Change, want State, d time.Duration) Change {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case c := <-ch:
			if c.To == want {
				return c
			}
		case <-deadline:
			t.Fatalf("no change to %v within %v", want, d)
		}
	}
}

func changes() (chan Change, func(Change)) {
	ch := make(chan Change, 64)
	return ch, func(c Change) { ch <- c }
}

// Two endpoints on loopback bring a session Up over real sockets (TTL 255
// survives loopback), and closing one takes the other Down at once.
func TestEndpointsOverLoopback(t *testing.T) {

	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	a, b := listen(t, m), listen(t, nil)
	cha, fa := changes()
	chb, fb := changes()
	pa, err := a.Add(b.LocalAddr(), Config{}, fa)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Add(a.LocalAddr(), Config{}, fb); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitState(t, cha, Up, 3*time.Second)
	waitState(t, chb, Up, 3*time.Second)
	t.Logf("both Up after %v", time.Since(start))
	if pa.State() != Up {
		t.Fatalf("State() = %v", pa.State())
	}
	// The poll to 300 ms finishes.
	deadline := time.Now().Add(3 * time.Second)
	for pa.Info().Polling || pa.Info().TxInterval != DefaultMinTx {
		if time.Now().After(deadline) {
			t.Fatalf("poll did not finish: %+v", pa.Info())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.sessionUp.WithLabelValues("127.0.0.1")); got != 1 {
		t.Errorf("session_up = %v", got)
	}
	if _, err := a.Add(b.LocalAddr(), Config{}, nil); err == nil {
		t.Error("second session with the same peer accepted")
	}

	b.Close()
	c := waitState(t, cha, Down, time.Second)
	if c.Diag != DiagNeighborDown {
		t.Errorf("A went down with %v, want neighbor signaled (B sent AdminDown)", c.Diag)
	}
	a.Close()
	if _, err := a.Add(b.LocalAddr(), Config{}, nil); err == nil {
		t.Error("Add on a closed endpoint")
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", err, problems)
	}
}

// GTSM: a valid packet that arrives with TTL below 255 is dropped before
// the session sees it.
func TestEndpointDropsLowTTL(t *testing.T) {

	m := NewMetrics(nil)
	e := listen(t, m)
	ch, f := changes()
	// The peer is 127.0.0.1 at a port nobody listens on.
	if _, err := e.Add(netip.AddrPortFrom(loopback, 9), Config{}, f); err != nil {
		t.Fatal(err)
	}
	pkt := Packet{State: Down, DetectMult: 3, MyDiscr: 77, DesiredMinTx: 1000000, RequiredMinRx: 300000}.Marshal()
	send := func(ttl int, b []byte) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl) })
		}}
		c, err := d.Dial("udp4", e.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	waitCount := func(reason string, want float64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for testutil.ToFloat64(m.dropped.WithLabelValues(reason)) != want {
			if time.Now().After(deadline) {
				t.Fatalf("dropped{reason=%q} != %v", reason, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	send(64, pkt)
	waitCount(dropTTL, 1)
	select {
	case c := <-ch:
		t.Fatalf("session acted on a TTL 64 packet: %v", c)
	default:
	}
	send(255, pkt[:20])
	waitCount(dropMalformed, 1)
	// The same packet with TTL 255 is accepted: Down -> Init.
	send(255, pkt)
	waitState(t, ch, Init, 2*time.Second)
}
