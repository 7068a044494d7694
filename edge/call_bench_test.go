package edge

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCallUDP measures one proxied call over loopback UDP through a
// Server, as sipbench's calls scenario makes it: INVITE (100, 200), ACK
// and BYE (200) from a caller, through the location lookup to a
// registered callee that answers at once. Per call that is two server and
// two client transactions, the Record-Route and the loose-routed ACK and
// BYE. The UAs are raw sockets that copy header lines, light next to the
// server, so the process CPU per call is mostly the server's.
func BenchmarkCallUDP(b *testing.B) {
	const (
		clients = 4
		window  = 16 // calls in progress per caller socket
	)
	edge := benchServer(b, Timeouts{})

	uas, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = uas.Close() }()
	_ = uas.SetReadBuffer(4 << 20)
	registerCallee(b, uas, edge)
	uasDone := make(chan struct{})
	go func() { defer close(uasDone); benchUAS(uas) }()
	defer func() { _ = uas.Close(); <-uasDone }()

	conns := benchConns(b, clients, 1<<20)

	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	heap0 := ms0.HeapAlloc
	var ok, failed, resent atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for i, c := range conns {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := &benchUAC{c: c, edge: edge, id: i}
			u.run(n, window)
			ok.Add(u.ok)
			failed.Add(u.failed)
			resent.Add(u.resent)
		}()
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	b.StopTimer()
	if got := ok.Load(); got != int64(b.N) {
		b.Fatalf("%d of %d calls completed (%d failed)", got, b.N, failed.Load())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	b.ReportMetric(float64(resent.Load())/float64(b.N), "resends/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	// The heap still held per call, its transactions not yet over (Timer
	// J and RFC 6026's Timer L keep them 32 s): what every GC cycle marks.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc-heap0)/float64(b.N), "live-B/op")
}

// registerCallee registers the UAS socket as sip:callee@example.com.
func registerCallee(b *testing.B, c *net.UDPConn, edge *net.UDPAddr) {
	from := c.LocalAddr().(*net.UDPAddr)
	reg := []byte(fmt.Sprintf("REGISTER sip:%[2]s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-reg;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:callee@%[2]s>;tag=reg\r\n"+
		"To: <sip:callee@%[2]s>\r\n"+
		"Call-ID: reg@bench\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:callee@%[1]s>\r\n"+
		"Expires: 3600\r\n"+
		"Content-Length: 0\r\n\r\n", from, domain))
	buf := make([]byte, 4096)
	for try := 0; try < 10; try++ {
		if _, err := c.WriteToUDP(reg, edge); err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200 ")) {
			_ = c.SetReadDeadline(time.Time{})
			return
		}
		b.Fatalf("REGISTER: %s", bytes.SplitN(buf[:n], []byte("\r\n"), 2)[0])
	}
	b.Fatal("REGISTER: no answer")
}

// sipLines splits a message's header section into lines; the start line
// is first.
func sipLines(m []byte) [][]byte {
	head, _, _ := bytes.Cut(m, []byte("\r\n\r\n"))
	return bytes.Split(head, []byte("\r\n"))
}

// headerIs reports whether line is a header called name (full form).
func headerIs(line []byte, name string) bool {
	return len(line) > len(name) && line[len(name)] == ':' && bytes.EqualFold(line[:len(name)], []byte(name))
}

func headerValue(line []byte) []byte {
	_, v, _ := bytes.Cut(line, []byte(":"))
	return bytes.TrimSpace(v)
}

const benchSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// benchUAS answers every INVITE with 200 and every BYE with 200, and
// ignores the rest, until its socket is closed.
func benchUAS(c *net.UDPConn) {
	buf := make([]byte, 65536)
	local := c.LocalAddr().String()
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		lines := sipLines(buf[:n])
		invite := bytes.HasPrefix(lines[0], []byte("INVITE "))
		if !invite && !bytes.HasPrefix(lines[0], []byte("BYE ")) {
			continue
		}
		var out bytes.Buffer
		out.WriteString("SIP/2.0 200 OK\r\n")
		for _, l := range lines[1:] {
			switch {
			case headerIs(l, "Via"), headerIs(l, "From"), headerIs(l, "Call-ID"), headerIs(l, "CSeq"),
				invite && headerIs(l, "Record-Route"):
				out.Write(l)
				out.WriteString("\r\n")
			case headerIs(l, "To"):
				out.Write(l)
				if invite {
					out.WriteString(";tag=uas")
				}
				out.WriteString("\r\n")
			}
		}
		if invite {
			fmt.Fprintf(&out, "Contact: <sip:callee@%s>\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
				local, len(benchSDP), benchSDP)
		} else {
			out.WriteString("Content-Length: 0\r\n\r\n")
		}
		_, _ = c.WriteToUDP(out.Bytes(), from)
	}
}

// benchUAC makes calls from one socket with a bounded window of calls in
// progress. A call is INVITE, then on its 200 ACK and BYE, done on the
// BYE's 200. When nothing arrives for a while (a datagram lost on
// loopback) every pending call's last request is sent again.
type benchUAC struct {
	c    *net.UDPConn
	edge *net.UDPAddr
	id   int

	mu      sync.Mutex
	pending map[string]*benchCall

	ok, failed, resent int64
}

type benchCall struct {
	invite, ack, bye []byte
}

func (u *benchUAC) run(n, window int) {
	u.pending = map[string]*benchCall{}
	local := u.c.LocalAddr().String()
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		giveUp := time.Now().Add(2 * time.Minute)
		for got := 0; got < n && time.Now().Before(giveUp); {
			_ = u.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			m, err := u.c.Read(buf)
			if err != nil {
				u.resend()
				continue
			}
			if u.onResponse(buf[:m], local) {
				got++
				credit <- struct{}{}
			}
		}
	}()
	for k := 0; k < n; k++ {
		select {
		case <-credit:
		case <-done:
			return
		}
		id := fmt.Sprintf("c%d-%d", u.id, k) // also the From tag and branch suffix
		inv := fmt.Sprintf("INVITE sip:callee@%[3]s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-i%[2]s;rport\r\n"+
			"From: <sip:caller@%[3]s>;tag=f%[2]s\r\n"+
			"To: <sip:callee@%[3]s>\r\n"+
			"Call-ID: %[2]s@bench\r\n"+
			"CSeq: 1 INVITE\r\n"+
			"Contact: <sip:caller@%[1]s>\r\n"+
			"Max-Forwards: 70\r\n"+
			"Content-Type: application/sdp\r\n"+
			"Content-Length: %[4]d\r\n\r\n%[5]s", local, id, domain, len(benchSDP), benchSDP)
		call := &benchCall{invite: []byte(inv)}
		u.mu.Lock()
		u.pending[id] = call
		u.mu.Unlock()
		if _, err := u.c.WriteToUDP(call.invite, u.edge); err != nil {
			return
		}
	}
	<-done
}

func (u *benchUAC) resend() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, call := range u.pending {
		u.resent++
		if call.bye != nil {
			_, _ = u.c.WriteToUDP(call.ack, u.edge)
			_, _ = u.c.WriteToUDP(call.bye, u.edge)
			continue
		}
		_, _ = u.c.WriteToUDP(call.invite, u.edge)
	}
}

// onResponse handles one response; true when it ended a call.
func (u *benchUAC) onResponse(m []byte, local string) bool {
	lines := sipLines(m)
	if !bytes.HasPrefix(lines[0], []byte("SIP/2.0 ")) || len(lines[0]) < 11 {
		return false
	}
	code, _ := strconv.Atoi(string(lines[0][8:11]))
	if code < 200 {
		return false
	}
	var id, cseq, to, contact []byte
	var routes [][]byte
	for _, l := range lines[1:] {
		switch {
		case headerIs(l, "Call-ID"):
			id = headerValue(l)
		case headerIs(l, "CSeq"):
			cseq = headerValue(l)
		case headerIs(l, "To"):
			to = l
		case headerIs(l, "Contact"):
			contact = headerValue(l)
		case headerIs(l, "Record-Route"):
			routes = append(routes, headerValue(l))
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	id, _, _ = bytes.Cut(id, []byte("@"))
	call := u.pending[string(id)]
	if call == nil {
		return false // a retransmission for a finished call
	}
	if bytes.HasSuffix(cseq, []byte("BYE")) {
		delete(u.pending, string(id))
		if code == 200 {
			u.ok++
		} else {
			u.failed++
		}
		return true
	}
	if code >= 300 {
		delete(u.pending, string(id))
		u.failed++
		return true
	}
	if call.bye != nil {
		_, _ = u.c.WriteToUDP(call.ack, u.edge) // a retransmitted 200
		return false
	}
	target := bytes.Trim(contact, "<>")
	var route bytes.Buffer
	for i := len(routes) - 1; i >= 0; i-- {
		route.WriteString("Route: ")
		route.Write(routes[i])
		route.WriteString("\r\n")
	}
	inDialog := func(method string, seq int, branch string) []byte {
		return []byte(fmt.Sprintf("%[1]s %[2]s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %[3]s;branch=z9hG4bK-%[4]s%[5]s;rport\r\n"+
			"%[6]s"+
			"From: <sip:caller@%[7]s>;tag=f%[5]s\r\n"+
			"%[8]s\r\n"+
			"Call-ID: %[5]s@bench\r\n"+
			"CSeq: %[9]d %[1]s\r\n"+
			"Max-Forwards: 70\r\n"+
			"Content-Length: 0\r\n\r\n", method, target, local, branch, id, route.String(), domain, to, seq))
	}
	call.ack = inDialog("ACK", 1, "a")
	call.bye = inDialog("BYE", 2, "b")
	_, _ = u.c.WriteToUDP(call.ack, u.edge)
	_, _ = u.c.WriteToUDP(call.bye, u.edge)
	return false
}
