package geo

import (
	"context"
	"flag"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/registrar"
)

// Benchmarks over two real cluster nodes (TCP on loopback, HMAC links):
//
//	go test -run '^$' -bench . -benchtime 3s ./geo
//	go test -run TestReplicationLag -geo.lag ./geo   # p99 lag at half the max rate
//
// BenchmarkSaveReplicated against BenchmarkSaveLocal is the cost of
// replication on the REGISTER path: Save returns only once the partner
// merged the change, so both run with 64 REGISTERs in flight, as a
// registrar handling concurrent requests does.

var (
	lagTest = flag.Bool("geo.lag", false, "run TestReplicationLag (two real nodes, a few seconds)")
	lagRate = flag.Float64("geo.lag.rate", 0.5, "TestReplicationLag's rate, as a fraction of the measured maximum")
)

const benchParallelism = 32 // × GOMAXPROCS goroutines

// realistic is the REGISTER of phone i as the registrar saves it: a NATed
// UA with an RFC 5626 instance (the same request as edge/location's
// benchmark, the worst realistic case for size).
func realistic(i int, now time.Time) *location.SaveRequest {
	return &location.SaveRequest{
		AoR: fmt.Sprintf("sip:u%07d@example.com", i), CallID: fmt.Sprintf("a84b4c76e66710-%07d@192.168.1.23", i), CSeq: 1, Now: now,
		MaxContacts: 10, Policy: location.PolicyReplaceOldest,
		Contacts: []location.Binding{{
			Contact:    fmt.Sprintf("sip:u%07d@192.168.1.23:5060;transport=udp", i),
			InstanceID: fmt.Sprintf("<urn:uuid:00000000-0000-1000-8000-%012d>", i), RegID: 1,
			Q: 1000, Expires: now.Add(time.Hour), UserAgent: "Yealink SIP-T46S 66.86.0.15",
			Received:  fmt.Sprintf("198.51.%d.%d:%d", i>>16&255, i>>8&255, 1024+i&0xffff),
			Transport: "udp", Socket: "udp:203.0.113.10:5060", NATed: true,
		}},
	}
}

// saveLoop runs Save on store from many goroutines, each REGISTER a
// refresh of one of n phones with a fresh CSeq.
func saveLoop(b *testing.B, store location.Store, n int) {
	var next atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1))
			req := realistic(i%n, time.Now())
			req.CSeq = uint32(i/n + 1)
			if _, err := store.Save(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
	// CPU time (user + system, every goroutine of the process, both nodes
	// for the replicated case) per save: unlike wall time it does not
	// depend on what else the machine runs.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// pair is two real nodes of region eu, each running a Service.
type pair struct {
	nodes [2]*cluster.Node
	svc   [2]*Service
	// lags records the partner's replication lags when recording is on.
	mu     sync.Mutex
	lags   []time.Duration
	record atomic.Bool
}

func startPair(tb testing.TB, cfg Config) *pair {
	tb.Helper()
	p := &pair{}
	addrs := []string{freeAddr(tb), freeAddr(tb)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 2 {
		cc := cluster.Config{
			NodeID: uint32(i + 1), Region: "eu", Listen: addrs[i], Key: "0123456789abcdef0123456789abcdef",
			SIPAddr: fmt.Sprintf("127.0.0.%d:5060", i+1), Seed: i == 0, SeedSyncDelay: 200 * time.Millisecond,
			Tags: []cluster.TagConfig{{Name: "home-eu", Region: "eu"}},
		}
		if i > 0 {
			cc.Join = addrs[:1]
		}
		n, err := cluster.New(cc)
		if err != nil {
			tb.Fatal(err)
		}
		s, err := New(cfg, n)
		if err != nil {
			tb.Fatal(err)
		}
		for _, cp := range s.Capabilities() {
			if i == 1 && cp.Name != MetaCap {
				h := cp.Handle
				cp.Handle = func(from uint32, typ cluster.MsgType, body []byte) {
					if p.record.Load() && typ == msgUpdate {
						if fh, err := decodeFrame(body); err == nil {
							d := time.Duration(time.Now().UnixNano() - fh.stamp)
							p.mu.Lock()
							p.lags = append(p.lags, d)
							p.mu.Unlock()
						}
					}
					h(from, typ, body)
				}
			}
			if err := n.Register(cp); err != nil {
				tb.Fatal(err)
			}
		}
		n.Subscribe(s.HandleEvent)
		if err := n.Start(ctx); err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
		p.nodes[i], p.svc[i] = n, s
	}
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, n := range p.nodes {
			n.Close()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !(p.svc[0].Synced() && p.svc[1].Synced() && p.nodes[0].IsUp(2) && p.nodes[1].IsUp(1)) {
		if time.Now().After(deadline) {
			tb.Fatal("the pair did not sync")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// BenchmarkSaveLocal is the REGISTER path without replication: the
// single-node in-memory store the registrar uses without a cluster, and
// the geo store with no partner to wait for.
func BenchmarkSaveLocal(b *testing.B) {
	b.Run("memory", func(b *testing.B) { saveLoop(b, location.NewMemory(), 100_000) })
	b.Run("geo-alone", func(b *testing.B) {
		s, err := New(Config{}, newFake(1, map[uint32]string{1: "eu"}))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = s.Run(ctx); close(done) }()
		saveLoop(b, s, 100_000)
		cancel()
		<-done
	})
}

// BenchmarkSaveReplicated: Save at node 1 of a real pair, each returning
// once node 2 acknowledged the change.
func BenchmarkSaveReplicated(b *testing.B) {
	p := startPair(b, Config{})
	saveLoop(b, p.svc[0], 100_000)
	st := p.svc[0].m.acks
	var out []string
	for _, r := range []string{"replicated", "degraded", "alone"} {
		c, _ := st.GetMetricWithLabelValues(r)
		out = append(out, fmt.Sprintf("%s=%v", r, counterValue(c)))
	}
	frames := counterValue(p.svc[0].m.sentBind)
	b.Logf("acks: %v; %.1f saves per replication frame", out, float64(b.N)/max(frames, 1))
}

// BenchmarkLookup: a fresh lookup of an AoR homed here, and of one homed
// on another node (a relay entry), among 100,000 AoRs.
func BenchmarkLookup(b *testing.B) {
	f := newFake(1, map[uint32]string{1: "eu", 2: "eu", 3: "us"})
	s, err := New(Config{}, f)
	if err != nil {
		b.Fatal(err)
	}
	s.inline = true
	s.refreshPeers(time.Now().UnixNano())
	const n = 100_000
	now := time.Now()
	ctx := context.Background()
	for i := range n {
		if _, err := s.Save(ctx, realistic(i, now)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		m := mrec{home: 3, region: "us", ver: version{T: now.UnixNano(), CSeq: 1, Node: 3}, expires: now.Add(time.Hour).UnixNano()}
		sh := s.st.shard(fmt.Sprintf("sip:r%07d@example.com", i))
		sh.mu.Lock()
		aor := fmt.Sprintf("sip:r%07d@example.com", i)
		s.st.mergeMeta(sh, sh.state(aor, true), m, now.UnixNano())
		sh.mu.Unlock()
	}
	for _, tc := range []struct{ name, prefix string }{{"local", "u"}, {"relay", "r"}} {
		aors := make([]string, n)
		for i := range aors {
			aors[i] = fmt.Sprintf("sip:%s%07d@example.com", tc.prefix, i)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if bs, _ := s.Lookup(ctx, aors[i%n]); len(bs) != 1 {
					b.Fatal("missing binding")
				}
			}
		})
	}
}

// TestReplicationLag measures, on a real pair over loopback, the time from
// a change at the home to its merge at the partner, at half the rate the
// pair sustains: p99 must stay under 5 ms.
func TestReplicationLag(t *testing.T) {
	if !*lagTest {
		t.Skip("timing test: run with -geo.lag")
	}
	p := startPair(t, Config{})
	ctx := context.Background()
	// The sustainable rate: concurrent REGISTERs for 2 s.
	var done atomic.Int64
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(stop); i += 64 {
				if _, err := p.svc[0].Save(ctx, realistic(i, time.Now())); err != nil {
					t.Error(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	maxRate := float64(done.Load()) / 2
	rate := maxRate * *lagRate
	t.Logf("max %.0f saves/s, measuring lag at %.0f/s", maxRate, rate)
	p.record.Store(true)
	gap := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var sent int
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		// Paced: the i-th REGISTER leaves at start + i×gap, from its own
		// goroutine (a registrar does not wait for one to send the next).
		if d := time.Until(start.Add(time.Duration(i) * gap)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := realistic(200_000+i, time.Now())
			if _, err := p.svc[0].Save(ctx, req); err != nil {
				t.Error(err)
			}
		}()
		sent++
	}
	wg.Wait()
	p.record.Store(false)
	p.mu.Lock()
	lags := slices.Clone(p.lags)
	p.mu.Unlock()
	slices.Sort(lags)
	if len(lags) == 0 || len(lags) < sent/200 {
		t.Fatalf("only %d frames for %d saves", len(lags), sent)
	}
	q := func(f float64) time.Duration { return lags[min(len(lags)-1, int(f*float64(len(lags))))] }
	t.Logf("%d saves, %d frames (lag of each frame's oldest change): p50 %v p90 %v p99 %v max %v", sent, len(lags), q(0.5), q(0.9), q(0.99), lags[len(lags)-1])
	if q(0.99) > 5*time.Millisecond {
		t.Errorf("p99 replication lag %v, want < 5ms", q(0.99))
	}
}

// rawRegister is phone i's REGISTER on the wire: an RFC 5626 instance,
// behind NAT (the Contact is private, the source public).
func rawRegister(i int, cseq uint32) []byte {
	return fmt.Appendf(nil, "REGISTER sip:example.com SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK-%d-%d;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:u%07d@example.com>;tag=f%d\r\n"+
		"To: <sip:u%07d@example.com>\r\n"+
		"Call-ID: a84b4c76e66710-%07d@192.168.1.23\r\n"+
		"CSeq: %d REGISTER\r\n"+
		"Contact: <sip:u%07d@192.168.1.23:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-%012d>\";reg-id=1;expires=3600\r\n"+
		"Supported: path, outbound\r\n"+
		"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"+
		"Content-Length: 0\r\n\r\n", i, cseq, i, i, i, i, cseq, i, i)
}

// BenchmarkRegister is the REGISTER path without its I/O: parse the
// request, run the registrar (RFC 3261 §10.3, Save) and serialise the
// 200 OK, with 64 REGISTERs in flight. Digest authentication, the
// transaction layer and the socket are left out, so the ratio of the two
// cases is a lower bound of the platform's REGISTER/s ratio.
func BenchmarkRegister(b *testing.B) {
	run := func(b *testing.B, store location.Store) {
		reg, err := registrar.New(registrar.DefaultConfig(), store)
		if err != nil {
			b.Fatal(err)
		}
		const n = 100_000
		src := registrar.Source{Addr: "198.51.100.7:40000", Transport: "udp", Socket: "udp:203.0.113.10:5060"}
		var next atomic.Int64
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(benchParallelism)
		cpu0 := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(next.Add(1))
				msg, err := sip.ParseMessage(rawRegister(i%n, uint32(i/n+1)))
				if err != nil {
					b.Error(err)
					return
				}
				res := reg.Handle(ctx, msg.(*sip.Request), src)
				if res.StatusCode != 200 {
					b.Errorf("%d %s", res.StatusCode, res.Reason)
					return
				}
				_ = res.String()
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registers/s")
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
	}
	b.Run("memory", func(b *testing.B) { run(b, location.NewMemory()) })
	b.Run("replicated", func(b *testing.B) { run(b, startPair(b, Config{}).svc[0]) })
}
