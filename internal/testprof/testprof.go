// Package testprof starts a CPU profile at a moment a test chooses, for
// the donor processes of the sync benchmarks: their profile must leave
// out how they filled themselves.
package testprof

import (
	"os"
	"runtime/pprof"
	"testing"
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
