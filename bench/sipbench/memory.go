package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
)

// memResult is the memory cost of stored bindings.
type memResult struct {
	Server    string        `json:"server"`
	Bindings  int           `json:"bindings"`
	Procs     int           `json:"sipp_processes"`
	Rate      int           `json:"rate"` // offered, all processes together
	LoadTime  time.Duration `json:"load_time"`
	Failed    int           `json:"failed"`
	Retrans   int           `json:"retransmissions"`
	Stored    int           `json:"stored"` // what the server says it holds
	Settle    time.Duration `json:"settle"` // wait after the load
	Settled   bool          `json:"settled"`
	Before    int64         `json:"before_bytes"` // RSS (edged), shm used (Kamailio)
	After     int64         `json:"after_bytes"`
	PerBind   float64       `json:"bytes_per_binding"`
	HeapLive  float64       `json:"heap_live_bytes,omitempty"`   // edged: lowest next_gc/2 while settling
	HeapInuse float64       `json:"heap_inuse_bytes,omitempty"`  // edged, at the end
	PeakRSS   int64         `json:"peak_rss_bytes,omitempty"`    // edged, during load and settling
	IdleCPU   float64       `json:"idle_cpu_cores,omitempty"`    // over 10 s once settled
	HeapBase  float64       `json:"heap_alloc_base,omitempty"`   // edged, before
	HeapPer   float64       `json:"heap_per_binding,omitempty"`  // (HeapLive-HeapBase)/N
	Keepalive bool          `json:"keepalive_enabled,omitempty"` // edged config
}

// loadBindings registers n unique users with long expiry through procs
// SIPp processes at rate in total, and waits for them.
func (b *bench) loadBindings(ctx context.Context, srv server, n, procs, rate int, sample func()) (memResult, error) {
	mr := memResult{Server: srv.Name(), Bindings: n, Procs: procs, Rate: rate}
	per := n / procs
	perRate := max(1, rate/procs)
	expect := time.Duration(float64(per) / float64(perRate) * float64(time.Second))
	var ps []*sippProc
	start := time.Now()
	for i := range procs {
		m := per
		if i == procs-1 {
			m = n - per*(procs-1)
		}
		p, err := b.startSipp(ctx, sippSpec{
			name: fmt.Sprintf("%s-mem-%d", srv.Name(), i), scenario: "reg_unique.xml",
			remote: srv.Addr(), expect: expect,
			args: []string{"-key", "domain", "example.com", "-key", "user", fmt.Sprintf("m%du", i),
				"-key", "expires", "3600", "-r", fmt.Sprint(perRate), "-rp", "1000", "-m", fmt.Sprint(m)},
		})
		if err != nil {
			for _, q := range ps {
				q.stop()
			}
			return mr, err
		}
		ps = append(ps, p)
	}
	// Sample (peak RSS) while the load runs; bounded by the processes'
	// own deadlines.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var errs []error
	for _, p := range ps {
	wait:
		for {
			select {
			case <-p.done:
				break wait
			case <-tick.C:
				if sample != nil {
					sample()
				}
			}
		}
		r, err := p.wait()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mr.Failed += r.failed + (r.created - r.success - r.failed)
		mr.Retrans += r.retrans
	}
	mr.LoadTime = time.Since(start)
	b.logf("    %-8s loaded %d bindings with %d SIPp processes at %d/s in %v (failed %d, retrans %d)",
		srv.Name(), n, procs, rate, mr.LoadTime.Round(time.Second), mr.Failed, mr.Retrans)
	return mr, errors.Join(errs...)
}

// edgedMemory measures the RSS growth of a fresh edged for n bindings.
// After the load it waits until the REGISTER transactions are gone (edged
// keeps a UDP REGISTER's response for retransmissions 32–36 s, Timer J,
// dropped by a sweep every 4 s; sipgo's TCP ones end sooner), two garbage
// collections ran after that, the scavenger had 30 s to return the freed
// pages, and the RSS has held within 1 % for 10 s:
// the garbage of the load phase must not count as binding memory. Two,
// because the scavenger skips memory that was densely used in the GC cycle
// that freed it until the next cycle: after the first collection an idle
// edged (the runtime forces one every 2 minutes) kept ~800 MB of the
// transactions' pages at 1,000,000 bindings. It also
// estimates the live heap: with GOGC=100 the runtime's next GC target is
// twice the heap marked live by the last collection, so the lowest
// go_memstats_next_gc_bytes/2 seen while settling is the live heap at a
// collection that ran between two keepalive scans.
func (b *bench) edgedMemory(ctx context.Context, n, procs, rate int, keepalive bool) (memResult, error) {
	dir, err := b.serverDir("mem-edged")
	if err != nil {
		return memResult{}, err
	}
	e, err := startEdged(ctx, edgedOpts{bin: b.edgedBin, dir: dir, keepalive: keepalive})
	if err != nil {
		return memResult{}, err
	}
	defer func() {
		if err := e.Stop(); err != nil {
			b.logf("edged: stop: %v", err)
		}
	}()
	before, err := rssBytes(e.PID())
	if err != nil {
		return memResult{}, err
	}
	base, err := e.metrics("go_memstats_alloc_bytes")
	if err != nil {
		return memResult{}, err
	}
	var peak int64 = before
	sample := func() {
		if r, err := rssBytes(e.PID()); err == nil {
			peak = max(peak, r)
		}
	}
	mr, err := b.loadBindings(ctx, e, n, procs, rate, sample)
	mr.Keepalive = keepalive
	mr.Before = before
	mr.HeapBase = base["go_memstats_alloc_bytes"]
	if err != nil {
		return mr, err
	}
	loaded := time.Now()
	const (
		txGone    = 42 * time.Second  // Timer J (32 s) to 36 s, and the 4 s sweep
		scavenge  = 30 * time.Second  // after that GC: the scavenger returns freed pages
		stableFor = 10 * time.Second  // RSS within 1 % for this long
		maxSettle = 420 * time.Second // then take what there is
	)
	gcAtTxGone := -1.0
	var rssPrevGC int64  // RSS before the settling collection, for the log
	var gcSeen time.Time // the settling (second) GC after the transactions ended
	minNextGC := math.Inf(1)
	trace, err := os.Create(filepath.Join(dir, "settle.csv"))
	if err != nil {
		return mr, err
	}
	defer trace.Close()
	fmt.Fprintln(trace, "seconds_after_load,rss_bytes,next_gc_bytes,gc_count")
	type sampleT struct {
		at  time.Time
		rss int64
	}
	var hist []sampleT
	err = poll(ctx, maxSettle, 2*time.Second, func() error {
		rss, err := rssBytes(e.PID())
		if err != nil {
			return err
		}
		peak = max(peak, rss)
		now := time.Now()
		m, err := e.metrics("go_gc_duration_seconds_count", "go_memstats_next_gc_bytes")
		if err != nil {
			return err
		}
		gc := m["go_gc_duration_seconds_count"]
		fmt.Fprintf(trace, "%.1f,%d,%.0f,%.0f\n", now.Sub(loaded).Seconds(), rss, m["go_memstats_next_gc_bytes"], gc)
		if now.Sub(loaded) < txGone {
			return errors.New("transactions of the load still alive")
		}
		if gcAtTxGone < 0 {
			gcAtTxGone = gc
		}
		if gc <= gcAtTxGone+1 {
			if gc > gcAtTxGone {
				rssPrevGC = rss
			}
			return errors.New("not two garbage collections since the transactions ended")
		}
		minNextGC = min(minNextGC, m["go_memstats_next_gc_bytes"])
		if gcSeen.IsZero() {
			gcSeen = now
		}
		hist = append(hist, sampleT{now, rss})
		if now.Sub(gcSeen) < scavenge {
			return errors.New("giving the scavenger time")
		}
		for _, h := range hist {
			if now.Sub(h.at) <= stableFor && math.Abs(float64(h.rss-rss)) > 0.01*float64(rss) {
				return fmt.Errorf("RSS still moving: %d → %d", h.rss, rss)
			}
		}
		return nil
	})
	mr.Settle = time.Since(loaded)
	mr.Settled = err == nil
	if err != nil {
		b.logf("    edged    memory did not settle in %v (%v): taking the last reading", maxSettle, err)
	}
	mr.After, err = rssBytes(e.PID())
	if err != nil {
		return mr, err
	}
	mr.PeakRSS = max(peak, mr.After)
	m, err := e.metrics("anyedge_sip_bindings", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return mr, err
	}
	mr.Stored = int(m["anyedge_sip_bindings"])
	mr.HeapInuse = m["go_memstats_heap_inuse_bytes"]
	mr.PerBind = float64(mr.After-mr.Before) / float64(n)
	if !math.IsInf(minNextGC, 1) {
		mr.HeapLive = minNextGC / 2
		mr.HeapPer = (mr.HeapLive - mr.HeapBase) / float64(n)
	}
	mr.IdleCPU, err = idleCPU(ctx, e)
	b.logf("    edged    RSS %d → %d MB for %d bindings: %.0f B/binding (live heap %.0f B/binding, peak RSS %d MB, %d MB before the last GC, settled %v after %v, idle %.2f cores)",
		mr.Before>>20, mr.After>>20, mr.Stored, mr.PerBind, mr.HeapPer, mr.PeakRSS>>20, rssPrevGC>>20, mr.Settled,
		mr.Settle.Round(time.Second), mr.IdleCPU)
	return mr, err
}

// kamailioMemory measures Kamailio's shared memory in use for n bindings
// (usrloc keeps contacts in shared memory; the workers' private memory
// does not grow with them).
func (b *bench) kamailioMemory(ctx context.Context, n, procs, rate int) (memResult, error) {
	dir, err := b.serverDir("mem-kamailio")
	if err != nil {
		return memResult{}, err
	}
	// About 1.2 KB of shared memory per contact with its transaction,
	// plus room: never the limit of the test.
	shm := max(256, int(float64(n)*3000/(1<<20)))
	k, err := startKamailio(ctx, kamailioOpts{bin: b.kamBin, cfg: b.kamCfg, dir: dir,
		workers: b.kamWorkers, shmMB: shm, pkgMB: 32})
	if err != nil {
		return memResult{}, err
	}
	defer func() {
		if err := k.Stop(); err != nil {
			b.logf("kamailio: stop: %v", err)
		}
	}()
	before, err := k.shmUsed(b.kamcmd)
	if err != nil {
		return memResult{}, err
	}
	mr, err := b.loadBindings(ctx, k, n, procs, rate, nil)
	mr.Before = before
	if err != nil {
		return mr, err
	}
	// tm frees a transaction 5 s (wait timer) after it completed.
	loaded := time.Now()
	var last int64 = -1
	err = poll(ctx, 60*time.Second, 2*time.Second, func() error {
		used, err := k.shmUsed(b.kamcmd)
		if err != nil {
			return err
		}
		prev := last
		last = used
		if time.Since(loaded) < 10*time.Second || prev < 0 || math.Abs(float64(used-prev)) > 0.001*float64(used) {
			return fmt.Errorf("shm used still moving: %d → %d", prev, used)
		}
		return nil
	})
	mr.Settle = time.Since(loaded)
	mr.Settled = err == nil
	mr.After = last
	mr.Stored = n // usrloc has no cheap count over ctl without kex stats; SIPp got 200 for each
	mr.PerBind = float64(mr.After-mr.Before) / float64(n)
	mr.IdleCPU, err = idleCPU(ctx, k)
	b.logf("    kamailio shm used %d → %d MB for %d bindings: %.0f B/binding (idle %.2f cores)",
		mr.Before>>20, mr.After>>20, n, mr.PerBind, mr.IdleCPU)
	return mr, err
}

// idleCPU is the CPU the server uses over 10 s without traffic (timers,
// keepalive scans, expiry).
func idleCPU(ctx context.Context, srv server) (float64, error) {
	c0, err := srv.CPU()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(10 * time.Second): // a measurement window, not a wait for an event
	}
	c1, err := srv.CPU()
	if err != nil {
		return 0, err
	}
	return (c1 - c0).Seconds() / time.Since(t0).Seconds(), nil
}
