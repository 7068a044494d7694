package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a SIP server under test, running on loopback.
type server interface {
	Name() string
	// Addr is the SIP address, "127.0.0.1:port" (UDP).
	Addr() string
	// CPU is the CPU time its processes have used so far.
	CPU() (time.Duration, error)
	// Stop stops every process it started and waits for them.
	Stop() error
}

// proc is one process we started, signalled only by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's ^C reaches us only; we stop it
		Pdeathsig: syscall.SIGKILL, // never outlive the benchmark
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("%s (pid %d) needed SIGKILL", p.name, p.pid())
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, p.pid())
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePort returns a loopback port that is free right now for network
// ("udp4" or "tcp4"). There is a window before the server binds it; on
// loopback, for a benchmark, that is acceptable.
func freePort(network string) (int, error) {
	if network == "udp4" {
		pc, err := net.ListenPacket(network, "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port, nil
	}
	ln, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// poll calls fn every interval until it returns nil or timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// sipReady sends an OPTIONS to addr and waits for any response: the server
// reads its socket.
func sipReady(addr string) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	branch := fmt.Sprintf("z9hG4bK-ready-%d", time.Now().UnixNano())
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + ";rport\r\n" +
		"From: <sip:bench@example.com>;tag=ready\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: " + branch + "@bench\r\n" +
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("OPTIONS to %s: %w", addr, err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 ") {
		return fmt.Errorf("OPTIONS to %s: not a response: %q", addr, buf[:min(n, 40)])
	}
	return nil
}

// edged is anyedge's daemon with a SIP section, on loopback.
type edged struct {
	p       *proc
	sip     string
	admin   string
	cluster string // the cluster listener, for a second node to join
	dir     string // its config, log and state
	httpc   *http.Client
}

type edgedOpts struct {
	bin       string
	dir       string
	keepalive bool // the default; false adds keepalive: {enabled: false}
	// nodeID is cluster.node_id (default 1).
	nodeID uint32
	// join, when set, joins the cluster at these addresses instead of
	// seeding a new one.
	join []string
	// location is a YAML location section ("" : the in-memory default).
	location string
	// extra is YAML appended to the config (geo).
	extra string
	// tags are cluster.tags entries, as YAML flow mappings.
	tags []string
	// cpus, when set, pins the process to these CPUs (taskset -c); the Go
	// runtime sizes GOMAXPROCS to the affinity mask.
	cpus string
}

func startEdged(ctx context.Context, o edgedOpts) (*edged, error) {
	ports := map[string]int{}
	for _, k := range []string{"sip/udp4", "admin/tcp4", "cluster/tcp4"} {
		name, network, _ := strings.Cut(k, "/")
		p, err := freePort(network)
		if err != nil {
			return nil, err
		}
		ports[name] = p
	}
	e := &edged{
		sip:     fmt.Sprintf("127.0.0.1:%d", ports["sip"]),
		admin:   fmt.Sprintf("127.0.0.1:%d", ports["admin"]),
		cluster: fmt.Sprintf("127.0.0.1:%d", ports["cluster"]),
		dir:     o.dir,
		httpc:   &http.Client{Timeout: 5 * time.Second},
	}
	ka := ""
	if !o.keepalive {
		ka = "  keepalive: {enabled: false}\n"
	}
	if o.nodeID == 0 {
		o.nodeID = 1
	}
	seed := "seed: true"
	if len(o.join) > 0 {
		q := make([]string, len(o.join))
		for i, a := range o.join {
			q[i] = strconv.Quote(a)
		}
		seed = "join: [" + strings.Join(q, ", ") + "]"
	}
	if o.location != "" || o.extra != "" {
		// db-driven or geo: the other nodes relay to this one's SIP address.
		seed += fmt.Sprintf(", sip_addr: %q", e.sip)
	}
	if len(o.tags) > 0 {
		seed += ", tags: [" + strings.Join(o.tags, ", ") + "]"
	}
	cfg := fmt.Sprintf(`log: {level: warn}
admin: {listen: %q}
cluster: {node_id: %d, region: bench, listen: %q, %s, key: "0123456789abcdef0123456789abcdef", state_dir: %q}
sip:
  listeners: [{transport: udp, addr: %q}]
  domains: [example.com]
%s%s%s`, e.admin, o.nodeID, e.cluster, seed, filepath.Join(o.dir, "state"), e.sip, ka, o.location, o.extra)
	path := filepath.Join(o.dir, "edged.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	argv := []string{o.bin, "-config", path}
	if o.cpus != "" {
		argv = append([]string{"taskset", "-c", o.cpus}, argv...)
	}
	p, err := startProc("edged", filepath.Join(o.dir, "edged.log"), argv...)
	if err != nil {
		return nil, err
	}
	e.p = p
	err = poll(ctx, 15*time.Second, 50*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("edged exited: %v\n%s", p.err, p.tail())
		}
		return sipReady(e.sip)
	})
	if err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	return e, nil
}

func (e *edged) Name() string { return "edged" }
func (e *edged) Addr() string { return e.sip }
func (e *edged) PID() int     { return e.p.pid() }

func (e *edged) CPU() (time.Duration, error) {
	st, err := readStat(e.p.pid())
	return st.cpu, err
}

func (e *edged) Stop() error { return e.p.stop(10 * time.Second) }

// metrics reads the named unlabelled samples from /metrics.
func (e *edged) metrics(names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	err := e.scanMetrics(func(line string) error {
		f := strings.Fields(line)
		if len(f) == 2 && want[f[0]] {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return fmt.Errorf("/metrics: %q: %w", line, err)
			}
			out[f[0]] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("/metrics: no sample %s", n)
		}
	}
	return out, nil
}

// scanMetrics calls fn with each line of the node's /metrics until fn
// fails.
func (e *edged) scanMetrics(fn func(line string) error) error {
	resp, err := e.httpc.Get("http://" + e.admin + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := fn(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// kamailio is Kamailio with bench/kamailio.cfg, on loopback.
type kamailio struct {
	p    *proc
	sip  string
	ctl  string
	kids map[int]uint64 // worker PIDs and their start times
}

type kamailioOpts struct {
	bin     string
	cfg     string
	dir     string
	workers int // UDP worker processes (-n)
	shmMB   int // shared memory (-m): usrloc and transactions
	pkgMB   int // private memory per process (-M)
}

func startKamailio(ctx context.Context, o kamailioOpts) (*kamailio, error) {
	port, err := freePort("udp4")
	if err != nil {
		return nil, err
	}
	k := &kamailio{
		sip: fmt.Sprintf("127.0.0.1:%d", port),
		ctl: "unix:" + filepath.Join(o.dir, "kamailio_ctl"),
	}
	argv := []string{o.bin, "-f", o.cfg, "-DD", "-E",
		"-m", strconv.Itoa(o.shmMB), "-M", strconv.Itoa(o.pkgMB), "-n", strconv.Itoa(o.workers),
		"-l", "udp:" + k.sip, "-A", fmt.Sprintf("CTL_SOCK=%q", k.ctl)}
	p, err := startProc("kamailio", filepath.Join(o.dir, "kamailio.log"), argv...)
	if err != nil {
		return nil, err
	}
	k.p = p
	err = poll(ctx, 15*time.Second, 50*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("kamailio exited: %v\n%s", p.err, p.tail())
		}
		return sipReady(k.sip)
	})
	if err == nil {
		k.kids, err = children(p.pid())
	}
	if err != nil {
		return nil, errors.Join(err, k.Stop())
	}
	return k, nil
}

func (k *kamailio) Name() string { return "kamailio" }
func (k *kamailio) Addr() string { return k.sip }

// CPU adds up the main process and its workers (timer, ctl, UDP receivers).
func (k *kamailio) CPU() (time.Duration, error) {
	st, err := readStat(k.p.pid())
	if err != nil {
		return 0, err
	}
	total := st.cpu
	for pid, start := range k.kids {
		if cs, err := readStat(pid); err == nil && cs.startTime == start {
			total += cs.cpu
		}
	}
	return total, nil
}

// Stop stops the main process, which stops its workers; workers that
// outlive it (they should not) are killed by PID, after checking that the
// PID was not reused.
func (k *kamailio) Stop() error {
	err := k.p.stop(10 * time.Second)
	_ = poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() error {
		for pid, start := range k.kids {
			if sameProcess(pid, start) {
				return fmt.Errorf("worker %d still running", pid)
			}
		}
		return nil
	})
	for pid, start := range k.kids {
		if sameProcess(pid, start) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			err = errors.Join(err, fmt.Errorf("kamailio worker %d outlived the main process", pid))
		}
	}
	return err
}

// shmUsed is the shared memory in use (kamcmd core.shmmem "used"): where
// usrloc keeps contacts.
func (k *kamailio) shmUsed(kamcmd string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kamcmd, "-s", k.ctl, "core.shmmem").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("kamcmd core.shmmem: %w: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		if len(f) == 2 && f[0] == "used:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("kamcmd core.shmmem: no used: in %q", out)
}
