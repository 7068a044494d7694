package location

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A blob is one AoR with all its bindings, in one arena block, rewritten
// whole on every change (a REGISTER rewrites the AoR anyway). Layout,
// little endian:
//
//	header (hdrSize): class u8, pad u8, len(aor) u16, slot u32, sched i64,
//	                  records u32, blob length u32
//	the AoR
//	records: fixed part (recFixed) then fields fContact..fPath
//
// A record's fixed part: expires i64, registered i64 (unix nanoseconds),
// cseq u32, reg-id i32, home u32, interned ids 3×u16, q i16, nated u8,
// pad u8, field lengths nFields×u16. The strings that repeat across
// bindings (transport, socket, user agent) are interned ids; the rest are
// packed. At sipbench's shape a binding is about 200 bytes here.
//
// Blob bytes are reused once freed, so nothing outside the shard lock may
// alias them: readers copy the blob into a Go string (snapshot) and decode
// from that, so Bindings handed out own their memory.
const (
	hdrSize = 24
	hAoRLen = 2
	hSlot   = 4
	hSched  = 8
	hCount  = 16
	hLen    = 20

	rExpires    = 0
	rRegistered = 8
	rCSeq       = 16
	rRegID      = 20
	rHome       = 24
	rIDs        = 28
	rQ          = 34
	rNATed      = 36
	rLens       = 38
	recFixed    = rLens + 2*nFields
)

// Fields packed into a record, in order. Path values are joined by NUL,
// which cannot appear in SIP text. The interned fields appear here only when
// the interner is full.
const (
	fContact = iota
	fCallID
	fInstance
	fReceived
	fTransport
	fSocket
	fUserAgent
	fPath
	nFields
)

const nInterned = 3 // fTransport, fSocket, fUserAgent

const pathSep = "\x00"

// maxField is the longest string a record can hold (uint16 lengths), and
// the longest AoR. SIP messages are smaller than this, so only a buggy
// caller hits the limit.
const maxField = 1<<16 - 1

// bytesOrString lets the readers below work on arena bytes (under the
// lock) and on snapshots alike.
type bytesOrString interface{ ~string | ~[]byte }

func le16[T bytesOrString](b T, off int) uint16 {
	return uint16(b[off]) | uint16(b[off+1])<<8
}

func le32[T bytesOrString](b T, off int) uint32 {
	return uint32(le16(b, off)) | uint32(le16(b, off+2))<<16
}

func le64[T bytesOrString](b T, off int) uint64 {
	return uint64(le32(b, off)) | uint64(le32(b, off+4))<<32
}

func blobAoR[T bytesOrString](b T) T       { return b[hdrSize : hdrSize+int(le16(b, hAoRLen))] }
func blobSched[T bytesOrString](b T) int64 { return int64(le64(b, hSched)) }
func blobCount[T bytesOrString](b T) int   { return int(le32(b, hCount)) }
func blobLen[T bytesOrString](b T) int     { return int(le32(b, hLen)) }

// firstRec is the offset of a blob's first record.
func firstRec[T bytesOrString](b T) int { return hdrSize + int(le16(b, hAoRLen)) }

// recSize is the length of the record at off.
func recSize[T bytesOrString](b T, off int) int {
	n := recFixed
	for i := range nFields {
		n += int(le16(b, off+rLens+2*i))
	}
	return n
}

func recExpires[T bytesOrString](b T, off int) int64 { return int64(le64(b, off+rExpires)) }
func recNATed[T bytesOrString](b T, off int) bool    { return b[off+rNATed] != 0 }

// appendRec appends the record of b. It fails (ErrInvalid) if a field is
// longer than maxField or the reg-id does not fit RFC 5626's 1..2^31-1.
func appendRec(dst []byte, b *Binding, in *interner) ([]byte, error) {
	if b.RegID < 0 || b.RegID > 1<<31-1 || b.Q < 0 || b.Q > 1000 {
		return dst, ErrInvalid
	}
	var fields [nFields]string
	fields[fContact] = b.Contact
	fields[fCallID] = b.CallID
	fields[fInstance] = b.InstanceID
	fields[fReceived] = b.Received
	var ids [nInterned]uint16
	for i, s := range [nInterned]string{b.Transport, b.Socket, b.UserAgent} {
		if id, ok := in.id(s); ok {
			ids[i] = id
		} else {
			fields[fTransport+i] = s
		}
	}
	var lens [nFields]int
	for i, f := range fields {
		lens[i] = len(f)
	}
	for i, p := range b.Path {
		lens[fPath] += len(p)
		if i > 0 {
			lens[fPath] += len(pathSep)
		}
	}
	for _, n := range lens {
		if n > maxField {
			return dst, ErrInvalid
		}
	}
	le := binary.LittleEndian
	dst = le.AppendUint64(dst, uint64(nanos(b.Expires)))
	dst = le.AppendUint64(dst, uint64(nanos(b.Registered)))
	dst = le.AppendUint32(dst, b.CSeq)
	dst = le.AppendUint32(dst, uint32(b.RegID))
	dst = le.AppendUint32(dst, b.Home)
	for _, id := range ids {
		dst = le.AppendUint16(dst, id)
	}
	dst = le.AppendUint16(dst, uint16(int16(b.Q)))
	nated := byte(0)
	if b.NATed {
		nated = 1
	}
	dst = append(dst, nated, 0)
	for _, n := range lens {
		dst = le.AppendUint16(dst, uint16(n))
	}
	for _, f := range fields[:fPath] {
		dst = append(dst, f...)
	}
	for i, p := range b.Path {
		if i > 0 {
			dst = append(dst, pathSep...)
		}
		dst = append(dst, p...)
	}
	return dst, nil
}

// decodeRec unpacks the record at off of a snapshot into a Binding of aor.
// Strings alias s, which must be a Go string (a snapshot), never arena
// bytes.
func decodeRec(s string, off int, aor string, in *interner) Binding {
	var fields [nFields]string
	p := off + recFixed
	for i := range nFields {
		n := int(le16(s, off+rLens+2*i))
		fields[i] = s[p : p+n]
		p += n
	}
	b := Binding{
		AoR:        aor,
		Contact:    fields[fContact],
		InstanceID: fields[fInstance],
		RegID:      int(int32(le32(s, off+rRegID))),
		CallID:     fields[fCallID],
		CSeq:       le32(s, off+rCSeq),
		Q:          int(int16(le16(s, off+rQ))),
		Expires:    fromNanos(recExpires(s, off)),
		Registered: fromNanos(int64(le64(s, off+rRegistered))),
		Received:   fields[fReceived],
		NATed:      recNATed(s, off),
		Home:       le32(s, off+rHome),
	}
	interned := [nInterned]*string{&b.Transport, &b.Socket, &b.UserAgent}
	for i, p := range interned {
		if id := le16(s, off+rIDs+2*i); id != 0 {
			*p = in.str(id)
		} else {
			*p = fields[fTransport+i]
		}
	}
	if p := fields[fPath]; p != "" {
		b.Path = strings.Split(p, pathSep)
	}
	return b
}

// interner maps the strings that repeat across bindings (transport, local
// socket, User-Agent) to 16-bit ids. It holds at most maxInterned values so
// that a client sending random User-Agents cannot grow it without bound;
// past that, strings are stored in the record itself.
//
// Lookups by id take no lock: values live in fixed chunks published with an
// atomic pointer and are never changed once written. A reader only holds an
// id that a writer returned after storing the value, through the shard
// mutex, so it always sees the value.
type interner struct {
	mu     sync.Mutex
	ids    map[string]uint16
	next   int
	chunks [internChunks]atomic.Pointer[[internChunk]string]
}

const (
	internChunk  = 256
	internChunks = 256
	maxInterned  = internChunk*internChunks - 1 // id 0 is ""
)

// id returns the id of s, adding it if there is room. "" is always id 0.
func (in *interner) id(s string) (uint16, bool) {
	if s == "" {
		return 0, true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if id, ok := in.ids[s]; ok {
		return id, true
	}
	if in.next >= maxInterned {
		return 0, false
	}
	if in.ids == nil {
		in.ids = make(map[string]uint16)
	}
	in.next++
	id := uint16(in.next)
	c := in.chunks[id/internChunk].Load()
	if c == nil {
		c = new([internChunk]string)
		in.chunks[id/internChunk].Store(c)
	}
	s = strings.Clone(s) // don't pin the caller's (message) buffer
	c[id%internChunk] = s
	in.ids[s] = id
	return id, true
}

func (in *interner) str(id uint16) string {
	return in.chunks[id/internChunk].Load()[id%internChunk]
}

// nanos and fromNanos keep the zero time zero (UnixNano of it is undefined).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
