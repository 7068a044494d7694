package location

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// rec is how the memory store keeps a Binding. A Binding is about 270 bytes
// of headers plus six separately allocated strings; at a million bindings
// that is most of the memory budget. rec packs every per-binding string
// into one allocation (data, sliced by lens) and replaces the strings that
// repeat across bindings (transport, socket, user agent) with interned ids,
// which brings a binding to a 72-byte rec plus one string. Decoding slices
// data without copying, so Lookup allocates only the returned []Binding.
//
// The AoR is not stored: it is the map key of the AoR entry.
type rec struct {
	data       string            // fields fContact..fPath, concatenated
	lens       [nFields]uint16   // length of each field in data
	expires    int64             // unix nanoseconds
	registered int64             // unix nanoseconds
	cseq       uint32            // of the REGISTER that wrote it
	regID      int32             // RFC 5626 reg-id
	home       uint32            // cluster node id
	ids        [nInterned]uint16 // interned transport, socket, user agent (0: empty or in data)
	q          int16             // ×1000
	nated      bool
}

// Fields packed into rec.data, in order. Path values are joined by NUL,
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

// maxField is the longest string a rec can hold (uint16 lengths). SIP
// messages are smaller than this, so only a buggy caller hits the limit.
const maxField = 1<<16 - 1

// encode packs b. It fails (ErrInvalid) if a field is longer than maxField or
// the reg-id does not fit RFC 5626's 1..2^31-1.
func encode(b *Binding, in *interner) (rec, error) {
	r := rec{
		expires:    nanos(b.Expires),
		registered: nanos(b.Registered),
		cseq:       b.CSeq,
		regID:      int32(b.RegID),
		home:       b.Home,
		q:          int16(b.Q),
		nated:      b.NATed,
	}
	if b.RegID < 0 || b.RegID > 1<<31-1 || b.Q < 0 || b.Q > 1000 {
		return rec{}, ErrInvalid
	}
	var fields [nFields]string
	fields[fContact] = b.Contact
	fields[fCallID] = b.CallID
	fields[fInstance] = b.InstanceID
	fields[fReceived] = b.Received
	for i, s := range [nInterned]string{b.Transport, b.Socket, b.UserAgent} {
		if id, ok := in.id(s); ok {
			r.ids[i] = id
		} else {
			fields[fTransport+i] = s
		}
	}
	if len(b.Path) > 0 {
		fields[fPath] = strings.Join(b.Path, pathSep)
	}
	total := 0
	for i, f := range fields {
		if len(f) > maxField {
			return rec{}, ErrInvalid
		}
		r.lens[i] = uint16(len(f))
		total += len(f)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, f := range fields {
		sb.WriteString(f)
	}
	r.data = sb.String()
	return r, nil
}

// decode unpacks r into a Binding of aor. Strings alias r.data.
func (r *rec) decode(aor string, in *interner) Binding {
	var fields [nFields]string
	off := 0
	for i, n := range r.lens {
		fields[i] = r.data[off : off+int(n)]
		off += int(n)
	}
	b := Binding{
		AoR:        aor,
		Contact:    fields[fContact],
		InstanceID: fields[fInstance],
		RegID:      int(r.regID),
		CallID:     fields[fCallID],
		CSeq:       r.cseq,
		Q:          int(r.q),
		Expires:    fromNanos(r.expires),
		Registered: fromNanos(r.registered),
		Received:   fields[fReceived],
		NATed:      r.nated,
		Home:       r.home,
	}
	interned := [nInterned]*string{&b.Transport, &b.Socket, &b.UserAgent}
	for i, p := range interned {
		if r.ids[i] != 0 {
			*p = in.str(r.ids[i])
		} else {
			*p = fields[fTransport+i]
		}
	}
	if p := fields[fPath]; p != "" {
		b.Path = strings.Split(p, pathSep)
	}
	return b
}

// key is Binding.Key without decoding the whole record.
func (r *rec) key() string {
	b := Binding{Contact: r.data[:r.lens[fContact]], RegID: int(r.regID)}
	off := int(r.lens[fContact]) + int(r.lens[fCallID])
	b.InstanceID = r.data[off : off+int(r.lens[fInstance])]
	return b.Key()
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
