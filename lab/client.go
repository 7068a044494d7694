//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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

// Sample is one probe: when it was sent and whether a 200 came back in
// time.
type Sample struct {
	At time.Time
	OK bool
}

// Prober sends SIP OPTIONS from one UDP socket (one flow: one ECMP path)
// at a steady interval and records which were answered.
type Prober struct {
	pc   net.PacketConn
	dst  *net.UDPAddr
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []Sample
}

// Probe starts probing dst ("ip:port") every interval; a probe counts as
// lost when no 200 arrives within the interval.
func (c *Client) Probe(dst string, interval time.Duration) (*Prober, error) {
	ua, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		return nil, err
	}
	pc, err := listenPacket(c.NS, "udp4", c.Region.Client.String()+":0")
	if err != nil {
		return nil, err
	}
	p := &Prober{pc: pc, dst: ua, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(interval)
	return p, nil
}

func (p *Prober) run(interval time.Duration) {
	defer close(p.done)
	local := p.pc.LocalAddr().(*net.UDPAddr)
	tag := randHex(4)
	buf := make([]byte, 4096)
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		branch := fmt.Sprintf("z9hG4bK-probe-%s-%d", tag, seq)
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=%s;rport\r\n"+
			"Max-Forwards: 70\r\n"+
			"From: <sip:probe@%s>;tag=%s\r\n"+
			"To: <sip:%s>\r\n"+
			"Call-ID: probe-%s-%d\r\n"+
			"CSeq: %d OPTIONS\r\n"+
			"Content-Length: 0\r\n\r\n",
			p.dst, local, branch, Domain, tag, p.dst, tag, seq, seq)
		at := time.Now()
		ok := false
		if _, err := p.pc.WriteTo([]byte(msg), p.dst); err == nil {
			deadline := at.Add(interval)
			for !ok {
				_ = p.pc.SetReadDeadline(deadline)
				n, _, err := p.pc.ReadFrom(buf)
				if err != nil {
					break
				}
				r := buf[:n]
				ok = bytes.HasPrefix(r, []byte("SIP/2.0 200")) && bytes.Contains(r, []byte(branch))
			}
		}
		p.mu.Lock()
		p.samples = append(p.samples, Sample{At: at, OK: ok})
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// LocalPort is the probes' source port (it picks their ECMP path).
func (p *Prober) LocalPort() int { return p.pc.LocalAddr().(*net.UDPAddr).Port }

// Stop ends the probing and returns every sample.
func (p *Prober) Stop() []Sample {
	close(p.stop)
	<-p.done
	p.pc.Close()
	return p.Samples()
}

// Samples returns the samples so far.
func (p *Prober) Samples() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Sample(nil), p.samples...)
}

// OKSince reports whether the last probe sent at or after t succeeded.
func (p *Prober) OKSince(t time.Time) bool {
	s := p.Samples()
	return len(s) > 0 && !s[len(s)-1].At.Before(t) && s[len(s)-1].OK
}

// Outage measures the loss window around an event at t: from the last
// answered probe before the first lost one sent at or after t, to the
// next answered probe. It returns 0 and 0 lost when no probe after t was
// lost, and an error when service never came back.
func Outage(samples []Sample, t time.Time) (window time.Duration, lost int, err error) {
	first := -1
	for i, s := range samples {
		if !s.At.Before(t) && !s.OK {
			first = i
			break
		}
	}
	if first < 0 {
		return 0, 0, nil
	}
	lastOK := t
	for i := first - 1; i >= 0; i-- {
		if samples[i].OK {
			lastOK = samples[i].At
			break
		}
	}
	for i := first; i < len(samples); i++ {
		if samples[i].OK {
			return samples[i].At.Sub(lastOK), lost, nil
		}
		lost++
	}
	return 0, lost, errors.New("no probe was answered after the outage began")
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
// against remote ("" for a UAS), bound to the client's address, with a
// global timeout. args are more SIPp arguments (-s, -p, -m, -r, ...).
func (c *Client) StartSIPp(ctx context.Context, scenario, remote string, args ...string) (*SIPp, error) {
	dir := filepath.Join(c.lab.dir, "sipp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tag := strings.TrimSuffix(scenario, ".xml") + "-" + randHex(3)
	base := []string{"netns", "exec", c.NS, "sipp",
		"-sf", filepath.Join(c.lab.opts.Scenarios, scenario),
		"-i", c.Region.Client.String(), "-t", "u1", "-nostdin",
		"-key", "domain", Domain,
		"-trace_err", "-error_file", filepath.Join(dir, tag+"-errors.log"),
		"-trace_stat", "-stf", filepath.Join(dir, tag+"-stat.csv"),
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
