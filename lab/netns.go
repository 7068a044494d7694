//go:build linux

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/run/netns"

// cmdTimeout bounds one short command (ip, sysctl, birdc).
const cmdTimeout = 15 * time.Second

// run runs a short command and returns its output; the error carries the
// command and its stderr.
func run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// inNS runs a command inside namespace ns.
func inNS(ns string, args ...string) (string, error) {
	return run(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// batch runs `ip -batch` in namespace ns ("": the caller's) with the
// given lines (one ip command each, without the leading "ip"): one
// process for many changes, which matters on a loaded machine.
func batch(ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -batch: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// nsExists reports whether the named namespace exists.
func nsExists(ns string) bool {
	_, err := os.Stat(netnsDir + "/" + ns)
	return err == nil
}

// namespaces lists the namespaces whose names start with prefix+"-".
func namespaces(prefix string) []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// delNS deletes a namespace (its veths go with it); a missing one is fine.
func delNS(ns string) error {
	if !nsExists(ns) {
		return nil
	}
	_, err := run("ip", "netns", "del", ns)
	return err
}

// dialer dials from inside a namespace: the socket is created on a thread
// that has entered it, and belongs to it for its whole life.
type dialer struct{ ns string }

func (d dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := withNS(d.ns, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listenPacket opens a packet socket inside a namespace.
func listenPacket(ns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := withNS(ns, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// withNS runs fn on an OS thread that has entered namespace ns. fn should
// only create sockets. If the thread cannot go back to its namespace, the
// goroutine exits locked and the runtime discards the thread.
func withNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back := false
		defer func() {
			if back {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			back = true
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(netnsDir+"/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			back = true
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			back = true
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = fn()
		back = unix.Setns(orig, unix.CLONE_NEWNET) == nil
		errc <- err
	}()
	return <-errc
}

// httpClient makes requests from inside namespace ns.
func httpClient(ns string) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DialContext:         dialer{ns}.DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     10 * time.Second,
			DisableCompression:  true,
		},
	}
}

// poll calls fn at once and then every interval until it returns nil, or
// timeout has passed (then it returns fn's last error), or fn returns an
// error wrapped by permanent.
func poll(timeout, interval time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var p permanentErr
		if errors.As(err, &p) {
			return p.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		<-t.C
	}
}

type permanentErr struct{ err error }

func (p permanentErr) Error() string { return p.err.Error() }

// permanent stops a poll at once.
func permanent(err error) error { return permanentErr{err} }
