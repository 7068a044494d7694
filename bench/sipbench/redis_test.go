package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyedge/anyedge/internal/redistest"
)

// BenchRedisSIPEnv turns TestRedisSIPBench on (make bench-redis-sip): it
// runs for minutes, so a plain go test skips it.
const BenchRedisSIPEnv = "ANYEDGE_BENCH_REDIS_SIP"

var (
	rsEdged   = flag.String("edged", "../../bin/edged", "the edged binary (TestRedisSIPBench)")
	rsRates   = flag.String("rates", "100,250,500,750,1000,1250,1500,2000,2500,3000,4000,5000", "offered REGISTER/s per node, stepped up until a step is not sustained")
	rsStep    = flag.Duration("step", 10*time.Second, "length of one fixed-rate step")
	rsRuns    = flag.Int("runs", 3, "runs; each configuration starts fresh in each, in a rotated order")
	rsConfigs = flag.String("configs", "memory,db-1,db-2", "configurations: memory (one edged, in-memory location), db-1 (one edged, db-driven), db-2 (two edged, db-driven, one Redis Cluster)")
	rsOut     = flag.String("out", "", "results directory (default: a new one under the temp dir)")
	rsAll     = flag.Bool("all-steps", false, "run every rate even after a step that is not sustained (same work for every configuration, e.g. to compare Redis commands per REGISTER)")
)

// redisConfig is one configuration of TestRedisSIPBench.
type redisConfig struct {
	name  string
	nodes int
	db    bool
}

var redisConfigs = map[string]redisConfig{
	"memory": {"memory", 1, false},
	"db-1":   {"db-1", 1, true},
	"db-2":   {"db-2", 2, true},
}

// redisStep is one fixed-rate step of a configuration: each node offered
// Rate REGISTER/s by its own SIPp, all at once.
type redisStep struct {
	Rate     int     `json:"rate_per_node"`
	Load     string  `json:"load_average"` // at the start of the step
	Calls    int     `json:"calls"`        // all nodes
	Success  int     `json:"success"`
	Failed   int     `json:"failed"`
	Retrans  int     `json:"retransmissions"`
	AvgMs    float64 `json:"avg_ms"` // SIPp's response times, all nodes
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	Samples  int     `json:"samples"`
	CPUPerOp string  `json:"server_cpu_per_op"` // the edged processes'
	// ZeroFail: every REGISTER of every node got its 200.
	ZeroFail bool `json:"zero_fail"`
	// Sustained: ZeroFail, and on every node sipbench's test too: the run
	// kept pace (SIPp was not held back by open calls) and at most 1 % of
	// the REGISTERs were retransmitted (answered later than 500 ms).
	Sustained bool   `json:"sustained"`
	Why       string `json:"why,omitempty"` // why not sustained
}

// redisRamp is one configuration's steps in one run.
type redisRamp struct {
	Config string     `json:"config"`
	Nodes  int        `json:"nodes"`
	Run    int        `json:"run"`
	Max    int        `json:"max_per_node"` // highest sustained rate; 0: none
	AtMax  *redisStep `json:"at_max,omitempty"`
	// MaxZeroFail is the highest rate of the ramp with no failure (the
	// ramp stops at the first step not sustained, which may have none).
	MaxZeroFail int `json:"max_zero_fail_per_node"`
	// RedisCmdsPerReg is the commands the Redis masters processed during
	// the ramp (INFO total_commands_processed, which counts the commands
	// a script runs too: a save is about 6) per REGISTER answered 200: the
	// saves and whatever the nodes do in the background (index flushes,
	// reaping, health checks, keepalive listings). 0 in memory mode.
	RedisCmdsPerReg float64     `json:"redis_commands_per_register,omitempty"`
	Error           string      `json:"error,omitempty"` // the ramp ended early
	Steps           []redisStep `json:"steps"`
}

// TestRedisSIPBench measures REGISTER/s under SIPp for the db-driven
// location (issue 8) next to the in-memory one, in one invocation against
// one six-node Redis Cluster on loopback (internal/redistest, AOF
// everysec). Each configuration runs fresh edged processes and steps the
// offered rate up (bench/sipp/reg_unique.xml, a new user per REGISTER,
// -rate_period 1 s, -m bounded) until a step is not sustained (a failed
// REGISTER, SIPp falling behind, or over 1 % retransmitted); it reports
// the highest sustained rate per node, with SIPp's average response time
// and the load average, and the highest rate with no failure. The db-2
// configuration is two edged processes in one anyedge cluster sharing the
// Redis Cluster, each driven by its own SIPp at the step's rate.
func TestRedisSIPBench(t *testing.T) {
	if os.Getenv(BenchRedisSIPEnv) == "" {
		t.Skipf("a benchmark of several minutes: set %s=1 (make bench-redis-sip)", BenchRedisSIPEnv)
	}
	rates := parseRates(t, "-rates", *rsRates)
	var configs []redisConfig
	for _, n := range strings.Split(*rsConfigs, ",") {
		c, ok := redisConfigs[strings.TrimSpace(n)]
		if !ok {
			t.Fatalf("-configs: unknown configuration %q (memory, db-1, db-2)", n)
		}
		configs = append(configs, c)
	}
	if *rsRuns < 1 || *rsRuns > 10 || *rsStep < time.Second || *rsStep > 5*time.Minute {
		t.Fatalf("-runs 1..10, -step 1s..5m")
	}
	b := redisBench(t)
	rc := redistest.Start(t, redistest.Options{})
	b.logf("redis cluster: %s", strings.Join(rc.Addrs(), " "))
	b.logf("machine: %s", machine())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	var ramps []redisRamp
	for run := range *rsRuns {
		for _, cfg := range rotated(configs, run) {
			if cfg.db {
				flushRedis(t, rc)
			}
			rr, err := b.redisRamp(ctx, rc, cfg, rates, run)
			if err != nil {
				// Keep the other configurations' figures: the summary
				// shows this ramp's steps up to the error.
				t.Errorf("run %d %s: %v", run+1, cfg.name, err)
				rr.Error = err.Error()
			}
			if len(rr.Steps) > 0 {
				ramps = append(ramps, rr)
			}
			b.logf("run %d %s: highest rate with no failure %d/s per node", run+1, cfg.name, rr.Max)
		}
	}
	b.writeResults(t, "redis", map[string]any{
		"machine": machine(), "versions": versions(b), "step": rsStep.String(), "rates": rates, "ramps": ramps,
	}, redisSummary(configs, ramps))
}

// parseRates reads a comma-separated, rising list of rates from a flag.
func parseRates(t *testing.T, flagName, list string) []int {
	t.Helper()
	var rates []int
	for _, f := range strings.Split(list, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r < 10 || r > 50000 {
			t.Fatalf("%s: %q is not a rate in 10..50000", flagName, f)
		}
		rates = append(rates, r)
	}
	if !slices.IsSorted(rates) {
		t.Fatalf("%s must go up: %v", flagName, rates)
	}
	return rates
}

// rotated is the order of the configurations in a run: each run starts
// with the next one, so no configuration always runs first (or last, on
// a machine whose load drifts).
func rotated[T any](configs []T, run int) []T {
	order := slices.Clone(configs)
	for range run % len(order) {
		order = append(order[1:], order[0])
	}
	return order
}

// writeResults writes NAME-results.json and NAME-summary.md to the
// results directory and prints the summary.
func (b *bench) writeResults(t *testing.T, name string, results any, summary string) {
	t.Helper()
	j, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.out, name+"-results.json"), j, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.out, name+"-summary.md"), []byte(summary), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Print(summary)
	b.logf("results in %s", b.out)
}

// redisBench is the bench settings TestRedisSIPBench shares with sipbench's
// step runner.
func redisBench(t *testing.T) *bench {
	t.Helper()
	// rttFreq 100: SIPp drops the response times after the last multiple
	// of it, at most 99 of thousands here.
	b := &bench{keepalive: true, stepDur: *rsStep, edgedBin: *rsEdged, scenarios: "../sipp", out: *rsOut, rttFreq: 100}
	var err error
	if b.sipp, err = exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp not installed (make deps installs sip-tester): %v", err)
	}
	for _, p := range []*string{&b.edgedBin, &b.scenarios} {
		if *p, err = filepath.Abs(*p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(*p); err != nil {
			t.Fatalf("%v (make build first, or -edged)", err)
		}
	}
	if b.out == "" {
		if b.out, err = os.MkdirTemp("", "sipbench-redis-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(b.out, "sipbench.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b.log = &lockedWriter{w: io.MultiWriter(os.Stderr, f)}
	b.logf("sipbench redis: results in %s", b.out)
	return b
}

// lockedWriter serialises the log lines of concurrent steps.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// flushRedis empties every master, so that each configuration starts from
// an empty location.
func flushRedis(t *testing.T, rc *redistest.Cluster) {
	t.Helper()
	for i := range rc.Nodes {
		role, err := rc.Info(i, "ROLE")
		if err != nil {
			t.Fatalf("redis node %d: %v", i, err)
		}
		if !strings.HasPrefix(role, "master") {
			continue
		}
		if _, err := rc.Info(i, "FLUSHALL"); err != nil {
			t.Fatalf("redis node %d: FLUSHALL: %v", i, err)
		}
	}
}

// redisRamp starts cfg's edged processes and steps the rate up until a
// step has a failure.
func (b *bench) redisRamp(ctx context.Context, rc *redistest.Cluster, cfg redisConfig, rates []int, run int) (rr redisRamp, err error) {
	rr = redisRamp{Config: cfg.name, Nodes: cfg.nodes, Run: run + 1}
	loc := ""
	if cfg.db {
		q := make([]string, len(rc.Addrs()))
		for i, a := range rc.Addrs() {
			q[i] = strconv.Quote(a)
		}
		loc = "location:\n  mode: db-driven\n  redis: {addrs: [" + strings.Join(q, ", ") + "]}\n"
	}
	var nodes []*edged
	// What the nodes counted (Redis operations by result and latency),
	// for reading a failed step, is saved when they stop.
	defer func() { b.stopNodes(nodes) }()
	nodes, err = b.startNodes(ctx, cfg.name, cfg.nodes, func(_ int, o *edgedOpts) { o.location = loc })
	if err != nil {
		return rr, err
	}
	// Warm-up, not counted: the first REGISTERs dial the connection pools
	// and load the save script on every new connection.
	if _, err := b.redisStep(ctx, nodes, min(rates[0], 100), fmt.Sprintf("%s%dwarm", cfg.name, run), 2*time.Second); err != nil {
		return rr, err
	}
	cmds0, err := rc.SumInfo("stats", "total_commands_processed")
	if err != nil {
		return rr, err
	}
	ok := 0
	defer func() {
		if cmds1, err := rc.SumInfo("stats", "total_commands_processed"); err == nil && cfg.db && ok > 0 {
			rr.RedisCmdsPerReg = float64(cmds1-cmds0) / float64(ok)
		}
	}()
	for i, rate := range rates {
		st, err := b.redisStep(ctx, nodes, rate, fmt.Sprintf("%s%dr%d", cfg.name, run, i), b.stepDur)
		ok += st.Success
		if err != nil {
			return rr, err
		}
		rr.Steps = append(rr.Steps, st)
		if st.ZeroFail {
			rr.MaxZeroFail = rate
		}
		if !st.Sustained {
			if *rsAll {
				continue
			}
			break
		}
		if rr.Max == rates[max(i-1, 0)] || i == 0 {
			rr.Max, rr.AtMax = rate, &rr.Steps[len(rr.Steps)-1]
		}
	}
	return rr, nil
}

// startNodes starts n edged processes in one cluster (node i+1 joining
// node 1), edit adjusting each one's options, and waits until every one
// is ready and sees the others. The nodes started are returned even on
// error, for stopNodes.
func (b *bench) startNodes(ctx context.Context, name string, n int, edit func(i int, o *edgedOpts)) ([]*edged, error) {
	var nodes []*edged
	for i := range n {
		dir, err := b.serverDir(fmt.Sprintf("edged-%s-n%d", name, i+1))
		if err != nil {
			return nodes, err
		}
		o := edgedOpts{bin: b.edgedBin, dir: dir, keepalive: b.keepalive, nodeID: uint32(i + 1)}
		if i > 0 {
			o.join = []string{nodes[0].cluster}
		}
		edit(i, &o)
		e, err := startEdged(ctx, o)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, e)
	}
	for _, e := range nodes {
		if err := e.waitReady(ctx, n); err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

// stopNodes saves each node's /metrics next to its log and stops it.
func (b *bench) stopNodes(nodes []*edged) {
	for _, e := range nodes {
		if err := e.saveMetrics(filepath.Join(e.dir, "metrics.txt")); err != nil {
			b.logf("edged: /metrics: %v", err)
		}
		if err := e.Stop(); err != nil {
			b.logf("edged: stop: %v", err)
		}
	}
}

// saveMetrics writes the node's /metrics to path.
func (e *edged) saveMetrics(path string) error {
	resp, err := e.httpc.Get("http://" + e.admin + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// waitReady polls until the node's /readyz answers 200 and it sees n nodes
// up (itself included).
func (e *edged) waitReady(ctx context.Context, n int) error {
	return poll(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		if e.p.exited() {
			return fmt.Errorf("edged exited: %v\n%s", e.p.err, e.p.tail())
		}
		resp, err := e.httpc.Get("http://" + e.admin + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s %s", resp.Status, body)
		}
		resp, err = e.httpc.Get("http://" + e.admin + "/v1/cluster/nodes")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var views []struct {
			State string `json:"state"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&views); err != nil {
			return fmt.Errorf("/v1/cluster/nodes: %w", err)
		}
		up := 0
		for _, v := range views {
			if v.State == "self" || v.State == "up" {
				up++
			}
		}
		if up < n {
			return fmt.Errorf("%d of %d nodes up", up, n)
		}
		return nil
	})
}

// redisStep runs one SIPp per node at rate, at the same time, and adds up
// their results.
func (b *bench) redisStep(ctx context.Context, nodes []*edged, rate int, tag string, d time.Duration) (redisStep, error) {
	st := redisStep{Rate: rate, Load: loadavg()}
	type out struct {
		st  stepResult
		res *sippResult
		err error
	}
	outs := make([]out, len(nodes))
	var wg sync.WaitGroup
	for i, e := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, r, err := b.step(ctx, e, kindReg, rate, d, fmt.Sprintf("%sn%d", tag, i+1), true)
			outs[i] = out{s, r, err}
		}()
	}
	wg.Wait()
	var rtt []float64
	var cpu time.Duration
	st.Sustained, st.ZeroFail = true, true
	for _, o := range outs {
		if o.err != nil {
			return st, o.err
		}
		st.Calls += o.st.Calls
		st.Success += o.st.Success
		st.Failed += o.st.Failed
		st.Retrans += o.st.Retrans
		cpu += o.st.ServerCPU
		st.Sustained = st.Sustained && o.st.Pass
		st.ZeroFail = st.ZeroFail && o.st.Failed == 0 && o.st.Success == o.st.Calls
		if !o.st.Pass {
			st.Why = strings.TrimPrefix(st.Why+"; "+o.st.Why, "; ")
		}
		rtt = append(rtt, o.res.rttMillis...)
	}
	slices.Sort(rtt)
	st.Samples = len(rtt)
	if len(rtt) > 0 {
		sum := 0.0
		for _, v := range rtt {
			sum += v
		}
		st.AvgMs = sum / float64(len(rtt))
		st.P50Ms, st.P99Ms = quantile(rtt, 0.5), quantile(rtt, 0.99)
	}
	if st.Success > 0 {
		st.CPUPerOp = (cpu / time.Duration(st.Success)).Round(time.Microsecond).String()
	}
	b.logf("  %s: %d node(s) × %d/s: %d/%d ok, %d failed, %d retransmissions, avg %.1f ms, p50 %.0f ms, p99 %.0f ms (load %s)",
		tag, len(nodes), rate, st.Success, st.Calls, st.Failed, st.Retrans, st.AvgMs, st.P50Ms, st.P99Ms, st.Load)
	return st, nil
}

// redisSummary is the Markdown table of the runs: per configuration, the
// median over runs of the highest sustained rate.
func redisSummary(configs []redisConfig, ramps []redisRamp) string {
	var sb strings.Builder
	sb.WriteString("| configuration | highest sustained REGISTER/s per node (runs; median) | all nodes | avg response there (runs) | load average there (runs) | highest with 0 failures (runs) | the next step (runs) | Redis commands per REGISTER, script-internal included (runs) |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range configs {
		var maxes, zero []int
		var avg, load, next, cmds []string
		for _, r := range ramps {
			if r.Config != c.name {
				continue
			}
			maxes, zero = append(maxes, r.Max), append(zero, r.MaxZeroFail)
			cmds = append(cmds, fmt.Sprintf("%.2f", r.RedisCmdsPerReg))
			if r.AtMax != nil {
				avg = append(avg, fmt.Sprintf("%.1f ms", r.AtMax.AvgMs))
				load = append(load, strings.Fields(r.AtMax.Load + " ?")[0])
			} else {
				avg, load = append(avg, "–"), append(load, "–")
			}
			if i := slices.IndexFunc(r.Steps, func(s redisStep) bool { return !s.Sustained }); i >= 0 {
				st := r.Steps[i]
				next = append(next, fmt.Sprintf("%d/s: %s, avg %.0f ms", st.Rate, st.Why, st.AvgMs))
			} else {
				next = append(next, "none (top of the ladder)")
			}
		}
		if len(maxes) == 0 {
			continue
		}
		s := slices.Clone(maxes)
		slices.Sort(s)
		med := s[len(s)/2]
		fmt.Fprintf(&sb, "| %s (%d edged) | %s; **%d** | %d | %s | %s | %s | %s | %s |\n", c.name, c.nodes,
			joinInts(maxes), med, med*c.nodes, strings.Join(avg, ", "), strings.Join(load, ", "), joinInts(zero), strings.Join(next, "; "),
			strings.Join(cmds, ", "))
	}
	return sb.String()
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}
