package wire

import (
	"bytes"
	"io"
	"testing"
)

// typicalFrame is a capability replication frame with a 200-byte body, the
// bulk of steady-state cluster traffic.
func typicalFrame() *Frame {
	return &Frame{Type: 2, Src: 3, Dst: 4, TTL: DefaultTTL, Cap: "usrloc", Body: bytes.Repeat([]byte{0x5a}, 200)}
}

func reportFrames(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

func BenchmarkEncode(b *testing.B) {
	f := typicalFrame()
	buf := make([]byte, 0, EncodedLen(f))
	b.SetBytes(int64(EncodedLen(f)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendFrame(buf[:0], f); err != nil {
			b.Fatal(err)
		}
	}
	reportFrames(b)
}

func BenchmarkDecode(b *testing.B) {
	enc := mustEncode(b, typicalFrame())
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
	reportFrames(b)
}

// repeatReader replays one buffer forever, standing in for a socket.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

var _ io.Reader = (*repeatReader)(nil)

// BenchmarkFrameReader is Decode as the transport uses it: streaming from a
// reader through the bufio buffer.
func BenchmarkFrameReader(b *testing.B) {
	enc := mustEncode(b, typicalFrame())
	fr := NewFrameReader(&repeatReader{b: enc})
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
	reportFrames(b)
}
