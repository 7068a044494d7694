// Package testprof measures the processes of the sync benchmarks: a CPU
// profile started at a moment the test chooses (a donor's must leave out
// how it filled itself), and what a process used so far.
package testprof

import (
	"bytes"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartCPU profiles the process into path until tb ends. An empty path
// does nothing.
func StartCPU(tb testing.TB, path string) {
	tb.Helper()
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			tb.Error(err)
		}
	})
}

// Usage is what /proc/PID/stat says a process used so far.
type Usage struct {
	CPU    time.Duration // user+system, in clock ticks of 10 ms
	Faults int64         // minor page faults: first touches of new memory
}

// ReadUsage reads /proc/PID/stat (Linux; ok is false elsewhere).
func ReadUsage(pid int) (u Usage, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return u, false
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	if len(f) < 13 {
		return u, false
	}
	minflt, err0 := strconv.ParseInt(f[7], 10, 64)
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err0 != nil || err1 != nil || err2 != nil {
		return u, false
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return Usage{CPU: time.Duration(utime+stime) * tick, Faults: minflt}, true
}
