package wire

import "syscall"

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14).
const madvPopulateWrite = 23

// prefault maps b's pages in one madvise call instead of one page fault per
// 4 KiB as the frame is read into it. Fresh memory is where a snapshot's
// records end up, so a receiver touches hundreds of megabytes of it; on a
// VM each fault is a trap costing several µs. Best effort: an older kernel
// (EINVAL) or an unaligned start changes nothing but the speed.
func prefault(b []byte) {
	if n := len(b) &^ 4095; n > 0 {
		_ = syscall.Madvise(b[:n], madvPopulateWrite)
	}
}
