// Command sipbench measures edged's SIP figures against Kamailio 5.6 on
// loopback, in one invocation, so that both see the same machine load:
//
//   - the highest sustained REGISTER rate (unique users, no auth) and call
//     set-up rate (UAC → proxy → UAS, short calls) with no failed call;
//   - the server CPU time per REGISTER and per call at that rate (steadier
//     than rates on a shared machine);
//   - response times (p50/p99) at half of edged's sustained rate, the same
//     offered rate for both servers;
//   - memory per stored binding: edged's RSS growth, Kamailio's shared
//     memory growth, for -bindings unique users.
//
// Load comes from SIPp (bench/sipp/*.xml). Every SIPp run, server and
// profile is bounded in count and time; processes are tracked by PID and
// stopped when the benchmark ends. Results go to -out: summary.md,
// results.json, each SIPp run's statistics and errors, server logs.
//
//	go run ./bench/sipbench -edged bin/edged            # make bench-sip
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// bench is one invocation's settings.
type bench struct {
	out        string
	scenarios  string
	sipp       string
	edgedBin   string
	kamBin     string
	kamCfg     string
	kamcmd     string
	perf       string // "" when not profiling
	kamWorkers int
	keepalive  bool
	stepDur    time.Duration
	confirmDur time.Duration
	log        io.Writer
	seq        int
	rttFreq    int // SIPp -rtt_freq with -trace_rtt (0: 1000)
	// sippCPUs, when set, pins every SIPp to these CPUs (taskset -c), so
	// that a server pinned elsewhere has its cores to itself.
	sippCPUs string
	// sippNice, when not 0, runs every SIPp at this niceness, so that on a
	// core it shares with a measured node its bursts give way to the node.
	sippNice int
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// serverDir is a fresh directory for one server's config and log.
func (b *bench) serverDir(name string) (string, error) {
	b.seq++
	dir := filepath.Join(b.out, "servers", fmt.Sprintf("%02d-%s", b.seq, name))
	return dir, os.MkdirAll(dir, 0o755)
}

// results is everything measured, for results.json and the summary.
type results struct {
	Started   time.Time         `json:"started"`
	Machine   string            `json:"machine"`
	Versions  map[string]string `json:"versions"`
	Settings  map[string]any    `json:"settings"`
	Ramps     []rampResult      `json:"ramps"`
	Latencies []latencyResult   `json:"latencies"`
	Memory    []memResult       `json:"memory"`
	Profiles  []profile         `json:"profiles"`
	Load      []string          `json:"load_average"` // at the start of each run
	Errors    []string          `json:"errors,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sipbench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		b        bench
		runs     int
		bindings int
		memProcs int
		memRate  int
		only     string
		profile  bool
		resum    string
	)
	flag.StringVar(&b.edgedBin, "edged", "bin/edged", "the edged binary")
	flag.StringVar(&b.kamBin, "kamailio", "kamailio", "the Kamailio binary")
	flag.StringVar(&b.kamCfg, "kamailio-cfg", "bench/kamailio.cfg", "Kamailio's config")
	flag.StringVar(&b.kamcmd, "kamcmd", "kamcmd", "Kamailio's RPC client (memory figures)")
	flag.StringVar(&b.sipp, "sipp", "sipp", "the SIPp binary")
	flag.StringVar(&b.scenarios, "scenarios", "bench/sipp", "directory of the SIPp scenarios")
	flag.StringVar(&b.out, "out", "", "results directory (default: a new one under the temp dir)")
	flag.IntVar(&b.kamWorkers, "kamailio-workers", runtime.NumCPU(), "Kamailio UDP workers (-n); edged uses GOMAXPROCS = the number of CPUs")
	flag.BoolVar(&b.keepalive, "keepalive", true, "edged with NAT keepalives enabled (its default)")
	flag.DurationVar(&b.stepDur, "step", 4*time.Second, "length of one ramp step")
	flag.DurationVar(&b.confirmDur, "confirm", 10*time.Second, "length of the run confirming the highest rate, and of the latency run")
	flag.IntVar(&runs, "runs", 3, "rate and latency runs (each server fresh in each)")
	flag.IntVar(&bindings, "bindings", 200000, "bindings for the memory figure (1000000 takes about 10 minutes a server here)")
	flag.IntVar(&memProcs, "mem-procs", 4, "SIPp processes registering the memory test's users")
	flag.IntVar(&memRate, "mem-rate", 0, "their total REGISTER rate (default: 60 % of the lower measured sustained rate, at least 500)")
	flag.StringVar(&only, "only", "rates,memory", "what to run: rates (REGISTER, calls, latency), memory")
	flag.BoolVar(&profile, "profile", true, "profile edged with perf at its sustained rates (if perf is installed)")
	flag.StringVar(&resum, "summary", "", "only print the summary of an earlier run's results.json")
	flag.Parse()
	if resum != "" {
		j, err := os.ReadFile(resum)
		if err != nil {
			return err
		}
		var res results
		if err := json.Unmarshal(j, &res); err != nil {
			return fmt.Errorf("%s: %w", resum, err)
		}
		fmt.Print(summary(&res))
		return nil
	}
	if runs < 1 || runs > 10 || bindings < 1000 || bindings > 2000000 || memProcs < 1 || memProcs > 16 {
		return errors.New("-runs 1..10, -bindings 1000..2000000, -mem-procs 1..16")
	}
	for _, p := range []*string{&b.sipp, &b.kamBin, &b.kamcmd} {
		path, err := exec.LookPath(*p)
		if err != nil {
			return fmt.Errorf("%s not found (make deps installs sip-tester and kamailio): %w", *p, err)
		}
		*p = path
	}
	for _, p := range []*string{&b.edgedBin, &b.kamCfg, &b.scenarios} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return err
		}
		*p = abs
	}
	if profile {
		if p, err := exec.LookPath("perf"); err == nil {
			b.perf = p
		}
	}
	if b.out == "" {
		d, err := os.MkdirTemp("", "sipbench-")
		if err != nil {
			return err
		}
		b.out = d
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.out, "sipbench.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	b.log = io.MultiWriter(os.Stderr, logf)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res := &results{Started: time.Now(), Machine: machine(), Versions: versions(&b),
		Settings: map[string]any{
			"runs": runs, "step": b.stepDur.String(), "confirm": b.confirmDur.String(),
			"kamailio_workers": b.kamWorkers, "edged_keepalive": b.keepalive,
			"bindings": bindings, "mem_procs": memProcs,
		}}
	b.logf("sipbench: results in %s", b.out)
	b.logf("machine: %s", res.Machine)

	var errs []error
	if strings.Contains(only, "rates") {
		for i := range runs {
			if ctx.Err() != nil {
				break
			}
			res.Load = append(res.Load, loadavg())
			b.logf("run %d/%d (load average %s)", i+1, runs, loadavg())
			if err := b.rateRun(ctx, res, i); err != nil {
				b.logf("run %d: %v", i+1, err)
				errs = append(errs, fmt.Errorf("run %d: %w", i+1, err))
			}
		}
		if b.perf != "" && ctx.Err() == nil {
			if err := b.profiles(ctx, res); err != nil {
				errs = append(errs, fmt.Errorf("profile: %w", err))
			}
		}
	}
	if strings.Contains(only, "memory") && ctx.Err() == nil {
		rate := memRate
		if rate == 0 {
			rate = max(500, int(0.6*float64(min(medianMax(res, "edged", kindReg), medianMax(res, "kamailio", kindReg)))))
		}
		b.logf("memory: %d bindings, %d SIPp processes at %d/s in total", bindings, memProcs, rate)
		if m, err := b.edgedMemory(ctx, bindings, memProcs, rate, b.keepalive); err == nil || m.Bindings > 0 {
			res.Memory = append(res.Memory, m)
			if err != nil {
				errs = append(errs, fmt.Errorf("edged memory: %w", err))
			}
		} else {
			errs = append(errs, fmt.Errorf("edged memory: %w", err))
		}
		if ctx.Err() == nil {
			if m, err := b.kamailioMemory(ctx, bindings, memProcs, rate); err == nil || m.Bindings > 0 {
				res.Memory = append(res.Memory, m)
				if err != nil {
					errs = append(errs, fmt.Errorf("kamailio memory: %w", err))
				}
			} else {
				errs = append(errs, fmt.Errorf("kamailio memory: %w", err))
			}
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	for _, e := range errs {
		res.Errors = append(res.Errors, e.Error())
	}
	if j, err := json.MarshalIndent(res, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(b.out, "results.json"), j, 0o644)
	}
	sum := summary(res)
	_ = os.WriteFile(filepath.Join(b.out, "summary.md"), []byte(sum), 0o644)
	fmt.Print(sum)
	b.logf("results in %s", b.out)
	return errors.Join(errs...)
}

// rateRun is one run of the rate and latency measurements: each server
// fresh for each kind, in alternating order from run to run.
func (b *bench) rateRun(ctx context.Context, res *results, run int) error {
	for _, kind := range []string{kindReg, kindCall} {
		names := []string{"edged", "kamailio"}
		if run%2 == 1 {
			names = []string{"kamailio", "edged"}
		}
		maxOf := map[string]int{}
		for _, name := range names {
			rr, err := withServer(b, ctx, name, func(srv server) (rampResult, error) {
				tag := fmt.Sprintf("%d", run)
				if kind == kindCall {
					uas, err := b.registerCallee(ctx, srv, "ramp"+tag, 15*time.Minute)
					if err != nil {
						return rampResult{}, err
					}
					defer uas.stop()
				}
				return b.ramp(ctx, srv, kind, tag)
			})
			if err != nil {
				return fmt.Errorf("%s %s: %w", name, kind, err)
			}
			res.Ramps = append(res.Ramps, rr)
			maxOf[name] = rr.Max
			b.logf("  run %d %s %s: highest sustained %d/s (first failure at %d/s)", run+1, name, kind, rr.Max, rr.FirstFail)
		}
		// Latency at half of edged's sustained rate, for both.
		rate := maxOf["edged"] / 2
		if rate < 10 {
			continue
		}
		for _, name := range names {
			lr, err := withServer(b, ctx, name, func(srv server) (latencyResult, error) {
				tag := fmt.Sprintf("lat%d", run)
				if kind == kindCall {
					uas, err := b.registerCallee(ctx, srv, tag, 2*b.confirmDur+time.Minute)
					if err != nil {
						return latencyResult{}, err
					}
					defer uas.stop()
				}
				return b.latency(ctx, srv, kind, rate, tag)
			})
			if err != nil {
				return fmt.Errorf("%s %s latency: %w", name, kind, err)
			}
			res.Latencies = append(res.Latencies, lr)
		}
	}
	return nil
}

// withServer starts a fresh server, runs fn against it and stops it.
func withServer[T any](b *bench, ctx context.Context, name string, fn func(server) (T, error)) (T, error) {
	var zero T
	dir, err := b.serverDir(name)
	if err != nil {
		return zero, err
	}
	var srv server
	switch name {
	case "edged":
		srv, err = startEdged(ctx, edgedOpts{bin: b.edgedBin, dir: dir, keepalive: b.keepalive})
	case "kamailio":
		srv, err = startKamailio(ctx, kamailioOpts{bin: b.kamBin, cfg: b.kamCfg, dir: dir,
			workers: b.kamWorkers, shmMB: 512, pkgMB: 32})
	default:
		err = fmt.Errorf("unknown server %q", name)
	}
	if err != nil {
		return zero, err
	}
	v, err := fn(srv)
	if serr := srv.Stop(); serr != nil {
		b.logf("%s: stop: %v", name, serr)
	}
	return v, err
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func machine() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]); len(f) >= 2 {
			mem = f[1] + " kB"
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM, %s, load average %s", runtime.NumCPU(), model, mem, runtime.Version(), loadavg())
}

func versions(b *bench) map[string]string {
	out := map[string]string{}
	for name, argv := range map[string][]string{
		"sipp":     {b.sipp, "-v"},
		"kamailio": {b.kamBin, "-v"},
		"edged":    {b.edgedBin, "version"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		o, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		for _, line := range strings.Split(string(o), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out[name] = line
				break
			}
		}
	}
	return out
}
