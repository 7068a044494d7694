package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Decoding errors. They are sentinels so that callers can tell, with
// errors.Is, how much of the stream is still usable:
//
//   - ErrIncomplete: not an error of the peer, just not enough bytes yet.
//   - ErrTooLarge: the length prefix itself is out of bounds. Nothing after
//     it can be trusted, so the stream cannot be resynchronised and the
//     caller must close the link.
//   - ErrBadFrame: the length was sane, so the frame can be skipped as a
//     unit, but its contents are not a frame we understand. The caller drops
//     it, counts it and keeps the link.
var (
	ErrIncomplete = errors.New("wire: incomplete frame")
	ErrTooLarge   = errors.New("wire: frame too large")
	ErrBadFrame   = errors.New("wire: bad frame")
)

// lenSize is the size of the length prefix.
const lenSize = 4

// EncodedLen is the number of bytes f takes on the wire, length prefix
// included. Transports use it to count bytes without re-encoding.
func EncodedLen(f *Frame) int {
	return lenSize + HeaderSize + len(f.Cap) + len(f.Body)
}

// Validate reports whether f can be encoded: the cap name fits its one-byte
// length and MaxCapName, the frame fits MaxFrameSize, and the version (0
// meaning Version) is one we speak. Callers that queue frames (the
// transport) validate at enqueue time so the error reaches the sender
// instead of surfacing later in a writer goroutine.
func Validate(f *Frame) error {
	if len(f.Cap) > MaxCapName {
		return fmt.Errorf("%w: cap name is %d bytes, max %d", ErrBadFrame, len(f.Cap), MaxCapName)
	}
	if n := HeaderSize + len(f.Cap) + len(f.Body); n > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, n, MaxFrameSize)
	}
	if f.Version != 0 && (f.Version < MinVersion || f.Version > Version) {
		return fmt.Errorf("%w: version %d not in [%d, %d]", ErrBadFrame, f.Version, MinVersion, Version)
	}
	return nil
}

// AppendFrame appends the wire encoding of f (length prefix, header, cap
// name, body) to dst and returns the extended slice. A zero f.Version is
// written as Version, so callers building fresh frames need not set it,
// while a decoded frame (whose version is never 0) re-encodes bit for bit.
// On error dst is returned unchanged.
func AppendFrame(dst []byte, f *Frame) ([]byte, error) {
	dst, err := AppendHeader(dst, f)
	if err != nil {
		return dst, err
	}
	return append(dst, f.Body...), nil
}

// AppendHeader appends everything of f's encoding but the body: the length
// prefix (which counts the body), header and cap name. A writer sends the
// body after it from its own memory, so a large body is not copied (see
// AppendFrame for the rest of the contract).
func AppendHeader(dst []byte, f *Frame) ([]byte, error) {
	if err := Validate(f); err != nil {
		return dst, err
	}
	ver := f.Version
	if ver == 0 {
		ver = Version
	}
	n := HeaderSize + len(f.Cap) + len(f.Body)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, Magic)
	dst = append(dst, ver, f.Flags)
	dst = binary.BigEndian.AppendUint16(dst, uint16(f.Type))
	dst = binary.BigEndian.AppendUint32(dst, f.Src)
	dst = binary.BigEndian.AppendUint32(dst, f.Dst)
	dst = append(dst, f.TTL, uint8(len(f.Cap)))
	dst = append(dst, f.Cap...)
	return dst, nil
}

// Decode decodes the first frame in b and returns it with the number of
// bytes it occupied. The returned frame does not alias b.
//
// Errors: ErrIncomplete (n == 0) when b does not yet hold a whole frame;
// ErrTooLarge (n == 0) when the length prefix exceeds MaxFrameSize; an
// ErrBadFrame-wrapped error with n set to the bad frame's full size, so the
// caller can skip exactly that frame and carry on.
func Decode(b []byte) (*Frame, int, error) {
	if len(b) < lenSize {
		return nil, 0, ErrIncomplete
	}
	size, err := frameSize(b)
	if err != nil {
		return nil, 0, err
	}
	total := lenSize + size
	if len(b) < total {
		return nil, 0, ErrIncomplete
	}
	f, err := parse(b[lenSize:total])
	if err != nil {
		return nil, total, err
	}
	return f, total, nil
}

// frameSize reads and bounds the length prefix at the start of b.
func frameSize(b []byte) (int, error) {
	n := binary.BigEndian.Uint32(b)
	if n > MaxFrameSize {
		return 0, fmt.Errorf("%w: length prefix %d, max %d", ErrTooLarge, n, MaxFrameSize)
	}
	return int(n), nil
}

// parse decodes one frame from p, the bytes after the length prefix. It
// copies the cap name and body, so p may be a reusable buffer.
func parse(p []byte) (*Frame, error) {
	f, err := parseNoCopy(p)
	if err != nil {
		return nil, err
	}
	if f.Body != nil {
		f.Body = append([]byte(nil), f.Body...)
	}
	return f, nil
}

// parseNoCopy decodes p with Body aliasing p (nil when empty). Cap is always
// a fresh string.
func parseNoCopy(p []byte) (*Frame, error) {
	if len(p) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrBadFrame, len(p), HeaderSize)
	}
	if m := binary.BigEndian.Uint32(p[0:4]); m != Magic {
		return nil, fmt.Errorf("%w: magic %#08x", ErrBadFrame, m)
	}
	ver := p[4]
	if ver < MinVersion || ver > Version {
		return nil, fmt.Errorf("%w: version %d not in [%d, %d]", ErrBadFrame, ver, MinVersion, Version)
	}
	capLen := int(p[17])
	if capLen > MaxCapName {
		return nil, fmt.Errorf("%w: cap name length %d, max %d", ErrBadFrame, capLen, MaxCapName)
	}
	if HeaderSize+capLen > len(p) {
		return nil, fmt.Errorf("%w: cap name length %d runs past the %d-byte frame", ErrBadFrame, capLen, len(p))
	}
	var body []byte
	if len(p) > HeaderSize+capLen {
		body = p[HeaderSize+capLen:]
	}
	// Unknown flag bits are kept, not refused: a newer peer may define them
	// and they survive a relay through this node unchanged.
	return &Frame{
		Version: ver,
		Flags:   p[5],
		Type:    MsgType(binary.BigEndian.Uint16(p[6:8])),
		Src:     binary.BigEndian.Uint32(p[8:12]),
		Dst:     binary.BigEndian.Uint32(p[12:16]),
		TTL:     p[16],
		Cap:     string(p[HeaderSize : HeaderSize+capLen]),
		Body:    body,
	}, nil
}
