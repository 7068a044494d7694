package redisloc

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/internal/redistest"
)

// The benchmarks behind docs/BENCHMARKS.md ("Redis Cluster location"):
// make bench-redis.
//
// One cluster serves every benchmark and every test that leaves it
// healthy (each on its own key prefix); the tests that kill nodes start
// their own.
var (
	sharedOnce    sync.Once
	sharedCluster *redistest.Cluster
)

func sharedRedis(tb testing.TB) *redistest.Cluster {
	tb.Helper()
	redistest.Require(tb)
	sharedOnce.Do(func() {
		// The cluster outlives the test that starts it: TestMain stops it.
		sharedCluster = redistest.Start(&keepAlive{TB: tb}, redistest.Options{})
	})
	if sharedCluster == nil {
		tb.Fatal("the shared Redis Cluster failed to start (see the first test that used it)")
	}
	return sharedCluster
}

// keepAlive defers nothing to the benchmark that started the cluster:
// TestMain stops it and removes its directory.
type keepAlive struct{ testing.TB }

func (k *keepAlive) Cleanup(func()) {}

func (k *keepAlive) TempDir() string {
	d, err := os.MkdirTemp("", "redisloc-bench-")
	if err != nil {
		k.Fatal(err)
	}
	benchDirs = append(benchDirs, d)
	return d
}

var benchDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCluster != nil {
		sharedCluster.KillAll()
	}
	for _, d := range benchDirs {
		_ = os.RemoveAll(d)
	}
	os.Exit(code)
}

// rtCounter counts network round trips: one per command or pipeline sent
// to a cluster node.
type rtCounter struct{ n atomic.Int64 }

func (c *rtCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (c *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}

func (c *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(1); return next(ctx, cmds) }
}

const benchAoRs = 10000

// registerLoad is REGISTER refreshes over benchAoRs AoRs, one contact
// each, with a CSeq that grows per AoR.
type registerLoad struct {
	cseq [benchAoRs]atomic.Uint32
	next atomic.Int64
}

func (l *registerLoad) req(now time.Time) *location.SaveRequest {
	return l.reqFor(int(l.next.Add(1)%benchAoRs), now)
}

// reqFor is the next REGISTER of AoR i. Concurrent callers must use
// disjoint AoRs, or their CSeqs may arrive out of order.
func (l *registerLoad) reqFor(i int, now time.Time) *location.SaveRequest {
	aor := fmt.Sprintf("sip:user%d@example.com", i)
	return &location.SaveRequest{AoR: aor, CallID: "bench-" + aor, CSeq: l.cseq[i].Add(1), Now: now,
		Contacts: []location.Binding{{Contact: fmt.Sprintf("sip:user%d@198.51.100.7:5060", i), Q: 1000,
			Expires: now.Add(time.Hour), UserAgent: "SIPp bench", Received: "198.51.100.7:5060", Transport: "udp",
			Socket: "udp:203.0.113.10:5060"}}}
}

// BenchmarkRegister is Store.Save throughput: in memory, on Redis from one
// node, and from two nodes (two stores, each its own connections) at once.
// 16 goroutines per node (b.SetParallelism) stand for the SIP handlers;
// the timeout is 5 s so that a loaded machine measures slowness, not
// errors.
func BenchmarkRegister(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		m := location.NewMemory()
		runSaves(b, []location.Store{m}, nil)
	})
	for _, wait := range []int{0, 1} {
		for _, nodes := range []int{1, 2} {
			b.Run(fmt.Sprintf("redis/nodes=%d/wait=%d", nodes, wait), func(b *testing.B) {
				c := sharedRedis(b)
				rt := &rtCounter{}
				p := freshPrefix()
				var stores []location.Store
				for i := range nodes {
					stores = append(stores, newStoreCfg(b, Config{Addrs: c.Addrs(), KeyPrefix: p, WaitReplicas: wait, Timeout: 5 * time.Second}, uint32(i+1), WithHook(rt)))
				}
				runSaves(b, stores, rt)
			})
		}
	}
}

func runSaves(b *testing.B, stores []location.Store, rt *rtCounter) {
	load := &registerLoad{}
	ctx := context.Background()
	var rounds int64
	if rt != nil {
		rounds = rt.n.Load()
	}
	var which atomic.Int64
	par := max(1, 16*len(stores)/testingProcs())
	b.SetParallelism(par)
	workers := par * testingProcs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := int(which.Add(1)) - 1
		s := stores[w%len(stores)]
		// Each goroutine owns the AoRs i ≡ w (mod workers).
		for k := 0; pb.Next(); k++ {
			i := (w + workers*k) % (benchAoRs - benchAoRs%workers)
			if _, err := s.Save(ctx, load.reqFor(i, time.Now())); err != nil {
				b.Error(err)
				return
			}
		}
	})
	el := time.Since(start)
	b.ReportMetric(float64(b.N)/el.Seconds(), "REGISTER/s")
	if rt != nil {
		b.ReportMetric(float64(rt.n.Load()-rounds)/float64(b.N), "roundtrips/op")
	}
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkLookup measures single lookups one after the other (latency,
// not throughput) and reports p50 and p99.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	fill := func(s location.Store) {
		load := &registerLoad{}
		for range benchAoRs {
			if _, err := s.Save(ctx, load.req(time.Now())); err != nil {
				b.Fatal(err)
			}
		}
	}
	measure := func(b *testing.B, s location.Store) {
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			bs, err := s.Lookup(ctx, fmt.Sprintf("sip:user%d@example.com", i%benchAoRs))
			lat = append(lat, time.Since(t0))
			if err != nil || len(bs) != 1 {
				b.Fatalf("lookup: %d bindings, %v", len(bs), err)
			}
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("memory", func(b *testing.B) {
		m := location.NewMemory()
		fill(m)
		measure(b, m)
	})
	b.Run("redis", func(b *testing.B) {
		s := newStoreCfg(b, Config{Addrs: sharedRedis(b).Addrs(), KeyPrefix: freshPrefix()}, 1)
		fill(s)
		measure(b, s)
	})
}

// BenchmarkMemoryPerBinding stores benchAoRs one-contact AoRs and reports
// the growth of used_memory summed over the masters (replicas hold as
// much again).
func BenchmarkMemoryPerBinding(b *testing.B) {
	c := sharedRedis(b)
	ctx := context.Background()
	for range b.N {
		s := newStoreCfg(b, Config{Addrs: c.Addrs(), KeyPrefix: freshPrefix()}, 1)
		before, err := c.MemoryUsed()
		if err != nil {
			b.Fatal(err)
		}
		load := &registerLoad{}
		for range benchAoRs {
			if _, err := s.Save(ctx, load.req(time.Now())); err != nil {
				b.Fatal(err)
			}
		}
		s.Tick(ctx) // the home index is part of the cost
		after, err := c.MemoryUsed()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(after-before)/benchAoRs, "bytes/binding")
	}
}
