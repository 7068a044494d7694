//go:build linux

package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process the lab started inside a namespace. It is only ever
// signalled by its PID, and only after checking that the PID still names
// the same process (its start time), never by name.
type Proc struct {
	Name string `json:"name"` // "bird-ra", "edged-a1", ...
	NS   string `json:"ns"`
	PID  int    `json:"pid"`
	// Start is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22): a reused PID has another.
	Start uint64   `json:"start"`
	Log   string   `json:"log"`
	Argv  []string `json:"argv"`

	cmd  *exec.Cmd     // nil for a process loaded from the state file
	done chan struct{} // closed when cmd.Wait returns
}

// startProc starts argv inside ns with stdout and stderr appended to
// logPath. A detached process starts its own session and outlives the
// caller (make lab); an attached one dies with the caller (tests).
func startProc(name, ns, logPath string, detach bool, argv ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// `ip netns exec` execs the program in place: the PID is the program's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &Proc{Name: name, NS: ns, PID: cmd.Process.Pid, Log: logPath, Argv: argv, cmd: cmd, done: make(chan struct{})}
	p.Start, _ = startTime(p.PID)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// startTime reads field 22 of /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: split after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("short /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// state reads the process state letter (R, S, T, Z, ...), "" when gone.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// Alive reports whether the process still runs (a zombie does not).
func (p *Proc) Alive() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
		}
	}
	st, err := startTime(p.PID)
	if err != nil || st != p.Start {
		return false
	}
	s := procState(p.PID)
	return s != "" && s != "Z" && s != "X"
}

// Signal sends sig if the PID is still this process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID)
	}
	return syscall.Kill(p.PID, sig)
}

// Stop terminates the process: SIGTERM (and SIGCONT, in case it is
// frozen), then SIGKILL after grace. It returns once the process is gone.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	_ = p.Signal(syscall.SIGTERM)
	_ = p.Signal(syscall.SIGCONT)
	if p.wait(grace) {
		return nil
	}
	_ = p.Signal(syscall.SIGKILL)
	if p.wait(10 * time.Second) {
		return nil
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.wait(10 * time.Second) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
	return nil
}

// wait waits up to d for the process to exit.
func (p *Proc) wait(d time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	// Not our child (loaded from the state file): poll /proc.
	return poll(d, 20*time.Millisecond, func() error {
		if p.Alive() {
			return errors.New("running")
		}
		return nil
	}) == nil
}

// Exited is closed when an attached process has exited; nil for one
// loaded from the state file.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
