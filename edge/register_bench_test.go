package edge

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
)

// BenchmarkRegisterUDP measures the whole REGISTER path of a Server over
// loopback UDP: read filter, sipgo parse and server transaction, registrar,
// location store, NAT tracker, metrics and the 200 OK. Every op is a
// REGISTER of a new AoR (no auth), as in sipbench's register scenario.
// Clients keep a bounded window of requests outstanding per socket.
func BenchmarkRegisterUDP(b *testing.B) {
	const (
		clients = 4
		window  = 32
	)
	edge := benchServer(b, Timeouts{NoResponse: 500 * time.Millisecond})
	conns := benchConns(b, clients, 0)
	// Pre-built datagrams: client i sends requests i, i+clients, ...
	msgs := make([][][]byte, clients)
	for n := 0; n < b.N; n++ {
		i := n % clients
		msgs[i] = append(msgs[i], registerDatagram(conns[i].LocalAddr().(*net.UDPAddr), n))
	}

	var ok, other atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			credit := make(chan struct{}, window)
			for range window {
				credit <- struct{}{}
			}
			// pending: sent, not answered yet, by Call-ID; resent when
			// nothing arrives for a while (a datagram lost on loopback).
			var mu sync.Mutex
			pending := map[string][]byte{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 4096)
				giveUp := time.Now().Add(time.Minute)
				for got := 0; got < len(msgs[i]) && time.Now().Before(giveUp); {
					_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					n, err := c.Read(buf)
					if err != nil {
						mu.Lock()
						for _, m := range pending {
							_, _ = c.WriteToUDP(m, edge)
						}
						mu.Unlock()
						continue
					}
					if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 100 ")) {
						continue
					}
					id := benchCallID(buf[:n])
					mu.Lock()
					_, was := pending[id]
					delete(pending, id)
					mu.Unlock()
					if !was {
						continue // a duplicate answer to a resend
					}
					if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200 ")) {
						ok.Add(1)
					} else {
						other.Add(1)
					}
					got++
					credit <- struct{}{}
				}
			}()
			for _, m := range msgs[i] {
				select {
				case <-credit:
				case <-done:
					return
				}
				mu.Lock()
				pending[benchCallID(m)] = m
				mu.Unlock()
				if _, err := c.WriteToUDP(m, edge); err != nil {
					return
				}
			}
			<-done
		}()
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	b.StopTimer()
	if got := ok.Load(); got != int64(b.N) {
		b.Fatalf("%d of %d REGISTERs got 200 (%d other responses)", got, b.N, other.Load())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reg/s")
	// CPU of the whole process (server and the light clients) per
	// REGISTER: steadier than ns/op on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU is the user+system CPU time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func registerDatagram(from *net.UDPAddr, n int) []byte {
	user := fmt.Sprintf("bench%08d", n)
	return []byte(fmt.Sprintf("REGISTER sip:%[3]s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[1]s;branch=z9hG4bK-%[2]s;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:%[2]s@%[3]s>;tag=%[2]s\r\n"+
		"To: <sip:%[2]s@%[3]s>\r\n"+
		"Call-ID: %[2]s@bench\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:%[2]s@%[1]s;transport=udp>\r\n"+
		"Expires: 3600\r\n"+
		"User-Agent: bench\r\n"+
		"Content-Length: 0\r\n\r\n", from, user, domain))
}

// benchCallID is the Call-ID value of a message, "" without one.
func benchCallID(m []byte) string {
	_, rest, ok := bytes.Cut(m, []byte("\r\nCall-ID: "))
	if !ok {
		return ""
	}
	id, _, _ := bytes.Cut(rest, []byte("\r\n"))
	return string(id)
}

// benchServer starts a Server with one UDP listener on loopback and an
// in-memory store for a benchmark, closed at its cleanup, and returns the
// listener's address.
func benchServer(b *testing.B, timeouts Timeouts) *net.UDPAddr {
	b.Helper()
	cfg := Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}},
		Domains:   []string{domain},
		Timeouts:  timeouts,
	}
	srv, err := New(cfg, location.NewMemory(), WithRegistry(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return net.UDPAddrFromAddrPort(srv.Addr("udp"))
}

// benchConns opens n client sockets on loopback, closed at the
// benchmark's cleanup; rbuf > 0 sets their receive buffer.
func benchConns(b *testing.B, n, rbuf int) []*net.UDPConn {
	b.Helper()
	conns := make([]*net.UDPConn, n)
	for i := range conns {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		if rbuf > 0 {
			_ = c.SetReadBuffer(rbuf)
		}
		b.Cleanup(func() { _ = c.Close() })
		conns[i] = c
	}
	return conns
}
