package wire

import (
	"encoding/binary"
	"errors"
	"math"
)

// ErrShort is returned by a Reader that ran out of bytes.
var ErrShort = errors.New("wire: body too short")

// Writer appends network-byte-order fields to a body.
type Writer struct{ B []byte }

func (w *Writer) U8(v uint8)   { w.B = append(w.B, v) }
func (w *Writer) U16(v uint16) { w.B = binary.BigEndian.AppendUint16(w.B, v) }
func (w *Writer) U32(v uint32) { w.B = binary.BigEndian.AppendUint32(w.B, v) }
func (w *Writer) U64(v uint64) { w.B = binary.BigEndian.AppendUint64(w.B, v) }
func (w *Writer) I64(v int64)  { w.U64(uint64(v)) }
func (w *Writer) Bool(v bool) {
	if v {
		w.U8(1)
	} else {
		w.U8(0)
	}
}

// String writes a string with a 16-bit length; longer strings are cut.
func (w *Writer) String(s string) {
	if len(s) > math.MaxUint16 {
		s = s[:math.MaxUint16]
	}
	w.U16(uint16(len(s)))
	w.B = append(w.B, s...)
}

// Bytes writes a blob with a 32-bit length.
func (w *Writer) Bytes(b []byte) {
	w.U32(uint32(len(b)))
	w.B = append(w.B, b...)
}

// Reader reads fields written by Writer. The first error sticks: check Err
// once after reading everything.
type Reader struct {
	B   []byte
	Err error
}

func (r *Reader) take(n int) []byte {
	if r.Err != nil {
		return nil
	}
	if n < 0 || len(r.B) < n {
		r.Err = ErrShort
		r.B = nil
		return nil
	}
	b := r.B[:n]
	r.B = r.B[n:]
	return b
}

func (r *Reader) U8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}
func (r *Reader) U16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (r *Reader) U32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}
func (r *Reader) U64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
func (r *Reader) I64() int64 { return int64(r.U64()) }
func (r *Reader) Bool() bool { return r.U8() != 0 }
func (r *Reader) String() string {
	n := int(r.U16())
	return string(r.take(n))
}

// Bytes returns a sub-slice of the body (no copy).
func (r *Reader) Bytes() []byte {
	n := r.U32()
	if uint64(n) > uint64(len(r.B)) {
		r.Err = ErrShort
		r.B = nil
		return nil
	}
	return r.take(int(n))
}

// Count reads a 32-bit element count and refuses counts that could not fit
// in what is left of the body (each element needing at least min bytes), so
// a hostile count can't make the caller allocate.
func (r *Reader) Count(min int) int {
	n := r.U32()
	if r.Err != nil {
		return 0
	}
	if min < 1 {
		min = 1
	}
	if uint64(n)*uint64(min) > uint64(len(r.B)) {
		r.Err = ErrShort
		r.B = nil
		return 0
	}
	return int(n)
}
