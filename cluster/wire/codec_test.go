package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// rawFrame builds frame bytes field by field, bypassing AppendFrame's
// validation, so tests can forge every malformed variant.
type rawFrame struct {
	length  int // -1: computed
	magic   uint32
	version uint8
	flags   uint8
	typ     uint16
	src     uint32
	dst     uint32
	ttl     uint8
	capLen  int // -1: len(cap)
	cap     string
	body    []byte
}

func good() rawFrame {
	return rawFrame{length: -1, magic: Magic, version: Version, typ: uint16(MsgPing), src: 7, dst: 9, ttl: DefaultTTL, capLen: -1}
}

func (r rawFrame) bytes() []byte {
	capLen := r.capLen
	if capLen < 0 {
		capLen = len(r.cap)
	}
	n := r.length
	if n < 0 {
		n = HeaderSize + len(r.cap) + len(r.body)
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(n))
	b = binary.BigEndian.AppendUint32(b, r.magic)
	b = append(b, r.version, r.flags)
	b = binary.BigEndian.AppendUint16(b, r.typ)
	b = binary.BigEndian.AppendUint32(b, r.src)
	b = binary.BigEndian.AppendUint32(b, r.dst)
	b = append(b, r.ttl, uint8(capLen))
	b = append(b, r.cap...)
	return append(b, r.body...)
}

func mustEncode(t testing.TB, f *Frame) []byte {
	t.Helper()
	b, err := AppendFrame(nil, f)
	if err != nil {
		t.Fatalf("AppendFrame: %v", err)
	}
	return b
}

func sameFrame(a, b *Frame) bool {
	return a.Version == b.Version && a.Flags == b.Flags && a.Type == b.Type &&
		a.Src == b.Src && a.Dst == b.Dst && a.TTL == b.TTL && a.Cap == b.Cap &&
		bytes.Equal(a.Body, b.Body)
}

var roundTrips = []struct {
	name string
	f    Frame
}{
	{"ping", Frame{Version: Version, Flags: FlagPriority, Type: MsgPing, Src: 1, Dst: 2, TTL: 1, Body: []byte{0, 0, 0, 0, 0, 0, 0, 42}}},
	{"empty body", Frame{Version: Version, Type: MsgRemoveNode, Src: 1}},
	{"zero version means current", Frame{Type: MsgLSA, Src: 3, TTL: DefaultTTL, Body: []byte("lsa")}},
	{"capability", Frame{Version: Version, Type: 3, Src: 0xffffffff, Dst: 0xfffffffe, TTL: 255, Cap: "usrloc", Body: bytes.Repeat([]byte{0xab}, 200)}},
	{"max cap name", Frame{Version: Version, Type: 0xffff, Cap: strings.Repeat("c", MaxCapName), Body: []byte{1}}},
	{"unknown flags kept", Frame{Version: Version, Flags: 0xfe, Type: MsgDigest}},
	{"max frame size", Frame{Version: Version, Type: MsgSyncChunk, Cap: "x", Body: make([]byte, MaxFrameSize-HeaderSize-1)}},
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTrips {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("keep")
			b, err := AppendFrame(prefix, &tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:4], prefix) {
				t.Fatal("AppendFrame clobbered dst")
			}
			b = b[4:]
			if len(b) != EncodedLen(&tc.f) {
				t.Fatalf("encoded %d bytes, EncodedLen says %d", len(b), EncodedLen(&tc.f))
			}
			got, n, err := Decode(b)
			if err != nil || n != len(b) {
				t.Fatalf("Decode = %v, %d; want nil, %d", err, n, len(b))
			}
			want := tc.f
			if want.Version == 0 {
				want.Version = Version
			}
			if !sameFrame(got, &want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			again := mustEncode(t, got)
			if !bytes.Equal(again, b) {
				t.Fatal("re-encoding a decoded frame changed its bytes")
			}
			// Decode copies: scribbling on the input leaves the frame intact.
			for i := range b {
				b[i] ^= 0xff
			}
			if !sameFrame(got, &want) {
				t.Fatal("decoded frame aliases its input")
			}
		})
	}
}

func TestAppendFrameErrors(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want error
	}{
		{"cap name too long", Frame{Cap: strings.Repeat("c", MaxCapName+1)}, ErrBadFrame},
		{"frame too large", Frame{Body: make([]byte, MaxFrameSize-HeaderSize+1)}, ErrTooLarge},
		{"version too new", Frame{Version: Version + 1}, ErrBadFrame},
	}
	if MinVersion > 1 {
		tests = append(tests, struct {
			name string
			f    Frame
			want error
		}{"version too old", Frame{Version: MinVersion - 1}, ErrBadFrame})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("x")
			got, err := AppendFrame(dst, &tc.f)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !bytes.Equal(got, dst) {
				t.Fatal("dst changed on error")
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	mod := func(f func(*rawFrame)) []byte { r := good(); f(&r); return r.bytes() }
	tests := []struct {
		name     string
		in       []byte
		want     error
		consumed int // expected n
	}{
		{"empty", nil, ErrIncomplete, 0},
		{"3 bytes", []byte{0, 0, 0}, ErrIncomplete, 0},
		{"length past max", mod(func(r *rawFrame) { r.length = MaxFrameSize + 1 }), ErrTooLarge, 0},
		{"length all ones", []byte{0xff, 0xff, 0xff, 0xff, 0}, ErrTooLarge, 0},
		{"length shorter than header", mod(func(r *rawFrame) { r.length = HeaderSize - 1 }), ErrBadFrame, 4 + HeaderSize - 1},
		{"zero length", []byte{0, 0, 0, 0, 9, 9}, ErrBadFrame, 4},
		{"bad magic", mod(func(r *rawFrame) { r.magic = 0x50344b43 }), ErrBadFrame, 4 + HeaderSize},
		{"version zero", mod(func(r *rawFrame) { r.version = 0 }), ErrBadFrame, 4 + HeaderSize},
		{"version too new", mod(func(r *rawFrame) { r.version = Version + 1 }), ErrBadFrame, 4 + HeaderSize},
		{"cap length past frame", mod(func(r *rawFrame) { r.cap = "ab"; r.capLen = 3 }), ErrBadFrame, 4 + HeaderSize + 2},
		{"cap length past max", mod(func(r *rawFrame) { r.cap = strings.Repeat("c", MaxCapName+1) }), ErrBadFrame, 4 + HeaderSize + MaxCapName + 1},
		{"body incomplete", mod(func(r *rawFrame) { r.body = []byte("abc"); r.length = HeaderSize + 4 }), ErrIncomplete, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := Decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if f != nil || n != tc.consumed {
				t.Fatalf("Decode = %v, %d; want nil, %d", f, n, tc.consumed)
			}
			for _, other := range []error{ErrIncomplete, ErrTooLarge, ErrBadFrame} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("err %v also matches %v", err, other)
				}
			}
		})
	}
}

// TestDecodeTruncated cuts every round-trip frame at every byte offset: each
// prefix must report ErrIncomplete and consume nothing.
func TestDecodeTruncated(t *testing.T) {
	for _, tc := range roundTrips {
		if tc.f.Type == MsgSyncChunk {
			continue // the 1 MiB frame: a million Decode calls add nothing
		}
		b := mustEncode(t, &tc.f)
		for i := range len(b) {
			if f, n, err := Decode(b[:i]); !errors.Is(err, ErrIncomplete) || n != 0 || f != nil {
				t.Fatalf("%s cut at %d/%d: Decode = %v, %d, %v", tc.name, i, len(b), f, n, err)
			}
		}
	}
}

// TestDecodeConcatenated decodes a buffer holding several frames, one after
// another, skipping a bad one in the middle.
func TestDecodeConcatenated(t *testing.T) {
	bad := good()
	bad.magic = 1
	var buf []byte
	buf = append(buf, mustEncode(t, &roundTrips[0].f)...)
	buf = append(buf, bad.bytes()...)
	buf = append(buf, mustEncode(t, &roundTrips[3].f)...)
	var got []MsgType
	var bads int
	for len(buf) > 0 {
		f, n, err := Decode(buf)
		switch {
		case errors.Is(err, ErrBadFrame):
			bads++
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, f.Type)
		}
		buf = buf[n:]
	}
	if bads != 1 || len(got) != 2 || got[0] != MsgPing || got[1] != 3 {
		t.Fatalf("got types %v and %d bad frames", got, bads)
	}
}

func TestFrameReader(t *testing.T) {
	bad := good()
	bad.magic = 0xdeadbeef
	bad.body = []byte("junk")
	big := &Frame{Type: MsgSyncChunk, Cap: "usrloc", Body: bytes.Repeat([]byte("0123456789"), DefaultReadBuffer/5)}
	// Read into its own memory although it would fit the buffer.
	mid := &Frame{Type: MsgSyncChunk, Body: bytes.Repeat([]byte("abcdefghij"), directRead/10+1)}
	frames := []*Frame{&roundTrips[0].f, &roundTrips[3].f, big, mid, mid, &roundTrips[4].f}

	var stream []byte
	stream = append(stream, mustEncode(t, frames[0])...)
	stream = append(stream, bad.bytes()...) // dropped, link kept
	for _, f := range frames[1:] {
		stream = append(stream, mustEncode(t, f)...)
	}

	for _, mode := range []struct {
		name string
		r    func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte at a time", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
	} {
		t.Run(mode.name, func(t *testing.T) {
			fr := NewFrameReader(mode.r(bytes.NewReader(stream)))
			var got []*Frame
			var bads int
			for {
				f, err := fr.ReadFrame()
				if errors.Is(err, io.EOF) {
					break
				}
				if errors.Is(err, ErrBadFrame) {
					bads++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, f)
			}
			if bads != 1 || len(got) != len(frames) {
				t.Fatalf("got %d frames, %d bad; want %d, 1", len(got), bads, len(frames))
			}
			for i, f := range frames {
				want := *f
				if want.Version == 0 {
					want.Version = Version
				}
				// Also proves no aliasing: later reads reused the buffer
				// that earlier frames were decoded from.
				if !sameFrame(got[i], &want) {
					t.Fatalf("frame %d: got type %d cap %q len %d", i, got[i].Type, got[i].Cap, len(got[i].Body))
				}
			}
			if _, err := fr.ReadFrame(); !errors.Is(err, io.EOF) {
				t.Fatalf("after EOF: %v", err)
			}
		})
	}
}

func TestFrameReaderErrors(t *testing.T) {
	ping := mustEncode(t, &roundTrips[0].f)
	tooLarge := good()
	tooLarge.length = MaxFrameSize + 1
	tests := []struct {
		name   string
		in     []byte
		limit  int
		want   error
		frames int // good frames before the error
	}{
		{"eof in prefix", append(append([]byte{}, ping...), 0, 0), 0, io.ErrUnexpectedEOF, 1},
		{"eof in frame", ping[:len(ping)-1], 0, io.ErrUnexpectedEOF, 0},
		{"too large", append(append([]byte{}, ping...), tooLarge.bytes()...), 0, ErrTooLarge, 1},
		{"over set limit", ping, len(ping) - 5, ErrTooLarge, 0},
		{"at set limit", ping, len(ping) - 4, io.EOF, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr := NewFrameReader(bytes.NewReader(tc.in))
			fr.SetMaxSize(tc.limit)
			for i := range tc.frames {
				if _, err := fr.ReadFrame(); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			_, err := fr.ReadFrame()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, again := fr.ReadFrame(); !errors.Is(again, tc.want) {
				t.Fatalf("error not sticky: then %v", again)
			}
		})
	}
}

// TestFrameReaderBadFrameConsumed checks every kind of bad frame: exactly
// that frame is skipped and the frame behind it is read intact, whether the
// bad one is small (decoded from the buffer) or big (read separately).
func TestFrameReaderBadFrameConsumed(t *testing.T) {
	next := &Frame{Type: MsgPong, Src: 5, Body: []byte("after")}
	for _, bad := range []func(*rawFrame){
		func(r *rawFrame) { r.magic = 0 },
		func(r *rawFrame) { r.version = Version + 1 },
		func(r *rawFrame) { r.capLen = 200 },
		func(r *rawFrame) { r.length = 3; r.body = nil },
		func(r *rawFrame) { r.magic = 0; r.body = make([]byte, 2*DefaultReadBuffer) },
	} {
		r := good()
		r.body = []byte("payload")
		bad(&r)
		in := append(r.bytes(), mustEncode(t, next)...)
		if r.length >= 0 { // forged length: the bytes between are garbage
			in = append(r.bytes()[:4+r.length], mustEncode(t, next)...)
		}
		fr := NewFrameReader(bytes.NewReader(in))
		if _, err := fr.ReadFrame(); !errors.Is(err, ErrBadFrame) {
			t.Fatalf("first read: %v, want ErrBadFrame", err)
		}
		f, err := fr.ReadFrame()
		if err != nil || f.Type != MsgPong || string(f.Body) != "after" {
			t.Fatalf("frame after bad one: %+v, %v", f, err)
		}
	}
}
