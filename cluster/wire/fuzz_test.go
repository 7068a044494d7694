package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode seed files")

// seedFrames are the named seeds checked into testdata/fuzz/FuzzDecode:
// captured-style valid frames plus the broken shapes the decoder must
// classify. Regenerate with: go test ./cluster/wire -run TestSeedCorpus -update-corpus
func seedFrames(t testing.TB) map[string][]byte {
	enc := func(f *Frame) []byte { return mustEncode(t, f) }
	w := Writer{}
	w.U32(3)   // origin
	w.U64(17)  // sequence number
	w.U32(2)   // neighbour count
	w.U32(1)   // neighbour id
	w.U32(120) // rtt µs
	w.U32(2)   // neighbour id
	w.U32(450) // rtt µs
	w.String("eu-west")
	lsa := w.B
	ping := Writer{}
	ping.I64(1732530000123456789)

	badMagic := good()
	badMagic.magic = 0x50344b43 // OpenSIPS' "P4CK"
	newVersion := good()
	newVersion.version = Version + 1
	capPast := good()
	capPast.cap = "usr"
	capPast.capLen = 40
	huge := good()
	huge.length = MaxFrameSize + 1

	pingBytes := enc(&Frame{Flags: FlagPriority, Type: MsgPing, Src: 1, Dst: 2, TTL: 1, Body: ping.B})
	two := append(append([]byte{}, pingBytes...), enc(&Frame{Type: MsgPong, Src: 2, Dst: 1, TTL: 1, Body: ping.B})...)
	return map[string][]byte{
		"ping":             pingBytes,
		"lsa":              enc(&Frame{Type: MsgLSA, Src: 3, TTL: DefaultTTL, Body: lsa}),
		"capability_body":  enc(&Frame{Type: 2, Src: 3, Dst: 4, TTL: DefaultTTL, Cap: "usrloc", Body: bytes.Repeat([]byte("sip:alice@example.com;"), 9)}),
		"max_cap_name":     enc(&Frame{Type: 1, Src: 9, Cap: strings.Repeat("n", MaxCapName), Body: []byte{0}}),
		"empty_body":       enc(&Frame{Type: MsgRemoveNode, Src: 1}),
		"two_frames":       two,
		"bad_magic":        badMagic.bytes(),
		"newer_version":    newVersion.bytes(),
		"cap_past_frame":   capPast.bytes(),
		"too_large":        huge.bytes(),
		"truncated":        pingBytes[:len(pingBytes)-3],
		"short_length":     []byte{0, 0, 0, 2, 0x41, 0x45},
		"http_on_the_port": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
}

// TestSeedCorpus keeps the checked-in seeds in step with seedFrames.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, b := range seedFrames(t) {
		path := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update-corpus)", err)
		}
		if string(got) != want {
			t.Errorf("%s is stale (run with -update-corpus)", path)
		}
	}
}

// FuzzDecode checks that Decode never panics, classifies every input as
// exactly one of the documented outcomes, that whatever decodes re-encodes
// to the identical bytes, and that the streaming FrameReader agrees with
// Decode on the first frame.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := Decode(b)
		switch {
		case err == nil:
			if n < lenSize+HeaderSize || n > len(b) {
				t.Fatalf("consumed %d of %d", n, len(b))
			}
			again, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("decoded frame does not re-encode: %v", err)
			}
			if !bytes.Equal(again, b[:n]) {
				t.Fatalf("re-encoded\n%x\nwant\n%x", again, b[:n])
			}
		case errors.Is(err, ErrBadFrame):
			if fr != nil || n < lenSize || n > len(b) {
				t.Fatalf("bad frame: frame %v, consumed %d of %d", fr, n, len(b))
			}
		case errors.Is(err, ErrIncomplete), errors.Is(err, ErrTooLarge):
			if fr != nil || n != 0 {
				t.Fatalf("%v: frame %v, consumed %d", err, fr, n)
			}
		default:
			t.Fatalf("undocumented error %v", err)
		}

		sf, serr := NewFrameReader(bytes.NewReader(b)).ReadFrame()
		switch {
		case err == nil:
			if serr != nil || !sameFrame(sf, fr) {
				t.Fatalf("FrameReader: %+v, %v; Decode: %+v", sf, serr, fr)
			}
		case errors.Is(err, ErrIncomplete):
			want := io.ErrUnexpectedEOF
			if len(b) == 0 {
				want = io.EOF
			}
			if serr != want {
				t.Fatalf("FrameReader on incomplete input: %v, want %v", serr, want)
			}
		case errors.Is(err, ErrBadFrame):
			if !errors.Is(serr, ErrBadFrame) {
				t.Fatalf("FrameReader: %v; Decode: %v", serr, err)
			}
		case errors.Is(err, ErrTooLarge):
			if !errors.Is(serr, ErrTooLarge) {
				t.Fatalf("FrameReader: %v; Decode: %v", serr, err)
			}
		}
	})
}
