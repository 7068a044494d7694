package wire

import (
	"bytes"
	"runtime"
	"testing"
)

// A sync reads a stream of big chunk frames; with each one recycled once
// applied, their memory serves the next ones instead of being fresh
// memory per chunk, and every frame still reads back exactly.
func TestRecycleReusesBigFrames(t *testing.T) {
	const frames = 200
	body := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 'x'}, 20<<10) }
	var stream []byte
	for i := range frames {
		stream = append(stream, mustEncode(t, &Frame{Type: MsgSyncChunk, Src: 1, Body: body(i)})...)
	}
	small := mustEncode(t, &roundTrips[0].f)
	stream = append(stream, small...)

	fr := NewFrameReader(bytes.NewReader(stream))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range frames {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Body, body(i)) {
			t.Fatalf("frame %d: body differs (memory of a recycled frame not reset?)", i)
		}
		Recycle(f)
		if f.Body != nil {
			t.Fatal("a recycled frame still shows its body")
		}
		Recycle(f) // twice is harmless
	}
	runtime.ReadMemStats(&after)
	// Without reuse: 200 frames of 60 KiB. body(i) allocates one per
	// frame too, so allow for those, and for a pool emptied by a
	// collection (and, under -race, Puts dropped at random).
	per := uint64(len(body(0)))
	if got := after.TotalAlloc - before.TotalAlloc; got > frames*per+frames/2*per {
		t.Fatalf("%d bytes allocated for %d frames of %d bytes: big frames' memory not reused", got, frames, per)
	}

	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	Recycle(f) // a small frame owns a copy: nothing to give back
	if !bytes.Equal(f.Body, roundTrips[0].f.Body) {
		t.Fatal("Recycle changed a small frame")
	}
}
