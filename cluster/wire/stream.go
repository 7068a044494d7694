package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultReadBuffer is the FrameReader's buffer size. Small frames (the
// common case: heartbeats, LSAs, replication records) are decoded from the
// buffer, many per read syscall.
const DefaultReadBuffer = 64 << 10

// directRead is the frame size from which a FrameReader reads the frame
// into memory of its own instead of decoding it from the buffer: snapshot
// chunks go from the socket into the memory their records end up in, not
// through the buffer and a copy.
const directRead = 16 << 10

// FrameReader reads frames from a byte stream (a TCP or TLS connection).
//
// It is the streaming counterpart of Decode. (It is not called Reader
// because that name is taken by the body field reader in buf.go.)
//
// Frames returned by ReadFrame own their memory: Cap and Body never alias
// the reader's reusable buffer, so a frame may be handed to another
// goroutine while the reader goes on. A big frame's memory may come back
// for later frames through Recycle.
//
// Error handling follows Decode's sentinels:
//   - an ErrBadFrame-wrapped error means exactly that frame was consumed and
//     dropped; the next ReadFrame continues with the following frame;
//   - ErrTooLarge, io.EOF (clean end between frames), io.ErrUnexpectedEOF
//     (end inside a frame) and read errors are sticky: the stream is
//     unusable and every later call returns the same error.
//
// A FrameReader is not safe for concurrent use.
type FrameReader struct {
	src     io.Reader // under br, read directly once br is drained
	br      *bufio.Reader
	maxSize int
	err     error // sticky
}

// NewFrameReader returns a FrameReader over r with a DefaultReadBuffer-sized
// buffer and a size limit of MaxFrameSize.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{src: r, br: bufio.NewReaderSize(r, DefaultReadBuffer), maxSize: MaxFrameSize}
}

// SetMaxSize lowers the largest frame (length prefix excluded) the reader
// accepts; bigger ones fail with ErrTooLarge before anything is allocated.
// The transport uses it to cap handshake frames at 64 KiB from a peer that
// has not authenticated yet. n <= 0 or n > MaxFrameSize means MaxFrameSize.
func (r *FrameReader) SetMaxSize(n int) {
	if n <= 0 || n > MaxFrameSize {
		n = MaxFrameSize
	}
	r.maxSize = n
}

// ReadFrame reads the next frame. See FrameReader for the error contract.
func (r *FrameReader) ReadFrame() (*Frame, error) {
	if r.err != nil {
		return nil, r.err
	}
	f, err := r.readFrame()
	if err != nil && !errors.Is(err, ErrBadFrame) {
		r.err = err
	}
	return f, err
}

func (r *FrameReader) readFrame() (*Frame, error) {
	hdr, err := r.br.Peek(lenSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	size, err := frameSize(hdr)
	if err != nil {
		return nil, err
	}
	if size > r.maxSize {
		return nil, fmt.Errorf("%w: length prefix %d, limit %d", ErrTooLarge, size, r.maxSize)
	}
	total := lenSize + size
	if size < directRead {
		// Common case: decode straight out of the bufio buffer, then
		// release it. parse copies what it keeps.
		p, err := r.br.Peek(total)
		if err != nil {
			return nil, eofInFrame(err)
		}
		f, perr := parse(p[lenSize:])
		if _, err := r.br.Discard(total); err != nil {
			return nil, err // cannot happen: the bytes were peeked
		}
		return f, perr
	}
	// Big frame (snapshot chunks): into a buffer that the frame then owns,
	// so a link keeps no 1 MiB scratch buffer alive. What the bufio buffer
	// holds is copied; the rest comes straight from the source, one copy
	// (the kernel's) instead of two.
	if _, err := r.br.Discard(lenSize); err != nil {
		return nil, err // cannot happen: the prefix was peeked
	}
	// Only a snapshot chunk borrows pooled memory: the cluster recycles
	// those (and nothing else), and the pool's buffers are rounded up to
	// bigFrameCap, which a mid-sized replication frame would waste.
	var pb *bigBuf
	var buf []byte
	if h, err := r.br.Peek(HeaderSize); err == nil && isSyncChunk(h) {
		pb = getBig(size)
		buf = pb.b[:size]
	} else {
		buf = make([]byte, size)
		Prefault(buf)
	}
	n := 0
	if b := r.br.Buffered(); b > 0 {
		n, _ = r.br.Read(buf[:min(b, size)]) // buffered bytes only: no read
	}
	if n < size {
		// br is empty now, so reading src keeps the stream in order.
		if _, err := io.ReadFull(r.src, buf[n:]); err != nil {
			return nil, eofInFrame(err)
		}
	}
	f, err := parseNoCopy(buf)
	if f != nil {
		f.big = pb
	}
	return f, err
}

// isSyncChunk: the frame header h is the cluster's own snapshot chunk.
func isSyncChunk(h []byte) bool {
	return h[17] == 0 && MsgType(binary.BigEndian.Uint16(h[6:8])) == MsgSyncChunk
}

// bigBuf is the memory of a big frame, lent to it by bigPool.
type bigBuf struct{ b []byte }

// bigPool recycles big frames' memory (Recycle). A new node's sync reads
// hundreds of megabytes of snapshot chunks; a fresh buffer per chunk was
// that much new memory to fault in (a tenth of the receiver's CPU), and
// garbage right after the chunk was applied. A sync.Pool, so that a link
// that no longer syncs keeps nothing past two collections.
var bigPool sync.Pool

// bigFrameCap is the least capacity of a big frame's buffer: a default
// snapshot chunk (64 KiB of records plus their framing) fits, so that one
// buffer serves any chunk of a sync.
const bigFrameCap = 72 << 10

func getBig(size int) *bigBuf {
	if pb, _ := bigPool.Get().(*bigBuf); pb != nil {
		if cap(pb.b) >= size {
			return pb
		}
	}
	// Fresh memory: faulted in with one madvise, not a fault per page
	// as the frame is read into it.
	b := make([]byte, max(size, bigFrameCap))
	Prefault(b)
	return &bigBuf{b: b}
}

// Recycle gives the memory of a frame read by a FrameReader back for the
// frames read after it (of any reader). Call it only once nothing refers
// to f's Body, or to anything sliced from it, any more; the cluster does
// so for snapshot chunks, whose records Capability.Apply must not keep.
// It does nothing for small frames, which own copies.
func Recycle(f *Frame) {
	if pb := f.big; pb != nil {
		f.big, f.Body = nil, nil
		bigPool.Put(pb)
	}
}

func eofInFrame(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
