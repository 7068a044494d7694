//go:build linux

package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Proc is a long-running process started in a host's namespace. It is
// only ever signalled by its own PID (through os.Process, which is safe
// against PID reuse), never by name.
type Proc struct {
	Name    string // program name, for messages
	LogPath string // stdout and stderr go here
	Host    *Host

	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// Start starts name with args inside the host's namespace, with stdout and
// stderr appended to logfile (a base name, placed under t.TempDir()). The
// process is stopped when t ends (SIGTERM, then SIGKILL after 3 s) and
// when the lab closes. It dies with the test binary (parent-death signal).
func (h *Host) Start(t testing.TB, logfile, name string, args ...string) *Proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), filepath.Base(logfile))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("netlab: %s: log: %v", name, err)
	}
	// `ip netns exec` execs the program in place: the PID we hold is the
	// program's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's ^C goes to us, and we clean up
		Pdeathsig: syscall.SIGKILL, // never outlive the test binary
	}
	p := &Proc{Name: filepath.Base(name), LogPath: path, Host: h, cmd: cmd, done: make(chan struct{})}

	h.lab.mu.Lock() // no process may start while the lab is being torn down
	if h.lab.closed {
		h.lab.mu.Unlock()
		f.Close()
		t.Fatalf("netlab: %s: lab is closed", name)
	}
	err = cmd.Start()
	if err == nil {
		h.lab.pmu.Lock()
		h.lab.procs = append(h.lab.procs, p)
		h.lab.pmu.Unlock()
	}
	h.lab.mu.Unlock()
	if err != nil {
		f.Close()
		t.Fatalf("netlab: start %s in %s: %v", name, h.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	// Runs before TempDir's removal of the log (cleanups are LIFO).
	t.Cleanup(func() {
		state := p.State()
		p.Terminate(3 * time.Second)
		if t.Failed() {
			t.Logf("netlab: %s in %s (pid %d, %s before teardown), last 40 lines of %s:\n%s",
				p.Name, h.Name, p.PID(), state, path, p.Tail(40))
		}
	})
	return p
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL.
func (p *Proc) Kill() error { return p.Signal(syscall.SIGKILL) }

// Stop freezes the process (SIGSTOP).
func (p *Proc) Stop() error { return p.Signal(syscall.SIGSTOP) }

// Cont resumes a frozen process (SIGCONT).
func (p *Proc) Cont() error { return p.Signal(syscall.SIGCONT) }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait did.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// WaitTimeout waits at most d. ok is false if the process still runs.
func (p *Proc) WaitTimeout(d time.Duration) (err error, ok bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(d):
		return nil, false
	}
}

// ExitCode is the exit status, or -1 while running or when killed by a
// signal.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Terminate stops the process: SIGTERM (and SIGCONT, in case it is
// frozen), then SIGKILL if it has not exited after grace. It returns once
// the process is reaped. Calling it again is harmless.
func (p *Proc) Terminate(grace time.Duration) error {
	if p.Exited() {
		return p.err
	}
	p.Signal(syscall.SIGTERM)
	p.Signal(syscall.SIGCONT)
	if err, ok := p.WaitTimeout(grace); ok {
		return err
	}
	p.Kill()
	if err, ok := p.WaitTimeout(10 * time.Second); ok {
		return err
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID())
}

// Log returns the whole log so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	b = bytes.TrimRight(b, "\n")
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// State describes how the process ended, for messages.
func (p *Proc) State() string {
	if !p.Exited() {
		return "running"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ProcessState.String()
	}
	if p.err != nil {
		return p.err.Error()
	}
	return "exit status 0"
}
