//go:build linux

package location

import "golang.org/x/sys/unix"

// mapChunk maps n bytes of private anonymous memory: zero pages that the
// kernel backs only when touched, and that the Go collector never scans.
func mapChunk(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

func unmapChunk(b []byte) { _ = unix.Munmap(b) }
