//go:build linux

package netlab

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// RunMain runs the tests of a package that uses netlab. Use it from
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(netlab.RunMain(m)) }
//
// Besides m.Run it tears down every live lab (and runs atExit) when
// SIGINT or SIGTERM arrives, and shortly before -test.timeout would panic
// the binary (a panicking test binary runs no t.Cleanup).
func RunMain(m *testing.M, atExit ...func()) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	final := func() {
		if err := CleanupAll(); err != nil {
			fmt.Fprintf(os.Stderr, "netlab: cleanup: %v\n", err)
		}
		for _, f := range atExit {
			f()
		}
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		sig, ok := <-sigc
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "netlab: %v: removing labs\n", sig)
		final()
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()

	if f := flag.Lookup("test.timeout"); f != nil {
		if d, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && d > 0 {
			margin := min(5*time.Second, d/10)
			watchdog := time.AfterFunc(d-margin, func() {
				fmt.Fprintf(os.Stderr, "netlab: -test.timeout %v is near: removing labs\n", d)
				if err := CleanupAll(); err != nil {
					fmt.Fprintf(os.Stderr, "netlab: cleanup: %v\n", err)
				}
			})
			defer watchdog.Stop()
		}
	}

	code := m.Run()
	final()
	return code
}
