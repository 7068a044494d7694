//go:build e2e

package netlab_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/e2e/netlab"
)

func TestMain(m *testing.M) { os.Exit(netlab.RunMain(m)) }

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run as root: go test -count=1 -tags e2e ./e2e/...")
	}
}

// ping is one echo with a short timeout.
func ping(from *netlab.Host, to netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := from.Ping(ctx, to)
	return err
}

func mustReach(t *testing.T, a, b *netlab.Host) time.Duration {
	t.Helper()
	return netlab.Eventually(t, 3*time.Second, 20*time.Millisecond, func() error {
		if err := ping(a, b.Addr()); err != nil {
			return err
		}
		return ping(b, a.Addr())
	})
}

func mustNotReach(t *testing.T, a, b *netlab.Host) {
	t.Helper()
	if err := ping(a, b.Addr()); err == nil {
		t.Fatalf("%s still reaches %s", a.Name, b.Name)
	}
	if err := ping(b, a.Addr()); err == nil {
		t.Fatalf("%s still reaches %s", b.Name, a.Name)
	}
}

func twoHosts(t *testing.T) (*netlab.Lab, *netlab.Host, *netlab.Host) {
	lab := netlab.New(t)
	br := lab.Bridge("lan")
	a := lab.Host("a", br, "198.18.0.1/24")
	b := lab.Host("b", br, "198.18.0.2/24")
	return lab, a, b
}

func TestPingCutHeal(t *testing.T) {
	lab, a, b := twoHosts(t)
	t.Logf("first ping both ways after %v", mustReach(t, a, b))

	if err := lab.Cut(a, b); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, a, b)
	if err := lab.Cut(b, a); err == nil {
		t.Fatal("cutting a cut pair: want an error")
	}

	if err := lab.Heal(b, a); err != nil { // either order names the pair
		t.Fatal(err)
	}
	t.Logf("ping both ways %v after heal", mustReach(t, a, b))
	if err := lab.Heal(a, b); err == nil {
		t.Fatal("healing a healed pair: want an error")
	}
	// Heal removed exactly what Cut added: no DROP rule is left.
	for _, h := range []*netlab.Host{a, b} {
		out, err := h.Run(context.Background(), "iptables", "-w", "5", "-S")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "DROP") && strings.Contains(string(out), "198.18.") {
			t.Fatalf("rules left in %s:\n%s", h.Name, out)
		}
	}
}

func TestCutDropsEstablishedTCP(t *testing.T) {
	lab, a, b := twoHosts(t)
	ln, err := b.Listen("tcp", b.Addr().String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", b.Addr().String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func() error {
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		var buf [1]byte
		_, err := io.ReadFull(c, buf[:])
		return err
	}
	if err := echo(); err != nil {
		t.Fatalf("echo before cut: %v", err)
	}
	if err := lab.Cut(a, b); err != nil {
		t.Fatal(err)
	}
	if err := echo(); err == nil {
		t.Fatal("echo through a cut link succeeded")
	}
	if err := lab.Heal(a, b); err != nil {
		t.Fatal(err)
	}
	// The connection survives the cut (nothing reset it): TCP retransmits.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var buf [2]byte
	c.Write([]byte("y"))
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		t.Fatalf("connection did not recover after heal: %v", err)
	}
}

func TestLinkDownUp(t *testing.T) {
	_, a, b := twoHosts(t)
	mustReach(t, a, b)
	if err := b.LinkDown(); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, a, b)
	if err := b.LinkUp(); err != nil {
		t.Fatal(err)
	}
	t.Logf("reachable %v after link up", mustReach(t, a, b))
}

// TestRouter proves hosts with several interfaces and forwarding: a and b
// sit on two bridges and reach each other only through r.
func TestRouter(t *testing.T) {
	lab := netlab.New(t)
	lan1, lan2 := lab.Bridge("lan1"), lab.Bridge("lan2")
	r := lab.Host("r", lan1, "198.18.1.1/24")
	r.Attach(lan2, "198.18.2.1/24")
	a := lab.Host("a", lan1, "198.18.1.2/24")
	b := lab.Host("b", lan2, "198.18.2.2/24")
	if got := len(r.Ifaces()); got != 2 {
		t.Fatalf("router has %d interfaces, want 2", got)
	}
	if err := a.AddRoute("198.18.2.0/24", "198.18.1.1"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddRoute("198.18.1.0/24", "198.18.2.1"); err != nil {
		t.Fatal(err)
	}
	if err := ping(a, b.Addr()); err == nil {
		t.Fatal("routed without forwarding enabled")
	}
	if err := r.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	mustReach(t, a, b)
	// Cut matches the hosts' own addresses: a loses r itself (both of its
	// addresses) but traffic that r forwards still flows.
	if err := lab.Cut(a, r); err != nil {
		t.Fatal(err)
	}
	for _, addr := range r.Addrs() {
		if err := ping(a, addr); err == nil {
			t.Fatalf("a still pings r at %s after cut", addr)
		}
	}
	if err := ping(a, b.Addr()); err != nil {
		t.Fatalf("forwarded traffic blocked by a cut of the router: %v", err)
	}
}

func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// pid (comm) S ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return "", fmt.Errorf("bad stat %q", s)
	}
	return s[i+2 : i+3], nil
}

func TestProc(t *testing.T) {
	_, a, _ := twoHosts(t)
	p := a.Start(t, "sleep.log", "sleep", "60")

	// The PID is the program's own, and it runs in a's namespace.
	netlab.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID()))
		if err != nil {
			return err
		}
		if c := strings.TrimSpace(string(comm)); c != "sleep" {
			return fmt.Errorf("pid %d is %q", p.PID(), c)
		}
		return nil
	})
	var want, got syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+a.NS, &want); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", p.PID()), &got); err != nil {
		t.Fatal(err)
	}
	if want.Ino != got.Ino {
		t.Fatalf("process netns inode %d, want %d (%s)", got.Ino, want.Ino, a.NS)
	}

	state := func(want string) func() error {
		return func() error {
			s, err := procState(p.PID())
			if err != nil {
				return err
			}
			if s != want {
				return fmt.Errorf("state %s, want %s", s, want)
			}
			return nil
		}
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	netlab.Eventually(t, 2*time.Second, 10*time.Millisecond, state("T"))
	if err := p.Cont(); err != nil {
		t.Fatal(err)
	}
	netlab.Eventually(t, 2*time.Second, 10*time.Millisecond, state("S"))
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err, ok := p.WaitTimeout(5 * time.Second)
	if !ok || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("after SIGKILL: exited %v, err %v", ok, err)
	}

	// Terminate: SIGTERM works on a frozen process too (SIGCONT follows).
	q := a.Start(t, "sleep2.log", "sleep", "60")
	q.Stop()
	if err := q.Terminate(2 * time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("terminate: %v", err)
	}
}

// TestCleanup proves that a lab leaves nothing behind: no namespace with its
// prefix and no process it started.
func TestCleanup(t *testing.T) {
	needRoot(t)
	var prefix string
	var p *netlab.Proc
	t.Run("lab", func(t *testing.T) {
		lab, a, b := twoHosts(t)
		prefix = lab.Prefix
		p = a.Start(t, "sleep.log", "sleep", "60")
		if err := lab.Cut(a, b); err != nil {
			t.Fatal(err)
		}
		if n := len(netlab.Prefixed(prefix)); n != 3 {
			t.Fatalf("%d namespaces with prefix %s, want 3 (switch, a, b)", n, prefix)
		}
	})
	if left := netlab.Prefixed(prefix); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if !p.Exited() {
		t.Fatalf("process %d still running", p.PID())
	}
}

func TestPurge(t *testing.T) {
	needRoot(t)
	prefix := fmt.Sprintf("ae%05x", time.Now().UnixNano()&0xfffff)
	t.Cleanup(func() { netlab.Purge(prefix) })
	for _, n := range []string{"x", "y"} {
		cmd := []string{"ip", "netns", "add", prefix + "-" + n}
		if out, err := execOut(cmd...); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	if err := netlab.Purge(prefix); err != nil {
		t.Fatal(err)
	}
	if left := netlab.Prefixed(prefix); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if err := netlab.Purge("ae"); err == nil {
		t.Fatal("purging a too-short prefix: want an error")
	}
}

func execOut(args ...string) (string, error) {
	var out strings.Builder
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestHoldLab is the child of TestSignalCleanup and TestKilledRunPurge:
// it builds a lab with a running process, says so, and waits to be killed.
func TestHoldLab(t *testing.T) {
	if os.Getenv("NETLAB_HOLD") == "" {
		t.Skip("helper process for TestSignalCleanup")
	}
	lab, a, _ := twoHosts(t)
	p := a.Start(t, "sleep.log", "sleep", "300")
	fmt.Printf("HOLD prefix=%s pid=%d\n", lab.Prefix, p.PID())
	select {
	case <-time.After(time.Minute):
	case <-p.Done():
	}
	t.Fatal("not killed in time")
}

// holdLab starts TestHoldLab in a child test binary and returns it with the
// lab prefix and the PID of the child's own child.
func holdLab(t *testing.T) (*exec.Cmd, string, int) {
	needRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldLab$", "-test.v", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), "NETLAB_HOLD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := out.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("child ended without building its lab")
			}
			var prefix string
			var pid int
			if _, err := fmt.Sscanf(l, "HOLD prefix=%s pid=%d", &prefix, &pid); err == nil {
				t.Cleanup(func() { netlab.Purge(prefix) })
				go func() {
					for range lines {
					}
				}()
				return cmd, prefix, pid
			}
		case <-timeout:
			t.Fatal("child did not build its lab in 20 s")
		}
	}
}

// gone reports whether pid no longer runs sleep (it may have been reused).
func gone(pid int) error {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err == nil && strings.TrimSpace(string(comm)) == "sleep" {
		return fmt.Errorf("pid %d still runs sleep", pid)
	}
	return nil
}

// TestSignalCleanup proves RunMain's handler: SIGINT to a test binary
// removes its labs and stops its processes.
func TestSignalCleanup(t *testing.T) {
	cmd, prefix, pid := holdLab(t)
	if n := len(netlab.Prefixed(prefix)); n == 0 {
		t.Fatalf("child's lab %s not found", prefix)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	t.Logf("child after SIGINT: %v", err)
	if code := cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGINT) {
		t.Errorf("child exit code %d, want %d", code, 128+int(syscall.SIGINT))
	}
	if left := netlab.Prefixed(prefix); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error { return gone(pid) })
}

// TestKilledRunPurge proves the last resort: a test binary killed with
// SIGKILL takes its processes with it (parent-death signal), and Purge
// removes the namespaces it left.
func TestKilledRunPurge(t *testing.T) {
	cmd, prefix, pid := holdLab(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	netlab.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error { return gone(pid) })
	if len(netlab.Prefixed(prefix)) == 0 {
		t.Fatal("a SIGKILLed run cleaned up after itself? (test is broken)")
	}
	if err := netlab.Purge(prefix); err != nil {
		t.Fatal(err)
	}
	if left := netlab.Prefixed(prefix); len(left) > 0 {
		t.Fatalf("left behind after purge: %v", left)
	}
}
