//go:build !linux

package wire

// Prefault is a no-op where MADV_POPULATE_WRITE does not exist.
func Prefault([]byte) {}
