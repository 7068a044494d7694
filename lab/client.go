//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Client is a region's client host: SIP probes and SIPp run there.
type Client struct {
	Region *RegionPlan
	NS     string
	lab    *Lab
}

// AnycastSIP is the anycast SIP address, "203.0.113.10:5060".
func AnycastSIP() string { return fmt.Sprintf("%s:%d", Anycast, SIPPort) }

// AnycastSIP6 is the IPv6 anycast SIP address, "[2001:db8:a::10]:5060".
func AnycastSIP6() string { return fmt.Sprintf("[%s]:%d", Anycast6, SIPPort) }

// local is the client's address of remote's family ("ip:port" or
// "[ip6]:port"; "" means IPv4).
func (c *Client) local(remote string) netip.Addr {
	if strings.HasPrefix(remote, "[") {
		return c.Region.Client6
	}
	return c.Region.Client
}

// Sample is one probe: when it was sent and whether a 200 came back in
// time.
type Sample struct {
	At time.Time
	OK bool
}

// Prober sends SIP OPTIONS from one UDP socket (one flow: one ECMP path)
// at a steady interval and records which were answered within the
// timeout. Sending and receiving run apart, so a slow answer on a loaded
// machine is not mistaken for a lost one.
type Prober struct {
	pc      net.PacketConn
	dst     *net.UDPAddr
	timeout time.Duration
	tag     string
	stop    chan struct{}
	done    chan struct{}

	mu    sync.Mutex
	sent  []time.Time       // by sequence number - 1
	reply map[int]time.Time // sequence number -> when answered
}

// ProbeTimeout is how long a probe waits for its 200.
const ProbeTimeout = 250 * time.Millisecond

// Probe starts probing dst ("ip:port" or "[ip6]:port") every interval,
// from the client's address of dst's family.
func (c *Client) Probe(dst string, interval time.Duration) (*Prober, error) {
	ua, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return nil, err
	}
	netw := "udp4"
	if ua.IP.To4() == nil {
		netw = "udp6"
	}
	pc, err := listenPacket(c.NS, netw, netip.AddrPortFrom(c.local(dst), 0).String())
	if err != nil {
		return nil, err
	}
	p := &Prober{pc: pc, dst: ua, timeout: ProbeTimeout, tag: randHex(4),
		stop: make(chan struct{}), done: make(chan struct{}), reply: map[int]time.Time{}}
	go p.receive()
	go p.send(interval)
	return p, nil
}

func (p *Prober) send(interval time.Duration) {
	defer close(p.done)
	local := p.pc.LocalAddr().(*net.UDPAddr)
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=z9hG4bK-probe-%s-%d;rport\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:probe@%s>;tag=%s\r\n"+
			"To: <sip:%s>\r\n"+
			"Call-ID: probe-%s-%d\r\n"+
			"CSeq: %d OPTIONS\r\n"+
			"Content-Length: 0\r\n\r\n",
			p.dst, local, p.tag, seq, Domain, p.tag, p.dst, p.tag, seq, seq)
		p.mu.Lock()
		p.sent = append(p.sent, time.Now())
		p.mu.Unlock()
		_, _ = p.pc.WriteTo([]byte(msg), p.dst)
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Prober) receive() {
	buf := make([]byte, 4096)
	prefix := []byte("branch=z9hG4bK-probe-" + p.tag + "-")
	for {
		n, _, err := p.pc.ReadFrom(buf)
		if err != nil {
			return // closed by Stop
		}
		at := time.Now()
		r := buf[:n]
		if !bytes.HasPrefix(r, []byte("SIP/2.0 200")) {
			continue
		}
		i := bytes.Index(r, prefix)
		if i < 0 {
			continue
		}
		rest := r[i+len(prefix):]
		j := bytes.IndexAny(rest, ";\r\n ")
		if j < 0 {
			continue
		}
		seq, err := strconv.Atoi(string(rest[:j]))
		if err != nil {
			continue
		}
		p.mu.Lock()
		if _, dup := p.reply[seq]; !dup {
			p.reply[seq] = at
		}
		p.mu.Unlock()
	}
}

// Stop ends the probing, waits out the last probes' timeout and returns
// every sample.
func (p *Prober) Stop() []Sample {
	close(p.stop)
	<-p.done
	time.Sleep(p.timeout) // the last probes' answers, if any, arrive meanwhile
	s := p.Samples()
	p.pc.Close()
	return s
}

// Samples returns the probes whose fate is known: answered, or older than
// the timeout.
func (p *Prober) Samples() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	var out []Sample
	for i, at := range p.sent {
		r, ok := p.reply[i+1]
		answered := ok && r.Sub(at) <= p.timeout
		if !answered && now.Sub(at) < p.timeout {
			break // still pending
		}
		out = append(out, Sample{At: at, OK: answered})
	}
	return out
}

// LocalPort is the probes' source port (it picks their ECMP path).
func (p *Prober) LocalPort() int { return p.pc.LocalAddr().(*net.UDPAddr).Port }

// OKSince reports whether a probe sent at or after t was answered.
func (p *Prober) OKSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, at := range p.sent {
		if !at.Before(t) {
			if r, ok := p.reply[i+1]; ok && r.Sub(at) <= p.timeout {
				return true
			}
		}
	}
	return false
}

// Outage measures the loss window around an event at t: among the runs
// of unanswered probes sent after t, the longest time from the first
// probe of a run to the next answered probe, and the number of probes
// lost in that run. A scheduler stall of the prober itself (no probe
// sent, none lost) is not counted. It returns 0, 0 when nothing was lost,
// and fails when no probe sent after t was answered.
func Outage(samples []Sample, t time.Time) (window time.Duration, lost int, err error) {
	var first time.Time // first lost probe of the current run
	run := 0
	answered := false
	for _, s := range samples {
		if s.At.Before(t) {
			continue
		}
		if !s.OK {
			if run == 0 {
				first = s.At
			}
			run++
			continue
		}
		answered = true
		if run > 0 {
			if w := s.At.Sub(first); w > window {
				window, lost = w, run
			}
		}
		run = 0
	}
	if !answered {
		return 0, 0, errors.New("no probe sent after the event was answered")
	}
	return window, lost, nil
}

// SIPpResult is a finished SIPp run.
type SIPpResult struct {
	Output string
	Err    error
}

// SIPp is one SIPp process in the client's namespace.
type SIPp struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
	err  error
	dir  string
	name string
}

// StartSIPp starts SIPp with scenario (a file of the scenario directory)
// against remote ("" for a UAS), bound to the client's address of
// remote's family, with a global timeout. args are more SIPp arguments
// (-s, -p, -m, -r, ...).
func (c *Client) StartSIPp(ctx context.Context, scenario, remote string, args ...string) (*SIPp, error) {
	return c.StartSIPpFrom(ctx, c.local(remote), scenario, remote, args...)
}

// StartSIPpFrom is StartSIPp bound to local, one of the client's
// addresses (Region.Client or Region.Client6: an IPv6 UAS needs it).
func (c *Client) StartSIPpFrom(ctx context.Context, local netip.Addr, scenario, remote string, args ...string) (*SIPp, error) {
	dir := filepath.Join(c.lab.dir, "sipp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tag := strings.TrimSuffix(scenario, ".xml") + "-" + randHex(3)
	base := []string{"netns", "exec", c.NS, "sipp",
		"-sf", filepath.Join(c.lab.opts.Scenarios, scenario),
		"-i", local.String(), "-t", "u1", "-nostdin",
		"-key", "domain", Domain,
		"-trace_err", "-error_file", filepath.Join(dir, tag+"-errors.log"),
		"-trace_stat", "-stf", filepath.Join(dir, tag+"-stat.csv"),
		// A loaded machine trips SIPp's scheduling watchdog, which would
		// end the run: count, do not abort.
		"-watchdog_minor_maxtriggers", "100000", "-watchdog_major_maxtriggers", "100000",
	}
	base = append(base, args...)
	if remote != "" {
		base = append(base, remote)
	}
	s := &SIPp{done: make(chan struct{}), dir: dir, name: tag}
	s.cmd = exec.CommandContext(ctx, "ip", base...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("sipp %s: %w", scenario, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// Wait waits for SIPp to exit; the error carries SIPp's output tail and
// its error log.
func (s *SIPp) Wait() error {
	<-s.done
	if s.err == nil {
		return nil
	}
	errs, _ := os.ReadFile(filepath.Join(s.dir, s.name+"-errors.log"))
	return fmt.Errorf("sipp %s: %w\n%s\n%s", s.name, s.err, tailString(s.out.String(), 1500), tailString(string(errs), 2000))
}

// ErrorLog is SIPp's error file (-trace_err): one "Dead call" entry per
// failed call, with the scenario index it failed at.
func (s *SIPp) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, s.name+"-errors.log"))
	return string(b)
}

// Done is closed when SIPp exits.
func (s *SIPp) Done() <-chan struct{} { return s.done }

// Output is what SIPp printed.
func (s *SIPp) Output() string {
	<-s.done
	return s.out.String()
}

// Interrupt asks SIPp to stop (SIGUSR1: stop placing calls, finish the
// calls in progress, then exit).
func (s *SIPp) Interrupt() error { return s.cmd.Process.Signal(os.Signal(sigusr1)) }

// Stop ends SIPp at once (SIGINT, as its 'q' key), killing it if it has
// not exited 5 s later, and waits for it.
func (s *SIPp) Stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// RunSIPp runs a SIPp scenario to completion.
func (c *Client) RunSIPp(ctx context.Context, scenario, remote string, args ...string) error {
	s, err := c.StartSIPp(ctx, scenario, remote, args...)
	if err != nil {
		return err
	}
	return s.Wait()
}

// Register registers user (password user+"pw") with contact port port
// through remote, with digest authentication.
func (c *Client) Register(ctx context.Context, remote, user string, port int) error {
	return c.RunSIPp(ctx, "uac_register.xml", remote, "-s", user, "-au", user, "-ap", user+"pw",
		"-p", strconv.Itoa(port), "-m", "1", "-timeout", "10s", "-timeout_error")
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// sigusr1 is SIPp's "stop gracefully" signal.
const sigusr1 = syscall.SIGUSR1
