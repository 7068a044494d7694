package edge

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
)

func TestRegCacheGenerations(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newRegCache(func() time.Time { return now }, 32*time.Second, 30)
	e, created := c.begin("a")
	if !created {
		t.Fatal("first begin: not created")
	}
	if got, created := c.begin("a"); created || got != e {
		t.Fatal("a retransmission made a new entry")
	}
	if resp, _ := c.answer(e); resp != nil {
		t.Fatal("pending entry has an answer")
	}
	if !c.finish(e, []byte("200"), nil) || c.finish(e, []byte("500"), nil) {
		t.Fatal("finish: the first final response must win, and only it")
	}
	// Kept at least Timer J, gone by 9/8 of it, without a scan.
	for _, step := range []struct {
		at   time.Duration
		kept bool
	}{{31 * time.Second, true}, {32 * time.Second, true}, {35 * time.Second, true}, {36 * time.Second, false}} {
		now = time.Unix(1000, 0).Add(step.at)
		c.sweep()
		if found := c.has("a"); found != step.kept {
			t.Fatalf("at %v: kept %v, want %v", step.at, !step.kept, step.kept)
		}
	}
	// A long idle gap drops everything.
	c.begin("b")
	now = now.Add(time.Hour)
	if _, created := c.begin("b"); !created {
		t.Fatal("entry survived an idle hour")
	}
	if n := c.len(); n != 1 {
		t.Fatalf("after an idle hour: %d entries, want 1", n)
	}
}

// A finished transaction comes back from its stored bytes: the response
// and its destination as finished, IPv4 or IPv6, also when the entry was
// begun in a generation that rotated out before it finished.
func TestRegCacheFinishedRecords(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newRegCache(func() time.Time { return now }, 32*time.Second, 1000)
	v4 := &net.UDPAddr{IP: net.IPv4(198, 18, 0, 7), Port: 5060}
	v6 := &net.UDPAddr{IP: net.ParseIP("2001:db8::7"), Port: 5070}
	resp4 := []byte("SIP/2.0 200 OK\r\nVia: a\r\n\r\n")
	resp6 := []byte(strings.Repeat("x", 3*regChunk/2)) // bigger than a chunk
	a, _ := c.begin("a")
	b, _ := c.begin("b")
	d, _ := c.begin("d")
	if !c.finish(a, resp4, v4) {
		t.Fatal("finish a")
	}
	resp4[0] = 'X' // the cache keeps a copy
	now = now.Add(40 * time.Second)
	c.sweep() // b and d were begun in a generation dropped now
	if !c.finish(b, resp6, v6) || !c.finish(d, []byte("no dest"), nil) {
		t.Fatal("finish b, d")
	}
	if c.has("a") {
		t.Error("a outlived 9/8 of Timer J")
	}
	for _, tc := range []struct {
		key  string
		resp string
		dest *net.UDPAddr
	}{{"b", string(resp6), v6}, {"d", "no dest", nil}} {
		e, created := c.begin(tc.key)
		if created {
			t.Fatalf("%s: finished transaction not found", tc.key)
		}
		resp, dest := c.answer(e)
		if string(resp) != tc.resp {
			t.Errorf("%s: response %.40q, want %.40q", tc.key, resp, tc.resp)
		}
		if (dest == nil) != (tc.dest == nil) || (dest != nil && dest.String() != tc.dest.String()) {
			t.Errorf("%s: destination %v, want %v", tc.key, dest, tc.dest)
		}
		if c.finish(e, []byte("again"), nil) {
			t.Errorf("%s: finished twice", tc.key)
		}
	}
	a2, _ := c.begin("a")
	c.finish(a2, []byte("SIP/2.0 200 OK\r\n\r\n"), v4)
	e, created := c.begin("a")
	if resp, dest := c.answer(e); created || string(resp) != "SIP/2.0 200 OK\r\n\r\n" || dest.String() != v4.String() {
		t.Errorf("a again: created %v, %q to %v", created, resp, dest)
	}
}

func TestRegCacheBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newRegCache(func() time.Time { return now }, 32*time.Second, 90)
	for i := range 1000 {
		c.begin(fmt.Sprint(i))
	}
	if n := c.len(); n > 90 {
		t.Fatalf("%d entries kept, bound 90", n)
	}
}

// A UDP REGISTER retransmitted after its answer gets the same bytes again
// and is not handled twice; sipgo's transaction layer never sees it.
func TestRegisterRetransmissionResent(t *testing.T) {
	f := startServer(t, nil)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	laddr := pc.LocalAddr().String()
	msg := "REGISTER sip:" + domain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + laddr + ";branch=z9hG4bKretrans1;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:rt@" + domain + ">;tag=f1\r\n" +
		"To: <sip:rt@" + domain + ">\r\n" +
		"Call-ID: retrans-1\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:rt@" + laddr + ">\r\n" +
		"Expires: 300\r\n" +
		"Content-Length: 0\r\n\r\n"
	dst, err := net.ResolveUDPAddr("udp4", f.udp)
	if err != nil {
		t.Fatal(err)
	}
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		return string(buf[:n])
	}
	if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
		t.Fatal(err)
	}
	first := read()
	if !strings.HasPrefix(first, "SIP/2.0 200 ") {
		t.Fatalf("first answer: %q", first)
	}
	if !strings.Contains(first, "received=127.0.0.1") || !strings.Contains(first, "rport="+laddr[strings.LastIndexByte(laddr, ':')+1:]) {
		t.Fatalf("Via not completed per RFC 3581: %q", first)
	}
	if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
		t.Fatal(err)
	}
	if again := read(); again != first {
		t.Fatalf("retransmission answered differently:\n%q\n%q", again, first)
	}
	if n := counter(t, f.reg, "anyedge_sip_register_retransmissions_total", map[string]string{"outcome": "resent"}); n != 1 {
		t.Fatalf("resent retransmissions: %v, want 1", n)
	}
	if n := counter(t, f.reg, "anyedge_sip_requests_total", map[string]string{"method": "REGISTER"}); n != 1 {
		t.Fatalf("REGISTERs handled: %v, want 1 (the retransmission must not be)", n)
	}
	// The same user's next REGISTER (a new branch) is a new transaction.
	next := strings.NewReplacer("z9hG4bKretrans1", "z9hG4bKretrans2", "CSeq: 1 ", "CSeq: 2 ").Replace(msg)
	if _, err := pc.WriteTo([]byte(next), dst); err != nil {
		t.Fatal(err)
	}
	if res := read(); !strings.HasPrefix(res, "SIP/2.0 200 ") || res == first {
		t.Fatalf("refresh: %q", res)
	}
	if n := counter(t, f.reg, "anyedge_sip_requests_total", map[string]string{"method": "REGISTER"}); n != 2 {
		t.Fatalf("REGISTERs handled: %v, want 2", n)
	}
	bs, err := f.store.Lookup(t.Context(), "sip:rt@"+domain)
	if err != nil || len(bs) != 1 {
		t.Fatalf("bindings: %v, %v", bs, err)
	}
}

// Requests the fast path cannot key are left to sipgo, which answers
// them as before.
func TestRegKeyLeavesOddRequestsToSipgo(t *testing.T) {
	p := sip.NewParser()
	for _, tc := range []struct {
		via string
		ok  bool
	}{
		{"SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bKabc", true},
		{"SIP/2.0/UDP 198.18.0.1:5060;branch=abc", false}, // RFC 2543 branch
		{"SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK", false},
		{"SIP/2.0/UDP 198.18.0.1:5060", false},
	} {
		raw := "REGISTER sip:" + domain + " SIP/2.0\r\nVia: " + tc.via + "\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
		m, err := p.ParseSIP([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := regKey(m.(*sip.Request)); ok != tc.ok {
			t.Errorf("Via %q: keyed %v, want %v", tc.via, ok, tc.ok)
		}
	}
}

// blockingStore holds every Save until release is closed.
type blockingStore struct {
	*location.Memory
	release chan struct{}
}

func (b blockingStore) Save(ctx context.Context, req *location.SaveRequest) (*location.SaveResult, error) {
	<-b.release
	return b.Memory.Save(ctx, req)
}

// Past max_registers_in_flight a REGISTER is dropped unread and counted;
// its retransmission, once there is room, is handled as a new request.
func TestRegisterShedWhenInFlightFull(t *testing.T) {
	store := blockingStore{Memory: location.NewMemory(), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{
		Listeners:            []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}},
		Domains:              []string{domain},
		MaxRegistersInFlight: 1,
	}, store, WithRegistry(reg), WithLogger(testLog()))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			close(store.release)
		}
	}
	t.Cleanup(func() { release(); _ = srv.Close() })
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	laddr := pc.LocalAddr().String()
	dst := net.UDPAddrFromAddrPort(srv.Addr("udp"))
	register := func(user, branch string) []byte {
		return []byte("REGISTER sip:" + domain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + laddr + ";branch=z9hG4bK" + branch + ";rport\r\n" +
			"From: <sip:" + user + "@" + domain + ">;tag=f\r\nTo: <sip:" + user + "@" + domain + ">\r\n" +
			"Call-ID: " + branch + "\r\nCSeq: 1 REGISTER\r\nContact: <sip:" + user + "@" + laddr + ">\r\n" +
			"Content-Length: 0\r\n\r\n")
	}
	send := func(b []byte) {
		if _, err := pc.WriteTo(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	send(register("first", "shed1"))
	eventually(t, 5*time.Second, func() error {
		if n := srv.regInflight.Load(); n != 1 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	second := register("second", "shed2")
	send(second)
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, reg, "anyedge_sip_register_shed_total", nil); n != 1 {
			return fmt.Errorf("shed %v", n)
		}
		return nil
	})
	release()
	got := map[string]bool{}
	read := func() {
		t.Helper()
		buf := make([]byte, 4096)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no response: %v (got %v)", err, got)
		}
		res := string(buf[:n])
		if !strings.HasPrefix(res, "SIP/2.0 200 ") {
			t.Fatalf("answer: %q", res)
		}
		for _, u := range []string{"first", "second"} {
			if strings.Contains(res, "Call-ID: shed") && strings.Contains(res, "<sip:"+u+"@") {
				got[u] = true
			}
		}
	}
	read()
	if !got["first"] || got["second"] {
		t.Fatalf("after release: answered %v, want only the first", got)
	}
	eventually(t, 5*time.Second, func() error {
		if n := srv.regInflight.Load(); n != 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	send(second) // the UA's retransmission
	read()
	if !got["second"] {
		t.Fatalf("the retransmission of the shed REGISTER was not handled: %v", got)
	}
	if n := counter(t, reg, "anyedge_sip_requests_total", map[string]string{"method": "REGISTER"}); n != 2 {
		t.Fatalf("REGISTERs handled: %v, want 2", n)
	}
}
