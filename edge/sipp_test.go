package edge

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/upstream"
)

// The SIPp scenarios in sipp/ run against a live edge on loopback. Every
// SIPp run is bounded: one call (-m 1), a global timeout that fails the
// run (-timeout, -timeout_error), and a context deadline on the process.

func sippBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed")
	}
	return p
}

// freeUDPPort returns a loopback UDP port nobody uses right now (for a
// SIPp UAS whose port must be registered before it listens).
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

type sippProc struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	dir  string
	done chan error
}

// startSipp starts one SIPp run of scenario; remote "" makes it a UAS.
func startSipp(t *testing.T, scenario, remote string, args ...string) *sippProc {
	t.Helper()
	bin := sippBinary(t)
	dir := t.TempDir()
	base := []string{"-sf", filepath.Join("sipp", scenario), "-m", "1", "-l", "1", "-i", "127.0.0.1",
		"-t", "u1", "-timeout", "10s", "-timeout_error", "-buff_size", "4194304", "-nostdin",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log")}
	if !slices.Contains(args, "-key") {
		base = append(base, "-key", "domain", domain)
	}
	base = append(base, args...)
	if !slices.Contains(args, "-p") {
		// SIPp takes 5060 when it is free: never a fixed port.
		base = append(base, "-p", strconv.Itoa(freeUDPPort(t)))
	}
	if remote != "" {
		base = append(base, remote)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	p := &sippProc{name: scenario, dir: dir, done: make(chan error, 1)}
	p.cmd = exec.CommandContext(ctx, bin, base...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", scenario, err)
	}
	go func() { p.done <- p.cmd.Wait(); cancel() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the run and fails the test, with SIPp's logs, unless
// it passed.
func (p *sippProc) wait(t *testing.T) {
	t.Helper()
	err := <-p.done
	p.done <- err // idempotent for Cleanup
	if err == nil {
		return
	}
	var logs bytes.Buffer
	for _, f := range []string{"errors.log", "messages.log"} {
		if b, rerr := os.ReadFile(filepath.Join(p.dir, f)); rerr == nil {
			fmt.Fprintf(&logs, "--- %s\n%s\n", f, tail(b, 6000))
		}
	}
	t.Fatalf("sipp %s failed: %v\n%s\n%s", p.name, err, tail(p.out.Bytes(), 2000), logs.String())
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// runSipp runs a scenario to completion.
func runSipp(t *testing.T, scenario, remote string, args ...string) {
	t.Helper()
	startSipp(t, scenario, remote, args...).wait(t)
}

// registerPort registers user's contact at 127.0.0.1:port through the
// edge with digest auth, so that a UAS scenario started on that port
// afterwards gets the calls.
func registerPort(t *testing.T, edge, user string, port int) {
	t.Helper()
	runSipp(t, "uac_register.xml", edge, "-s", user, "-au", user, "-ap", user+"pw", "-p", strconv.Itoa(port))
}

func sippAuthServer(t *testing.T) *fixture {
	t.Helper()
	subs := filepath.Join(t.TempDir(), "subscribers")
	// MD5 HA1s only: SIPp answers the first challenge and knows no
	// SHA-256, so the edge must offer MD5 alone for these users.
	var lines string
	for _, u := range []string{"alice", "bob", "dave", "erin", "mallory"} {
		ha1 := md5.Sum([]byte(u + ":" + domain + ":" + u + "pw"))
		lines += u + " " + domain + " " + hex.EncodeToString(ha1[:]) + " -\n"
	}
	if err := os.WriteFile(subs, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	no := false
	return startServer(t, func(c *Config) {
		c.Auth = AuthConfig{Enabled: true, SubscribersFile: subs, Invite: &no}
		c.Timeouts.NoResponse = 2 * time.Second
	})
}

func TestSIPpRegister(t *testing.T) {
	sippBinary(t)
	f := sippAuthServer(t)
	runSipp(t, "uac_register.xml", f.udp, "-s", "alice", "-au", "alice", "-ap", "alicepw")
	runSipp(t, "uac_register_badpass.xml", f.udp, "-s", "mallory", "-au", "mallory", "-ap", "wrong")
	if f.store.Len() != 1 {
		t.Fatalf("%d bindings, want alice's", f.store.Len())
	}
}

func TestSIPpReRegisterUnregister(t *testing.T) {
	sippBinary(t)
	f := startServer(t, nil)
	runSipp(t, "uac_reg_rereg_unreg.xml", f.udp, "-s", "carol")
	if f.store.Len() != 0 {
		t.Fatalf("%d bindings left after unregister", f.store.Len())
	}
}

func TestSIPpCalls(t *testing.T) {
	sippBinary(t)
	f := sippAuthServer(t)

	t.Run("call", func(t *testing.T) {
		port := freeUDPPort(t)
		registerPort(t, f.udp, "bob", port)
		uas := startSipp(t, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(port))
		runSipp(t, "uac_call.xml", f.udp, "-s", "bob")
		uas.wait(t)
	})
	t.Run("cancel", func(t *testing.T) {
		port := freeUDPPort(t)
		registerPort(t, f.udp, "dave", port)
		uas := startSipp(t, "uas_ring.xml", "", "-aa", "-p", strconv.Itoa(port))
		runSipp(t, "uac_cancel.xml", f.udp, "-s", "dave")
		uas.wait(t)
	})
	t.Run("404", func(t *testing.T) {
		runSipp(t, "uac_404.xml", f.udp, "-s", "nobody")
	})
	t.Run("parallel fork", func(t *testing.T) {
		answer, ring := freeUDPPort(t), freeUDPPort(t)
		registerPort(t, f.udp, "erin", answer)
		registerPort(t, f.udp, "erin", ring)
		a := startSipp(t, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(answer))
		r := startSipp(t, "uas_ring.xml", "", "-aa", "-p", strconv.Itoa(ring))
		runSipp(t, "uac_call.xml", f.udp, "-s", "erin")
		a.wait(t)
		r.wait(t) // the losing branch was cancelled
	})
}

func TestSIPpUpstreamFailover(t *testing.T) {
	sippBinary(t)
	dead, hits := deadPeer(t)
	port := freeUDPPort(t)
	alive := "127.0.0.1:" + strconv.Itoa(port)
	f := startServer(t, func(c *Config) {
		c.Upstreams = []upstream.Target{{Addr: dead, Weight: 1000000}, {Addr: alive, Weight: 1}}
		c.UpstreamHealth.Interval = -1
		c.Timeouts.NoResponse = time.Second
	})
	core := startSipp(t, "uas_answer.xml", "", "-aa", "-p", strconv.Itoa(port))
	// The caller is on the upstreams' address, hence trusted.
	runSipp(t, "uac_call.xml", f.udp, "-s", "15551234", "-key", "domain", "carrier.example.net")
	core.wait(t)
	if hits.Load() == 0 {
		t.Error("the dead upstream was never tried")
	}
}
