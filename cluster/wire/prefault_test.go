package wire

import (
	"bytes"
	"testing"
)

// Prefault takes any slice (unaligned, shorter than a page, empty) and
// leaves what it holds unchanged: it only maps pages.
func TestPrefaultKeepsContents(t *testing.T) {
	buf := make([]byte, 5*4096+123)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	want := bytes.Clone(buf)
	for _, off := range []int{0, 1, 100, 4095, 4096, 4097} {
		for _, n := range []int{0, 1, 4095, 4096, 8193, len(buf) - off} {
			if off+n > len(buf) {
				continue
			}
			Prefault(buf[off : off+n])
		}
	}
	if !bytes.Equal(buf, want) {
		t.Fatal("Prefault changed the buffer's contents")
	}
}
