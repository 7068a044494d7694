package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sippSpec is one SIPp process.
type sippSpec struct {
	name     string // unique within the benchmark: names its directory
	scenario string // file name under the scenario directory
	remote   string // "" for a UAS
	port     int    // local port; 0 picks a free one
	args     []string
	// expect is how long the run should take; the SIPp and process
	// timeouts are derived from it.
	expect time.Duration
	rtt    bool // record every response time (-trace_rtt)
	// rttFreq is SIPp's -rtt_freq (set by startSipp): it writes the
	// response times in batches of this many.
	rttFreq int
}

// sippResult is what a finished SIPp run reports.
type sippResult struct {
	name      string
	dir       string
	exitCode  int
	wall      time.Duration
	cpu       time.Duration // SIPp's own CPU time
	created   int
	success   int
	failed    int
	retrans   int
	rttMillis []float64 // with spec.rtt
}

// sippProc is a SIPp process in flight.
type sippProc struct {
	spec  sippSpec
	dir   string
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{}
	err   error
}

// startSipp starts spec. The process ends by itself (SIPp -timeout), or
// when ctx ends (killed), and dies with the benchmark.
func (b *bench) startSipp(ctx context.Context, spec sippSpec) (*sippProc, error) {
	dir := filepath.Join(b.out, "sipp", spec.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if spec.port == 0 {
		p, err := freePort("udp4")
		if err != nil {
			return nil, err
		}
		spec.port = p
	}
	timeout := 3*spec.expect + 20*time.Second
	args := []string{"-sf", filepath.Join(b.scenarios, spec.scenario),
		"-i", "127.0.0.1", "-p", strconv.Itoa(spec.port), "-t", "u1",
		"-buff_size", "4194304", "-nostdin",
		"-timeout", fmt.Sprintf("%ds", int(timeout.Seconds())), "-timeout_error",
		"-trace_stat", "-stf", filepath.Join(dir, "stat.csv"), "-fd", "1",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
	}
	if spec.rtt {
		// Every response time, in ms, in <scenario>_<pid>_rtt.csv in dir,
		// written every rttFreq calls (SIPp drops the last partial batch).
		spec.rttFreq = 1000
		if b.rttFreq > 0 {
			spec.rttFreq = b.rttFreq
		}
		args = append(args, "-trace_rtt", "-rtt_freq", strconv.Itoa(spec.rttFreq))
	}
	args = append(args, spec.args...)
	if spec.remote != "" {
		args = append(args, spec.remote)
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	// A process deadline on top of SIPp's own, in case it hangs; the
	// context kills the process (by its PID) when it ends.
	pctx, cancel := context.WithTimeout(ctx, timeout+15*time.Second)
	argv := append([]string{b.sipp}, args...)
	if b.sippCPUs != "" {
		argv = append([]string{"taskset", "-c", b.sippCPUs}, argv...)
	}
	if b.sippNice != 0 {
		argv = append([]string{"nice", "-n", strconv.Itoa(b.sippNice)}, argv...)
	}
	cmd := exec.CommandContext(pctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	p := &sippProc{spec: spec, dir: dir, cmd: cmd, done: make(chan struct{})}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		out.Close()
		return nil, fmt.Errorf("sipp %s: %w", spec.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		cancel()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends a SIPp that runs without a call limit (a UAS).
func (p *sippProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR1) // SIPp: quit after the calls in progress
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the run and reads its statistics.
func (p *sippProc) wait() (*sippResult, error) {
	<-p.done
	r := &sippResult{name: p.spec.name, dir: p.dir, wall: time.Since(p.start), exitCode: -1}
	if st := p.cmd.ProcessState; st != nil {
		r.exitCode = st.ExitCode()
		r.cpu = st.UserTime() + st.SystemTime()
	}
	stats, err := lastStats(filepath.Join(p.dir, "stat.csv"))
	if err != nil {
		return r, fmt.Errorf("sipp %s (exit %d, %v): %w; see %s", p.spec.name, r.exitCode, p.err, err, p.dir)
	}
	for _, f := range []struct {
		key string
		dst *int
	}{
		{"OutgoingCall(C)", &r.created},
		{"SuccessfulCall(C)", &r.success},
		{"FailedCall(C)", &r.failed},
		{"Retransmissions(C)", &r.retrans},
	} {
		v, ok := stats[f.key]
		if !ok {
			return r, fmt.Errorf("sipp %s: no %s in its statistics", p.spec.name, f.key)
		}
		*f.dst, _ = strconv.Atoi(v)
	}
	if p.spec.rtt {
		r.rttMillis, err = readRTT(p.dir)
		if err != nil && r.success < p.spec.rttFreq {
			err = nil // SIPp had not written its first batch
		}
		if err != nil {
			return r, fmt.Errorf("sipp %s: %w", p.spec.name, err)
		}
	}
	return r, nil
}

// run runs spec to completion.
func (b *bench) runSipp(ctx context.Context, spec sippSpec) (*sippResult, error) {
	p, err := b.startSipp(ctx, spec)
	if err != nil {
		return nil, err
	}
	return p.wait()
}

// lastStats maps the header of SIPp's statistics file to its last line:
// the cumulative counters at the end of the run.
func lastStats(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var header, last string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if header == "" {
			header = line
			continue
		}
		last = line
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if last == "" {
		return nil, errors.New("no statistics line")
	}
	keys, vals := strings.Split(header, ";"), strings.Split(last, ";")
	out := map[string]string{}
	for i, k := range keys {
		if i < len(vals) {
			out[k] = vals[i]
		}
	}
	return out, nil
}

// readRTT reads every response time of a -trace_rtt run, in ms (SIPp's
// resolution is 1 ms).
func readRTT(dir string) ([]float64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_rtt.csv"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no *_rtt.csv in %s", dir)
	}
	var out []float64
	for _, fn := range files {
		b, err := os.ReadFile(fn)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Split(strings.TrimSpace(line), ";")
			if len(f) < 2 {
				continue
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", fn, line, err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}
