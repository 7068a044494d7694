package netlab

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// permanent marks an error that no amount of waiting will fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Poll and Eventually stop at once (for example
// when the daemon being polled has exited).
func Permanent(err error) error { return permanent{err} }

// Poll calls fn at once and then every interval until it returns nil, it
// returns a Permanent error, or timeout has passed. It returns the time
// from the start to fn's first success. It is safe in any goroutine.
func Poll(timeout, interval time.Duration, fn func() error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return time.Since(start), nil
		}
		var p permanent
		if errors.As(err, &p) {
			return time.Since(start), p.err
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("still failing after %v: %w", timeout, err)
		}
		<-tick.C
	}
}

// Eventually is Poll that fails the test (from the test's goroutine) when
// fn does not succeed in time. It returns how long success took.
func Eventually(t testing.TB, timeout, interval time.Duration, fn func() error) time.Duration {
	t.Helper()
	d, err := Poll(timeout, interval, fn)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Consistently checks that fn keeps succeeding, every interval, for the
// whole of d. It fails the test at the first error.
func Consistently(t testing.TB, d, interval time.Duration, fn func() error) {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := fn(); err != nil {
			t.Fatalf("after %v of %v: %v", time.Since(start).Round(time.Millisecond), d, err)
		}
		if time.Since(start) >= d {
			return
		}
		<-tick.C
	}
}
