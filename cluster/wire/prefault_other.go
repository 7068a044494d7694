//go:build !linux

package wire

// prefault is a no-op where MADV_POPULATE_WRITE does not exist.
func prefault([]byte) {}
