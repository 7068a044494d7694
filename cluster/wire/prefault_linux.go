package wire

import (
	"syscall"
	"unsafe"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14).
const madvPopulateWrite = 23

// Prefault maps b's pages in one madvise call instead of one page fault per
// 4 KiB as the frame is read into it. Fresh memory is where a snapshot's
// records end up, so a receiver touches hundreds of megabytes of it; on a
// VM each fault is a trap costing several µs. Only the whole pages inside
// b are touched. Best effort: an older kernel (EINVAL) changes nothing but
// the speed.
func Prefault(b []byte) {
	const page = 4096
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (page - 1))
	if skip >= len(b) {
		return
	}
	b = b[skip:]
	if n := len(b) &^ (page - 1); n > 0 {
		_ = syscall.Madvise(b[:n], madvPopulateWrite)
	}
}
