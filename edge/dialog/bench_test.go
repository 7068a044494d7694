package dialog

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

// The figures in docs/BENCHMARKS.md come from these benchmarks:
//
//	go test ./edge/dialog -run '^$' -bench . -benchtime 20000x -count 5

// realisticCall is one call's strings, of typical sizes.
func realisticCall(i int) (Start, string, []string) {
	id := fmt.Sprintf("%08x-4f2a-4c1e-9b7d-%012x@198.18.0.21", i, i*7919)
	return Start{CallID: id, FromTag: "as" + strconv.Itoa(i*31), User: "user" + strconv.Itoa(i%5000),
			Caller: "sip:user" + strconv.Itoa(i%5000) + "@example.com", Callee: "sip:dest" + strconv.Itoa(i%7000) + "@example.com", CSeq: 1},
		"bs" + strconv.Itoa(i*17),
		[]string{"<sip:203.0.113.10;lr;ftag=as" + strconv.Itoa(i*31) + ";sg=0123456789abcdef>"}
}

// callOps runs one call's life on s: INVITE, 180, 200, end of the
// transaction, BYE.
func callOps(s interface {
	Begin(Start) error
	Provisional(callID, fromTag, toTag string, route []string)
	Answer(callID, fromTag, toTag string, route []string)
	InviteEnded(callID, fromTag string)
	Bye(DialogID) bool
}, i int) error {
	st, tt, rr := realisticCall(i)
	if err := s.Begin(st); err != nil {
		return err
	}
	s.Provisional(st.CallID, st.FromTag, tt, rr)
	s.Answer(st.CallID, st.FromTag, tt, rr)
	s.InviteEnded(st.CallID, st.FromTag)
	if !s.Bye(DialogID{CallID: st.CallID, FromTag: st.FromTag, ToTag: tt}) {
		return fmt.Errorf("BYE of call %d found nothing", i)
	}
	return nil
}

// nopCluster has no partners.
type nopCluster struct{ self uint32 }

func (n nopCluster) Self() cluster.NodeMeta { return cluster.NodeMeta{ID: n.self, Region: "eu"} }
func (nopCluster) SendMatching(string, cluster.MsgType, cluster.Filter, []byte) int {
	return 0
}

// BenchmarkCall is one call's whole dialog life (create, early, confirm,
// end of INVITE, BYE) per op, single-threaded: on the pure store (the
// state machine), on the service alone (lock, metrics, encoding for
// replication with no partner), and on the service of a real node
// replicating to its partner over loopback TCP (the partner's work runs
// in the same process and is included in cpu-µs/op).
func BenchmarkCall(b *testing.B) {
	b.Run("store", func(b *testing.B) {
		s := NewStore(DefaultConfig(), 1)
		now := time.Now()
		b.ReportAllocs()
		cpu0 := cpuTime()
		defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op") }()
		for i := 0; b.Loop(); i++ {
			now = now.Add(time.Millisecond)
			if err := callOps(storeOps{s, now}, i); err != nil {
				b.Fatal(err)
			}
			s.TakeDirty()
			if i%1024 == 0 {
				s.Tick(now)
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		svc, err := New(DefaultConfig(), nopCluster{1})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = svc.Run(ctx) }()
		benchService(b, svc, nil)
		cancel()
		<-done
	})
	b.Run("replicated", func(b *testing.B) {
		p := startDialogPair(b, Config{})
		benchService(b, p.svc[0], p)
	})
}

type storeOps struct {
	s   *Store
	now time.Time
}

func (o storeOps) Begin(st Start) error { return o.s.Begin(o.now, st) }
func (o storeOps) Provisional(c, f, t string, r []string) {
	_ = o.s.Provisional(o.now, Key{Owner: 1, CallID: c, FromTag: f}, t, r)
}
func (o storeOps) Answer(c, f, t string, r []string) {
	_ = o.s.Answer(o.now, Key{Owner: 1, CallID: c, FromTag: f}, t, r)
}
func (o storeOps) InviteEnded(c, f string) {
	_ = o.s.InviteEnded(o.now, Key{Owner: 1, CallID: c, FromTag: f})
}
func (o storeOps) Bye(id DialogID) bool { _, err := o.s.Bye(o.now, id); return err == nil }

func benchService(b *testing.B, svc *Service, p *dialogPair) {
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		if err := callOps(svc, i); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 0 {
			svc.Tick()
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
	if p != nil {
		lags := p.takeLags()
		if len(lags) > 0 {
			slices.Sort(lags)
			b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "lag-p50-µs")
			b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "lag-p99-µs")
		}
	}
}

// BenchmarkMemoryPerCall holds b.N confirmed calls (realistic strings, one
// route entry) and reports the heap they take per call.
func BenchmarkMemoryPerCall(b *testing.B) {
	n := max(b.N, 10000)
	cfg := DefaultConfig()
	cfg.MaxDialogs = n + 1
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	s := NewStore(cfg, 1)
	now := time.Now()
	for i := range n {
		st, tt, rr := realisticCall(i)
		if err := s.Begin(now, st); err != nil {
			b.Fatal(err)
		}
		k := Key{Owner: 1, CallID: st.CallID, FromTag: st.FromTag}
		_ = s.Answer(now, k, tt, rr)
		_ = s.InviteEnded(now, k)
	}
	s.TakeDirty()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "bytes/call")
	runtime.KeepAlive(s)
}

// BenchmarkReplicationLag paces calls at a fixed rate on node 1 of a real
// pair on loopback and reports node 2's send→apply lag.
func BenchmarkReplicationLag(b *testing.B) {
	for _, rate := range []int{500, 2000} {
		b.Run(fmt.Sprintf("calls_per_s=%d", rate), func(b *testing.B) {
			p := startDialogPair(b, Config{})
			every := time.Second / time.Duration(rate)
			next := time.Now()
			for i := 0; b.Loop(); i++ {
				if err := callOps(p.svc[0], i); err != nil {
					b.Fatal(err)
				}
				next = next.Add(every)
				if d := time.Until(next); d > 0 {
					time.Sleep(d) // pacing the offered load, not synchronisation
				}
			}
			lags := p.takeLags()
			if len(lags) == 0 {
				b.Fatal("no lag observed")
			}
			slices.Sort(lags)
			b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "lag-p50-µs")
			b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "lag-p99-µs")
			b.ReportMetric(float64(len(lags)), "frames")
		})
	}
}

// cpuTime is the process's user+system CPU time so far: unlike wall
// time it does not depend on what else the machine runs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dialogPair is two real cluster nodes of region eu on loopback, each
// running a Service; node 2 records the lag of every frame it applies.
type dialogPair struct {
	nodes [2]*cluster.Node
	svc   [2]*Service
	mu    sync.Mutex
	lags  []time.Duration
}

func (p *dialogPair) takeLags() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lags
	p.lags = nil
	return l
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

func startDialogPair(tb testing.TB, cfg Config) *dialogPair {
	tb.Helper()
	p := &dialogPair{}
	addrs := []string{freeAddr(tb), freeAddr(tb)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 2 {
		cc := cluster.Config{
			NodeID: uint32(i + 1), Region: "eu", Listen: addrs[i], Key: "0123456789abcdef0123456789abcdef",
			Seed: i == 0, SeedSyncDelay: 200 * time.Millisecond,
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
		cp := s.Capability()
		if i == 1 {
			h := cp.Handle
			cp.Handle = func(from uint32, typ cluster.MsgType, body []byte) {
				if stamp, _, err := decodeFrame(body); err == nil {
					d := time.Duration(time.Now().UnixNano() - stamp)
					p.mu.Lock()
					p.lags = append(p.lags, d)
					p.mu.Unlock()
				}
				h(from, typ, body)
			}
		}
		if err := n.Register(cp); err != nil {
			tb.Fatal(err)
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
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	p.takeLags()
	return p
}
