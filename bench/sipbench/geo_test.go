package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchGeoSIPEnv turns TestGeoSIPBench on (make bench-geo-sip).
const BenchGeoSIPEnv = "ANYEDGE_BENCH_GEO_SIP"

var (
	gsConfigs = flag.String("geo-configs", "memory,geo-alone,geo-pair", "TestGeoSIPBench configurations: memory (one edged, in-memory location, no geo), geo-alone (one edged with geo, no partner: nothing to replicate to), geo-pair (the home and its HA partner: every binding replicated)")
	gsRates   = flag.String("geo-rates", "1000,2000,3000,4000,5000,5500,6000,6500,7000,7500,8000,8500,9000,9500,10000,11000,12000,13000,14000,16000", "offered REGISTER/s at the home, stepped up until a step is not sustained")
	gsCPUs    = flag.String("geo-cpus", "0:1", "HOME:OTHERS: the CPUs (taskset lists) of the measured home node, and of its partner and SIPp; empty: no pinning")
	gsLag     = flag.Duration("geo-lag", 20*time.Second, "length of the replication-lag step (geo-pair, at half its highest sustained rate)")
	gsNice    = flag.Int("geo-sipp-nice", 10, "niceness of SIPp, which shares the partner's CPUs: at 0 its bursts held the partner's core for 3-13 ms while a replication frame waited in the partner's socket (the partner's Go scheduler idle all along, in an execution trace); it still gets every idle cycle")
	gsSide    = flag.Bool("geo-interleave", true, "run the configurations side by side: all their nodes up at once, and at each rate every configuration still passing takes its step in turn (the order alternating), so that the machine's drift over a run falls on all of them alike; false: one configuration's whole ramp after another")
)

// geoRamp is one configuration's ramp in one run, plus for geo-pair the
// replication lag at half its highest rate.
type geoRamp struct {
	redisRamp
	Lag *lagStep `json:"lag,omitempty"`
}

// lagStep is the partner's replication-lag histogram over one fixed-rate
// step at the home.
type lagStep struct {
	Rate    int       `json:"rate"`
	Step    redisStep `json:"step"`
	Samples float64   `json:"samples"`
	// Quantiles interpolated within the histogram's buckets (powers of 2
	// from 50 µs), as PromQL's histogram_quantile does.
	P50, P90, P99 time.Duration
	// Within5ms is the share of samples in buckets wholly under 5 ms (up
	// to the highest bucket edge ≤ 5 ms): exact with edged's buckets,
	// which have an edge at 5 ms; a lower bound otherwise.
	Within5ms float64 `json:"share_le_5ms"`
	Max       string  `json:"max_bucket"` // the highest non-empty bucket's bound
}

// TestGeoSIPBench measures issue 4's replication figures with real edged
// processes and SIPp on loopback: the highest sustained REGISTER/s of a
// node replicating every binding to its HA partner, next to the same node
// with nothing to replicate to and to a node without geo, in one
// invocation, and the replication lag (send → merge on the partner, from
// the partner's anyedge_geo_replication_lag_seconds) at half the pair's
// highest rate.
//
// The figure is about one node, so the measured home is pinned to
// its own CPUs (-geo-cpus, default CPU 0) and its partner and the SIPp
// clients to the others: on this 2-core machine that makes the home a
// one-core node whose partner runs elsewhere, as on a real pair of
// servers. The home's CPU per REGISTER is reported too.
func TestGeoSIPBench(t *testing.T) {
	if os.Getenv(BenchGeoSIPEnv) == "" {
		t.Skipf("a benchmark of several minutes: set %s=1 (make bench-geo-sip)", BenchGeoSIPEnv)
	}
	rates := parseRates(t, "-geo-rates", *gsRates)
	configs := strings.Split(*gsConfigs, ",")
	for _, c := range configs {
		if !slices.Contains([]string{"memory", "geo-alone", "geo-pair"}, c) {
			t.Fatalf("-geo-configs: unknown configuration %q (memory, geo-alone, geo-pair)", c)
		}
	}
	homeCPUs, otherCPUs, pinned := strings.Cut(*gsCPUs, ":")
	if *gsCPUs != "" && (!pinned || homeCPUs == "" || otherCPUs == "") {
		t.Fatalf("-geo-cpus: want HOME:OTHERS (e.g. 0:1), got %q", *gsCPUs)
	}
	if pinned && runtime.NumCPU() < 2 {
		t.Fatalf("-geo-cpus needs 2 CPUs or more; pass -geo-cpus '' on this machine")
	}
	if *rsRuns < 1 || *rsRuns > 10 || *rsStep < time.Second || *rsStep > 5*time.Minute || *gsLag < time.Second {
		t.Fatalf("-runs 1..10, -step 1s..5m, -geo-lag ≥ 1s")
	}
	b := redisBench(t)
	b.sippCPUs, b.sippNice = otherCPUs, *gsNice
	b.logf("machine: %s; home CPUs %q, partner and SIPp CPUs %q, SIPp niceness %d", machine(), homeCPUs, otherCPUs, *gsNice)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	var ramps []geoRamp
	for run := range *rsRuns {
		order := rotated(configs, run)
		var rs []geoRamp
		if *gsSide {
			var err error
			if rs, err = b.geoSideBySide(ctx, order, rates, run, homeCPUs, otherCPUs); err != nil {
				t.Errorf("run %d: %v", run+1, err)
			}
		} else {
			for _, cfg := range order {
				gr, err := b.geoRamp(ctx, cfg, rates, run, homeCPUs, otherCPUs)
				if err != nil {
					t.Errorf("run %d %s: %v", run+1, cfg, err)
					gr.Error = err.Error()
				}
				rs = append(rs, gr)
			}
		}
		for _, gr := range rs {
			if len(gr.Steps) > 0 {
				ramps = append(ramps, gr)
			}
			b.logf("run %d %s: highest sustained %d REGISTER/s", run+1, gr.Config, gr.Max)
		}
	}
	b.writeResults(t, "geo", map[string]any{
		"machine": machine(), "versions": versions(b), "step": rsStep.String(), "rates": rates, "cpus": *gsCPUs, "sipp_nice": *gsNice,
		"interleaved": *gsSide, "ramps": ramps,
	}, geoSummary(configs, ramps))
}

// geoConfig is one configuration's nodes and ramp within a run.
type geoConfig struct {
	gr    geoRamp
	nodes []*edged
	done  bool // its ramp has failed a step (or errored)
}

// startGeo starts cfg's edged processes (the home on homeCPUs, a partner
// on otherCPUs) and warms the home up.
func (b *bench) startGeo(ctx context.Context, cfg string, run int, homeCPUs, otherCPUs string) (*geoConfig, error) {
	g := &geoConfig{gr: geoRamp{redisRamp: redisRamp{Config: cfg, Run: run + 1, Nodes: 1}}}
	if cfg == "geo-pair" {
		g.gr.Nodes = 2
	}
	geo := cfg != "memory"
	var err error
	g.nodes, err = b.startNodes(ctx, cfg, g.gr.Nodes, func(i int, o *edgedOpts) {
		o.cpus = homeCPUs
		if i > 0 {
			o.cpus = otherCPUs
		}
		if geo {
			// Both nodes are eligible for the region's HA tag: each is
			// the other's partner.
			o.extra, o.tags = "geo: {}\n", []string{"{name: home-bench, region: bench}"}
		}
	})
	if err != nil {
		return g, err
	}
	_, err = b.redisStep(ctx, g.nodes[:1], 100, fmt.Sprintf("%s%dwarm", cfg, run), 2*time.Second)
	return g, err
}

// step runs the home's step i of the ladder and records it; it reports
// whether the step was sustained.
func (g *geoConfig) step(ctx context.Context, b *bench, run, i, rate int) (bool, error) {
	st, err := b.redisStep(ctx, g.nodes[:1], rate, fmt.Sprintf("%s%dr%d", g.gr.Config, run, i), b.stepDur)
	if err != nil {
		return false, err
	}
	g.gr.Steps = append(g.gr.Steps, st)
	if st.ZeroFail {
		g.gr.MaxZeroFail = rate
	}
	if st.Sustained {
		g.gr.Max, g.gr.AtMax = rate, &g.gr.Steps[len(g.gr.Steps)-1]
	}
	return st.Sustained, nil
}

// settle waits until the configuration's nodes are idle after a failed
// step (SIPp's retransmissions answered, replication drained), so that
// the next configuration's step does not share the CPU with the drain.
func (g *geoConfig) settle(ctx context.Context) error {
	if len(g.nodes) > 1 {
		return settleReplicas(ctx, g.nodes[0], g.nodes[1])
	}
	return settleIdle(ctx, g.nodes[0])
}

// geoRamp starts cfg's edged processes and steps the home's rate up until
// a step is not sustained; for geo-pair it then runs the lag step.
func (b *bench) geoRamp(ctx context.Context, cfg string, rates []int, run int, homeCPUs, otherCPUs string) (geoRamp, error) {
	g, err := b.startGeo(ctx, cfg, run, homeCPUs, otherCPUs)
	defer func() { b.stopNodes(g.nodes) }()
	if err != nil {
		return g.gr, err
	}
	for i, rate := range rates {
		ok, err := g.step(ctx, b, run, i, rate)
		if err != nil {
			return g.gr, err
		}
		if !ok {
			break
		}
	}
	err = b.geoLag(ctx, g, run)
	return g.gr, err
}

// geoSideBySide runs the configurations' ladders interleaved: all their
// nodes are up at once (each home pinned to homeCPUs, idle while another
// configuration's step runs), and at each rate every configuration still
// passing takes its step, in an order that alternates from rate to rate.
// Noise that drifts over minutes (the shared machine's neighbours) then
// falls on every configuration alike, which a ramp after a ramp does not
// give: session 5's sequential runs spread 7000–9000/s for one
// configuration.
func (b *bench) geoSideBySide(ctx context.Context, configs []string, rates []int, run int, homeCPUs, otherCPUs string) ([]geoRamp, error) {
	var gs []*geoConfig
	defer func() {
		for _, g := range gs {
			b.stopNodes(g.nodes)
		}
	}()
	out := func(err error) ([]geoRamp, error) {
		var rs []geoRamp
		for _, g := range gs {
			if err != nil && g.gr.Error == "" {
				g.gr.Error = err.Error()
			}
			rs = append(rs, g.gr)
		}
		return rs, err
	}
	for _, cfg := range configs {
		g, err := b.startGeo(ctx, cfg, run, homeCPUs, otherCPUs)
		gs = append(gs, g)
		if err != nil {
			return out(fmt.Errorf("%s: %w", cfg, err))
		}
	}
	for i, rate := range rates {
		order := gs
		if i%2 == 1 {
			order = slices.Clone(gs)
			slices.Reverse(order)
		}
		left := 0
		for _, g := range order {
			if g.done {
				continue
			}
			ok, err := g.step(ctx, b, run, i, rate)
			if err != nil {
				return out(fmt.Errorf("%s: %w", g.gr.Config, err))
			}
			if !ok {
				g.done = true
				if err := g.settle(ctx); err != nil {
					return out(fmt.Errorf("%s: after its failed step: %w", g.gr.Config, err))
				}
				continue
			}
			left++
		}
		if left == 0 {
			break
		}
	}
	// The lag step runs alone on the machine: an idle node with hundreds
	// of thousands of bindings still collects (the runtime forces a cycle
	// every 2 min), on the measured home's CPU, and with the others up the
	// lag's p99 was 11–14 ms where the pair alone gave 3–4 ms.
	for _, g := range gs {
		if g.gr.Config != "geo-pair" || g.gr.Max == 0 {
			b.stopNodes(g.nodes)
			g.nodes = nil
		}
	}
	for _, g := range gs {
		if err := b.geoLag(ctx, g, run); err != nil {
			return out(fmt.Errorf("%s: %w", g.gr.Config, err))
		}
	}
	return out(nil)
}

// geoLag runs geo-pair's lag step: the partner's replication lag at half
// the highest sustained rate, once the ramp's last (failed) step has
// drained (its retransmissions and queued frames would otherwise land in
// the lag step's histogram). Other configurations have no lag step.
func (b *bench) geoLag(ctx context.Context, g *geoConfig, run int) error {
	if g.gr.Config != "geo-pair" || g.gr.Max == 0 {
		return nil
	}
	home, partner := g.nodes[0], g.nodes[1]
	if err := settleReplicas(ctx, home, partner); err != nil {
		return err
	}
	before, err := partner.lagBuckets()
	if err != nil {
		return err
	}
	half := g.gr.Max / 2
	st, err := b.redisStep(ctx, g.nodes[:1], half, fmt.Sprintf("%s%dlag", g.gr.Config, run), *gsLag)
	if err != nil {
		return err
	}
	after, err := partner.lagBuckets()
	if err != nil {
		return err
	}
	ls := lagFromBuckets(before, after)
	ls.Rate, ls.Step = half, st
	g.gr.Lag = &ls
	b.logf("  lag at %d/s on the partner: %.0f samples, p50 %v, p90 %v, p99 %v, ≤5 ms %.2f%%, highest bucket %s",
		half, ls.Samples, ls.P50, ls.P90, ls.P99, 100*ls.Within5ms, ls.Max)
	return nil
}

// settleIdle waits until the node has used under 5 % of a core for 2 s
// (an idle edged's timers use about 1 %).
func settleIdle(ctx context.Context, e *edged) error {
	last, err := e.CPU()
	if err != nil {
		return err
	}
	at, since := time.Now(), time.Now()
	return poll(ctx, 90*time.Second, 500*time.Millisecond, func() error {
		cpu, err := e.CPU()
		if err != nil {
			return err
		}
		now := time.Now()
		busy := float64(cpu-last) / float64(now.Sub(at))
		last, at = cpu, now
		if busy > 0.05 {
			since = now
			return fmt.Errorf("busy: %.1f%% of a core", 100*busy)
		}
		if now.Sub(since) < 2*time.Second {
			return fmt.Errorf("idle for %v", now.Sub(since).Round(time.Millisecond))
		}
		return nil
	})
}

// settleReplicas waits until the partner holds as many replicas as the
// home holds bindings, unchanged for 2 s (SIPp's retransmissions of a
// failed step have stopped and the replication queue is empty).
func settleReplicas(ctx context.Context, home, partner *edged) error {
	last, since := -1.0, time.Now()
	return poll(ctx, 90*time.Second, 200*time.Millisecond, func() error {
		h, err := home.metrics(`anyedge_geo_bindings{role="home"}`)
		if err != nil {
			return err
		}
		p, err := partner.metrics(`anyedge_geo_bindings{role="replica"}`)
		if err != nil {
			return err
		}
		hv, pv := h[`anyedge_geo_bindings{role="home"}`], p[`anyedge_geo_bindings{role="replica"}`]
		if hv != pv || hv != last {
			last, since = hv, time.Now()
			return fmt.Errorf("home %v bindings, partner %v replicas", hv, pv)
		}
		if time.Since(since) < 2*time.Second {
			return fmt.Errorf("%v bindings, stable for %v", hv, time.Since(since).Round(time.Millisecond))
		}
		return nil
	})
}

// bucket is one cumulative histogram bucket: count of samples ≤ le.
type bucket struct {
	le    float64
	count float64
}

// lagBuckets reads the binding capability's replication-lag histogram.
func (e *edged) lagBuckets() ([]bucket, error) {
	const prefix = `anyedge_geo_replication_lag_seconds_bucket{cap="bind",le="`
	var out []bucket
	err := e.scanMetrics(func(text string) error {
		line, ok := strings.CutPrefix(text, prefix)
		if !ok {
			return nil
		}
		le, rest, ok := strings.Cut(line, `"} `)
		if !ok {
			return fmt.Errorf("/metrics: %q", text)
		}
		var err error
		b := bucket{le: math.Inf(1)}
		if le != "+Inf" {
			if b.le, err = strconv.ParseFloat(le, 64); err != nil {
				return fmt.Errorf("/metrics: %q: %w", text, err)
			}
		}
		if b.count, err = strconv.ParseFloat(strings.TrimSpace(rest), 64); err != nil {
			return fmt.Errorf("/metrics: %q: %w", text, err)
		}
		out = append(out, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("/metrics: no anyedge_geo_replication_lag_seconds{cap=\"bind\"} (is geo on?)")
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	return out, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// lagFromBuckets is the histogram of the samples between two readings.
func lagFromBuckets(before, after []bucket) lagStep {
	d := make([]bucket, len(after))
	for i, a := range after {
		d[i] = a
		if i < len(before) && before[i].le == a.le {
			d[i].count -= before[i].count
		}
	}
	var ls lagStep
	if len(d) == 0 {
		return ls
	}
	total := d[len(d)-1].count
	ls.Samples = total
	if total <= 0 {
		return ls
	}
	ls.P50, ls.P90, ls.P99 = bucketQuantile(d, 0.5), bucketQuantile(d, 0.9), bucketQuantile(d, 0.99)
	for i, b := range d {
		if b.le <= 5e-3+1e-9 {
			ls.Within5ms = b.count / total
		}
		if (i == 0 && b.count > 0) || (i > 0 && b.count > d[i-1].count) {
			ls.Max = strconv.FormatFloat(b.le, 'g', 4, 64)
		}
	}
	return ls
}

// bucketQuantile interpolates the q-quantile linearly within its bucket.
func bucketQuantile(d []bucket, q float64) time.Duration {
	total := d[len(d)-1].count
	rank := q * total
	lo, prev := 0.0, 0.0
	for _, b := range d {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return time.Duration(lo * float64(time.Second))
			}
			frac := 1.0
			if b.count > prev {
				frac = (rank - prev) / (b.count - prev)
			}
			return time.Duration((lo + (b.le-lo)*frac) * float64(time.Second))
		}
		lo, prev = b.le, b.count
	}
	return 0
}

// geoSummary is the Markdown table: per configuration, the median over
// runs of the highest sustained rate, its ratio to the geo-alone and
// memory medians, and the lag figures.
func geoSummary(configs []string, ramps []geoRamp) string {
	med := map[string]int{}
	var sb strings.Builder
	sb.WriteString("| configuration | highest sustained REGISTER/s at the home (runs; median) | home CPU per REGISTER there (runs) | avg response there (runs) | load average there (runs) | the next step (runs) |\n|---|---|---|---|---|---|\n")
	for _, c := range configs {
		var maxes []int
		var cpu, avg, load, next []string
		for _, r := range ramps {
			if r.Config != c {
				continue
			}
			maxes = append(maxes, r.Max)
			if r.AtMax != nil {
				cpu = append(cpu, r.AtMax.CPUPerOp)
				avg = append(avg, fmt.Sprintf("%.1f ms", r.AtMax.AvgMs))
				load = append(load, strings.Fields(r.AtMax.Load + " ?")[0])
			} else {
				cpu, avg, load = append(cpu, "–"), append(avg, "–"), append(load, "–")
			}
			if i := slices.IndexFunc(r.Steps, func(s redisStep) bool { return !s.Sustained }); i >= 0 {
				next = append(next, fmt.Sprintf("%d/s: %s", r.Steps[i].Rate, r.Steps[i].Why))
			} else {
				next = append(next, "none (top of the ladder)")
			}
		}
		if len(maxes) == 0 {
			continue
		}
		s := slices.Clone(maxes)
		slices.Sort(s)
		med[c] = s[len(s)/2]
		fmt.Fprintf(&sb, "| %s | %s; **%d** | %s | %s | %s | %s |\n", c, joinInts(maxes), med[c],
			strings.Join(cpu, ", "), strings.Join(avg, ", "), strings.Join(load, ", "), strings.Join(next, "; "))
	}
	if p := med["geo-pair"]; p > 0 {
		for _, base := range []string{"geo-alone", "memory"} {
			if m := med[base]; m > 0 {
				fmt.Fprintf(&sb, "\ngeo-pair / %s (medians): **%.2f**", base, float64(p)/float64(m))
				if r := runRatios(ramps, "geo-pair", base); len(r) > 0 {
					fmt.Fprintf(&sb, "; run by run %s (median **%.2f**)", joinRatios(r), medianFloat(r))
				}
				sb.WriteString("\n")
			}
		}
	}
	var lags []string
	for _, r := range ramps {
		if r.Lag != nil {
			l := r.Lag
			lags = append(lags, fmt.Sprintf("| %d | %d/s | %.0f | %v | %v | **%v** | %.2f%% | %s |", r.Run, l.Rate, l.Samples,
				l.P50.Round(time.Microsecond), l.P90.Round(time.Microsecond), l.P99.Round(time.Microsecond), 100*l.Within5ms, l.Max))
		}
	}
	if len(lags) > 0 {
		sb.WriteString("\n| run | lag step (half the pair's highest) | samples | p50 | p90 | p99 | ≤ 5 ms | highest bucket (s) |\n|---|---|---|---|---|---|---|---|\n")
		sb.WriteString(strings.Join(lags, "\n") + "\n")
	}
	return sb.String()
}

// runRatios is num's highest sustained rate over den's, run by run, for
// the runs that have both.
func runRatios(ramps []geoRamp, num, den string) []float64 {
	by := map[[2]any]int{}
	for _, r := range ramps {
		by[[2]any{r.Run, r.Config}] = r.Max
	}
	var out []float64
	for _, r := range ramps {
		if r.Config != num {
			continue
		}
		if d := by[[2]any{r.Run, den}]; d > 0 {
			out = append(out, float64(r.Max)/float64(d))
		}
	}
	return out
}

func joinRatios(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strings.Join(s, ", ")
}

func medianFloat(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func TestRunRatios(t *testing.T) {
	ramps := []geoRamp{
		{redisRamp: redisRamp{Config: "geo-alone", Run: 1, Max: 8000}},
		{redisRamp: redisRamp{Config: "geo-pair", Run: 1, Max: 6000}},
		{redisRamp: redisRamp{Config: "geo-pair", Run: 2, Max: 7000}},
		{redisRamp: redisRamp{Config: "geo-alone", Run: 2, Max: 7000}},
		{redisRamp: redisRamp{Config: "geo-pair", Run: 3, Max: 5000}}, // no geo-alone in run 3
	}
	r := runRatios(ramps, "geo-pair", "geo-alone")
	if len(r) != 2 || r[0] != 0.75 || r[1] != 1 {
		t.Fatalf("ratios %v, want [0.75 1]", r)
	}
	if m := medianFloat(r); m != 0.875 {
		t.Errorf("median %v, want 0.875", m)
	}
}

func TestLagFromBuckets(t *testing.T) {
	before := []bucket{{1e-3, 10}, {2e-3, 10}, {4e-3, 10}, {math.Inf(1), 10}}
	// 100 new samples: 50 ≤ 1 ms, 40 in (1, 2] ms, 9 in (2, 4] ms, 1 above.
	after := []bucket{{1e-3, 60}, {2e-3, 100}, {4e-3, 109}, {math.Inf(1), 110}}
	ls := lagFromBuckets(before, after)
	if ls.Samples != 100 {
		t.Fatalf("samples %v, want 100", ls.Samples)
	}
	if ls.P50 != time.Millisecond {
		t.Errorf("p50 %v, want 1ms (the 50th sample is the top of the first bucket)", ls.P50)
	}
	if ls.P90 != 2*time.Millisecond {
		t.Errorf("p90 %v, want 2ms", ls.P90)
	}
	if ls.P99 != 4*time.Millisecond {
		t.Errorf("p99 %v, want 4ms (the 99th sample is the last of the (2, 4] ms bucket)", ls.P99)
	}
	if ls.Within5ms != 0.99 {
		t.Errorf("share ≤ 5 ms %v, want 0.99 (buckets wholly under it: ≤ 4 ms)", ls.Within5ms)
	}
	if ls.Max != "+Inf" {
		t.Errorf("highest bucket %q, want +Inf", ls.Max)
	}
}
