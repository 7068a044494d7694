package bfd

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func validPacket() Packet {
	return Packet{
		Diag: DiagNone, State: Up, DetectMult: 3, MyDiscr: 0x01020304, YourDiscr: 0x05060708,
		DesiredMinTx: 300000, RequiredMinRx: 300000,
	}
}

// The wire layout of RFC 5880 §4.1, byte by byte.
func TestEncodeLayout(t *testing.T) {
	p := Packet{
		Diag: DiagNeighborDown, State: Init, Poll: true, ControlPlaneIndependent: true, Demand: true,
		DetectMult: 5, MyDiscr: 0x01020304, YourDiscr: 0x0a0b0c0d,
		DesiredMinTx: 1000000, RequiredMinRx: 300000, RequiredMinEchoRx: 50000,
	}
	want := []byte{
		0x20 | 3,                  // version 1, diag 3
		0x80 | 0x20 | 0x08 | 0x02, // state Init, P, C, D
		5, 24,
		1, 2, 3, 4,
		0x0a, 0x0b, 0x0c, 0x0d,
		0x00, 0x0f, 0x42, 0x40, // 1,000,000 µs
		0x00, 0x04, 0x93, 0xe0, // 300,000 µs
		0x00, 0x00, 0xc3, 0x50, // 50,000 µs
	}
	if got := p.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("encoded\n% x\nwant\n% x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for name, p := range map[string]Packet{
		"up":                 validPacket(),
		"down, your discr 0": {State: Down, DetectMult: 3, MyDiscr: 1, DesiredMinTx: 1000000, RequiredMinRx: 300000},
		"admindown":          {State: AdminDown, Diag: DiagAdminDown, DetectMult: 1, MyDiscr: 1},
		"final":              {State: Up, Final: true, DetectMult: 255, MyDiscr: ^uint32(0), YourDiscr: 7, DesiredMinTx: ^Interval(0), RequiredMinRx: 1, RequiredMinEchoRx: 9},
		"simple password":    {State: Down, DetectMult: 3, MyDiscr: 1, Auth: &Auth{Type: 1, Data: []byte{1, 's', 'e', 'c'}}},
		"keyed md5":          {State: Down, DetectMult: 3, MyDiscr: 1, Auth: &Auth{Type: 2, Data: bytes.Repeat([]byte{0xaa}, 22)}},
	} {
		b := p.Marshal()
		if len(b) != p.Len() {
			t.Errorf("%s: len %d, Len() %d", name, len(b), p.Len())
		}
		got, err := Decode(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, p)
		}
		// Trailing bytes past the Length field are ignored.
		if got2, err := Decode(append(b, 0xde, 0xad)); err != nil || !reflect.DeepEqual(got2, p) {
			t.Errorf("%s with trailing bytes: %v %+v", name, err, got2)
		}
	}
}

// Every reception check of RFC 5880 §6.8.6 that the codec owns.
func TestDecodeRejects(t *testing.T) {
	good := validPacket().Marshal()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"23 bytes", good[:23], ErrShort},
		{"version 0", mod(func(b []byte) []byte { b[0] &^= 0xe0; return b }), ErrVersion},
		{"version 2", mod(func(b []byte) []byte { b[0] = b[0]&0x1f | 2<<5; return b }), ErrVersion},
		{"length below 24", mod(func(b []byte) []byte { b[3] = 23; return b }), ErrLength},
		{"length beyond payload", mod(func(b []byte) []byte { b[3] = 25; return b }), ErrLength},
		{"A bit, length 24", mod(func(b []byte) []byte { b[1] |= flagAuth; return b }), ErrLength},
		{"detect mult 0", mod(func(b []byte) []byte { b[2] = 0; return b }), ErrDetectMult},
		{"multipoint", mod(func(b []byte) []byte { b[1] |= flagMultipoint; return b }), ErrMultipoint},
		{"my discr 0", mod(func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }), ErrMyDiscr},
		{"your discr 0 in Up", mod(func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }), ErrYourDiscr},
		{"your discr 0 in Init", mod(func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); b[1] = b[1]&0x3f | 2<<6; return b }), ErrYourDiscr},
		{"P and F", mod(func(b []byte) []byte { b[1] |= flagPoll | flagFinal; return b }), ErrPollFinal},
		{"auth len 2", mod(func(b []byte) []byte { b[1] |= flagAuth; b[3] = 26; return append(b, 1, 2) }), ErrAuthSection},
		{"auth len past length", mod(func(b []byte) []byte { b[1] |= flagAuth; b[3] = 27; return append(b, 1, 4, 0) }), ErrAuthSection},
		{"auth len short of length", mod(func(b []byte) []byte { b[1] |= flagAuth; b[3] = 28; return append(b, 1, 3, 0, 0) }), ErrAuthSection},
	} {
		_, err := Decode(tc.b)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// Your Discriminator 0 is fine in Down and AdminDown.
	for _, st := range []State{Down, AdminDown} {
		p := validPacket()
		p.State, p.YourDiscr = st, 0
		if _, err := Decode(p.Marshal()); err != nil {
			t.Errorf("your discr 0 in %v: %v", st, err)
		}
	}
}

func TestIntervalOf(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want Interval
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Microsecond, 1},
		{300 * time.Millisecond, 300000}, {2 * time.Hour, 1<<32 - 1},
	} {
		if got := IntervalOf(tc.d); got != tc.want {
			t.Errorf("IntervalOf(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}
