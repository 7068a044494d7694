package wire

import (
	"bytes"
	"testing"
)

func TestBufPool(t *testing.T) {
	p := NewBufPool(1024, 2)
	a := p.Get(100)
	if len(a) != 0 || cap(a) < 1024 {
		t.Fatalf("Get(100): len %d cap %d, want 0 and the pool's size", len(a), cap(a))
	}
	a = append(a, "used"...)
	p.Put(a)
	b := p.Get(1024)
	if len(b) != 0 || &b[:1][0] != &a[0] {
		t.Fatal("Get after Put did not reuse the buffer")
	}
	if big := p.Get(4096); cap(big) < 4096 {
		t.Fatalf("Get(4096) beyond the pool's size: cap %d", cap(big))
	}
	p.Put(make([]byte, 10)) // too small for the pool: dropped
	if c := p.Get(1); cap(c) < 1024 {
		t.Fatalf("a too-small buffer came back: cap %d", cap(c))
	}
	for range 5 { // more than the pool keeps: the rest are dropped
		p.Put(make([]byte, 0, 1024))
	}
	if n := len(p.free); n != 2 {
		t.Fatalf("pool keeps %d buffers, want 2", n)
	}
}

// TestAppendHeader: header plus body is exactly AppendFrame's encoding.
func TestAppendHeader(t *testing.T) {
	for _, rt := range roundTrips {
		f := rt.f
		h, err := AppendHeader([]byte("x"), &f)
		if err != nil {
			t.Fatal(err)
		}
		want := append([]byte("x"), mustEncode(t, &f)...)
		if got := append(h, f.Body...); !bytes.Equal(got, want) {
			t.Fatalf("%s: header+body\n%x\nwant\n%x", rt.name, got, want)
		}
	}
	if _, err := AppendHeader(nil, &Frame{Body: make([]byte, MaxFrameSize)}); err == nil {
		t.Fatal("AppendHeader of an oversize frame: no error")
	}
}
