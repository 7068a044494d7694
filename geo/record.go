package geo

import (
	"errors"
	"slices"
	"time"
	"unsafe"

	"github.com/anyedge/anyedge/cluster/wire"
	"github.com/anyedge/anyedge/edge/location"
)

// version orders the writes of one record. The merge rule everywhere is
// "newest registration wins": by registration time, then CSeq, then the
// id of the node that wrote it. A home stamps its writes with a per-AoR
// time that never goes backwards (see aorState.stamp), so its own writes
// are always in order even if its clock steps back.
type version struct {
	T    int64 // unix nanoseconds
	CSeq uint32
	Node uint32
}

func (v version) cmp(o version) int {
	switch {
	case v.T != o.T:
		if v.T < o.T {
			return -1
		}
		return 1
	case v.CSeq != o.CSeq:
		if v.CSeq < o.CSeq {
			return -1
		}
		return 1
	case v.Node != o.Node:
		if v.Node < o.Node {
			return -1
		}
		return 1
	}
	return 0
}

func (v version) newer(o version) bool { return v.cmp(o) > 0 }

// brec is one binding as every node of the home's region holds it. Its
// identity is (AoR, home, key). A live record has a binding; a tombstone
// (removed by the UA, by the registrar's cap, by a keepalive failure, or
// superseded by a newer registration at another home) keeps only its key
// and claim until its horizon, so that an older copy of the binding
// arriving late (a healed partition, a slow donor) cannot bring it back.
//
// Expiry needs no tombstone: every node drops a binding at the same
// absolute time. But when a binding was refreshed with a shorter expiry,
// an older copy would outlive it, so a record remembers the longest expiry
// of any version it replaced (its horizon) and stays as a tombstone until
// then.
type brec struct {
	// (home, dead and nated share a word: 104 bytes, was 112.)
	home  uint32
	dead  bool
	nated bool   // the live binding is NATed: the keepalive pinger's
	key   string // location.Binding.Key
	ch    uint64 // claim hash (instance or Call-ID), see claimHash
	ver   version
	// cver is the version the home claims the UA at (see claim): the
	// binding's own version, kept by its tombstone. A binding that a
	// newer registration elsewhere retired still tells the other homes
	// that the UA was here at cver, so their older bindings go too, in
	// whatever order the nodes learn of the moves.
	cver    version
	horizon int64 // unix ns: keep the record (as a tombstone) until then
	exp     int64 // the binding's expiry (unix ns)
	// enc is the live binding in its wire form (encodeBody): one string
	// with no pointers inside, like location.Memory's packed records, so
	// a million bindings cost the garbage collector little, and frames
	// and snapshots copy it as is. Lookups decode it by slicing. "" for
	// tombstones.
	enc string
	h   uint64 // digest hash, see hash
}

// claim says that home holds (or removed) the UA identified by h at ver.
// Metadata carries the claims of a home's bindings so that a binding of
// the same UA at another home, older than the claim, is recognised as
// stale (the UA moved home) without shipping contacts across regions.
type claim struct {
	H    uint64
	T    int64
	CSeq uint32
}

// mrec is the metadata of one (AoR, home): whether the home holds live
// bindings for the AoR, until when, and the claims of its bindings. Every
// node of every region holds every mrec. It is written by the home (and,
// for a dead home, by the owner of its tag when it removes a binding on
// its behalf).
type mrec struct {
	home    uint32
	dead    bool
	region  string
	ver     version
	expires int64 // latest binding expiry (unix ns)
	horizon int64
	claims  []claim // never modified once stored
	h       uint64
}

func (m *mrec) live(now int64) bool { return !m.dead && m.expires > now }

// claimHash identifies the UA of a binding across homes: its RFC 5626
// instance (and reg-id) when it has one, else the Call-ID of its REGISTER
// (a UA keeps its Call-ID across refreshes, RFC 3261 §10.2.4). Never 0.
func claimHash(b *location.Binding) uint64 {
	h := uint64(offset64)
	if b.InstanceID != "" {
		h = fnvU64(fnvStr(fnvU64(h, 'i'), b.InstanceID), uint64(b.RegID))
	} else {
		h = fnvStr(fnvU64(h, 'c'), b.CallID)
	}
	h = mix(h)
	if h == 0 {
		h = 1
	}
	return h
}

// FNV-1a, written out so that hashing allocates nothing. Digests must be
// the same on every node, so no per-process seed (maphash) here.
const (
	offset64 = 14695981039346656037
	prime64  = 1099511628211
)

func fnvStr(h uint64, s string) uint64 {
	h = fnvU64(h, uint64(len(s)))
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

func fnvU64(h, v uint64) uint64 {
	for range 8 {
		h ^= v & 0xff
		h *= prime64
		v >>= 8
	}
	return h
}

// mix is a 64-bit finaliser (splitmix64), so XOR-ed digests spread well.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

func hashVer(h uint64, v version, dead bool) uint64 {
	h = fnvU64(h, uint64(v.T))
	h = fnvU64(h, uint64(v.CSeq)<<32|uint64(v.Node))
	if dead {
		h = fnvU64(h, 1)
	}
	return mix(h)
}

func (r *brec) hash(aor string) uint64 {
	h := fnvStr(fnvU64(offset64, 'b'), aor)
	h = fnvStr(fnvU64(h, uint64(r.home)), r.key)
	return hashVer(h, r.ver, r.dead)
}

func (m *mrec) hash(aor string) uint64 {
	h := fnvU64(fnvStr(fnvU64(offset64, 'm'), aor), uint64(m.home))
	return hashVer(h, m.ver, m.dead)
}

// bucketOf is the digest bucket (and lock shard) of an AoR.
func bucketOf(aor string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(aor); i++ {
		h ^= uint32(aor[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// liveRec builds the record of a binding stored at b.Home (b.Registered
// and b.CSeq are its version).
func liveRec(b *location.Binding) brec {
	v := version{T: nanos(b.Registered), CSeq: b.CSeq, Node: b.Home}
	var w wire.Writer
	w.B = make([]byte, 0, bodySize(b))
	encodeBody(&w, b)
	exp := nanos(b.Expires)
	return brec{
		home: b.Home, key: b.Key(), ch: claimHash(b), nated: b.NATed,
		ver: v, cver: v, horizon: exp, exp: exp,
		// The buffer is never written again: it becomes the string, as
		// strings.Builder does, without a copy.
		enc: unsafe.String(unsafe.SliceData(w.B), len(w.B)),
	}
}

// binding decodes a live record's binding of aor. Its strings share the
// record's memory.
func (r *brec) binding(aor string) location.Binding {
	b := location.Binding{AoR: aor, Home: r.home, CSeq: r.ver.CSeq, Registered: fromNanos(r.ver.T)}
	rd := sreader{s: r.enc}
	decodeBody(&rd, &b) // validated when the record was made
	return b
}

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

// Wire format of records. A record is self-describing (its kind first), so
// snapshots, anti-entropy deltas and live updates all carry the same
// bytes. Network byte order; the layout is append-only within a kind.
const (
	recBind uint8 = 1
	recMeta uint8 = 2

	flagDead uint8 = 1

	// maxClaims bounds the claims one metadata record may carry (an AoR
	// with more bindings at one home keeps the newest).
	maxClaims = 1024
	// maxPath bounds the Path values of a binding.
	maxPath = 64
)

var errBadRecord = errors.New("geo: malformed record")

func writeVer(w *wire.Writer, v version) {
	w.I64(v.T)
	w.U32(v.CSeq)
	w.U32(v.Node)
}

func readVer(r *wire.Reader) version {
	return version{T: r.I64(), CSeq: r.U32(), Node: r.U32()}
}

func encodeBind(w *wire.Writer, aor string, r *brec) {
	w.U8(recBind)
	w.String(aor)
	w.U32(r.home)
	writeVer(w, r.ver)
	var flags uint8
	if r.dead {
		flags |= flagDead
	}
	w.U8(flags)
	w.I64(r.horizon)
	if r.dead {
		w.String(r.key)
		w.U64(r.ch)
		w.I64(r.cver.T)
		w.U32(r.cver.CSeq)
		return
	}
	w.B = append(w.B, r.enc...)
}

// bindSize and metaSize are the encoded sizes of records.
func bindSize(aor string, r *brec) int {
	n := 1 + 2 + len(aor) + 4 + 16 + 1 + 8
	if r.dead {
		return n + 2 + len(r.key) + 8 + 12
	}
	return n + len(r.enc)
}

func metaSize(aor string, m *mrec) int {
	return 1 + 2 + len(aor) + 4 + 2 + len(m.region) + 16 + 1 + 8 + 8 + 4 + 20*len(m.claims)
}

func bodySize(b *location.Binding) int {
	n := 2*8 + 4 + 2 + 8 + 2 + 1 + len(b.Contact) + len(b.InstanceID) + len(b.CallID) + len(b.UserAgent) + len(b.Received) + len(b.Transport) + len(b.Socket)
	for _, p := range b.Path {
		n += 2 + len(p)
	}
	return n
}

// encodeBody writes a binding's own fields (its AoR, home and version are
// in the record's header).
func encodeBody(w *wire.Writer, b *location.Binding) {
	w.String(b.Contact)
	w.String(b.InstanceID)
	w.U32(uint32(b.RegID))
	w.String(b.CallID)
	w.U16(uint16(b.Q))
	w.I64(nanos(b.Expires))
	w.U16(uint16(len(b.Path)))
	for _, p := range b.Path {
		w.String(p)
	}
	w.String(b.UserAgent)
	w.String(b.Received)
	w.String(b.Transport)
	w.String(b.Socket)
	w.Bool(b.NATed)
}

// decodeBody reads what encodeBody wrote.
func decodeBody(r *sreader, b *location.Binding) {
	b.Contact = r.str()
	b.InstanceID = r.str()
	b.RegID = int(int32(r.u32()))
	b.CallID = r.str()
	b.Q = int(r.u16())
	b.Expires = fromNanos(int64(r.u64()))
	n := int(r.u16())
	if n > maxPath {
		r.bad = true
		return
	}
	if n > 0 {
		b.Path = make([]string, 0, n)
		for i := 0; i < n && !r.bad; i++ {
			b.Path = append(b.Path, r.str())
		}
	}
	b.UserAgent = r.str()
	b.Received = r.str()
	b.Transport = r.str()
	b.Socket = r.str()
	b.NATed = r.u8() != 0
}

func encodeMeta(w *wire.Writer, aor string, m *mrec) {
	w.U8(recMeta)
	w.String(aor)
	w.U32(m.home)
	w.String(m.region)
	writeVer(w, m.ver)
	var flags uint8
	if m.dead {
		flags |= flagDead
	}
	w.U8(flags)
	w.I64(m.horizon)
	w.I64(m.expires)
	w.U32(uint32(len(m.claims)))
	for _, c := range m.claims {
		w.U64(c.H)
		w.I64(c.T)
		w.U32(c.CSeq)
	}
}

// liveBodyLen is the length of a live binding record's body (what
// encodeBody wrote, kept as brec.enc), read from its header; 0 for any
// other record, or one too short to say.
func liveBodyLen(raw []byte) int {
	if len(raw) < 3 || raw[0] != recBind {
		return 0
	}
	aor := int(raw[1])<<8 | int(raw[2])
	flags := 3 + aor + 4 + 16 // kind, AoR, home, version
	body := flags + 1 + 8     // flags, horizon
	if len(raw) < body || raw[flags]&flagDead != 0 {
		return 0
	}
	return len(raw) - body
}

// decoded is one record read off the wire: a binding or a metadata entry.
type decoded struct {
	kind uint8
	aor  string
	b    brec
	m    mrec
}

// decodeRecord reads one record, copied: nothing aliases buf.
func decodeRecord(buf []byte) (decoded, error) {
	a := recAlloc{left: 1}
	return a.decode(string(buf))
}

// decode reads one record from s. A live binding's encoded body is a
// slice of s (merge then copies it out); everything else kept (the key of
// a binding, a tombstone's key, claims, a metadata record's region) is
// taken from a, so that nothing else refers to s.
func (a *recAlloc) decode(s string) (decoded, error) {
	r := sreader{s: s}
	var d decoded
	d.kind = r.u8()
	d.aor = r.str()
	if r.bad || d.aor == "" {
		return d, errBadRecord
	}
	switch d.kind {
	case recBind:
		x := &d.b
		x.home = r.u32()
		x.ver = r.ver()
		x.dead = r.u8()&flagDead != 0
		x.horizon = int64(r.u64())
		if x.dead {
			x.key = a.str(r.str())
			x.ch = r.u64()
			x.cver = version{T: int64(r.u64()), CSeq: r.u32(), Node: x.home}
			break
		}
		start := r.off
		var b location.Binding
		decodeBody(&r, &b)
		if r.bad || b.Contact == "" || b.Q < 0 || b.Q > 1000 || b.RegID < 0 {
			return d, errBadRecord
		}
		x.enc = r.s[start:r.off]
		x.cver = x.ver
		x.key = a.key(b.InstanceID, b.RegID, b.Contact)
		x.ch = claimHash(&b)
		x.nated = b.NATed
		x.exp = nanos(b.Expires)
		x.horizon = max(x.horizon, x.exp)
	case recMeta:
		m := &d.m
		m.home = r.u32()
		m.region = r.str()
		m.ver = r.ver()
		m.dead = r.u8()&flagDead != 0
		m.horizon = int64(r.u64())
		m.expires = int64(r.u64())
		n := int(r.u32())
		if n > maxClaims || n*20 > len(r.s)-r.off {
			return d, errBadRecord
		}
		if n > 0 {
			m.claims = a.claimSlice(n)
			for i := range m.claims {
				m.claims[i] = claim{H: r.u64(), T: int64(r.u64()), CSeq: r.u32()}
			}
		}
		m.horizon = max(m.horizon, m.expires)
		m.region = a.region(m.region)
	default:
		return d, errBadRecord
	}
	if r.bad || r.off != len(r.s) {
		return d, errBadRecord
	}
	if (d.kind == recBind && d.b.home == 0) || (d.kind == recMeta && d.m.home == 0) {
		return d, errBadRecord
	}
	return d, nil
}

// sreader reads wire.Writer's encoding (network byte order, 16-bit string
// lengths) from a string, returning substrings.
type sreader struct {
	s   string
	off int
	bad bool
}

func (r *sreader) take(n int) string {
	if r.bad || n > len(r.s)-r.off {
		r.bad = true
		return ""
	}
	v := r.s[r.off : r.off+n]
	r.off += n
	return v
}

func (r *sreader) u8() uint8 {
	if b := r.take(1); b != "" {
		return b[0]
	}
	return 0
}

func (r *sreader) u16() uint16 {
	b := r.take(2)
	if b == "" {
		return 0
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

func (r *sreader) u32() uint32 {
	b := r.take(4)
	if b == "" {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (r *sreader) u64() uint64 { return uint64(r.u32())<<32 | uint64(r.u32()) }

func (r *sreader) str() string { return r.take(int(r.u16())) }

func (r *sreader) ver() version {
	return version{T: int64(r.u64()), CSeq: r.u32(), Node: r.u32()}
}

// sameMeta reports whether two metadata entries say the same thing
// (ignoring their versions): a home republishes only when it changes.
func sameMeta(a, b *mrec) bool {
	return a.dead == b.dead && a.expires == b.expires && slices.Equal(a.claims, b.claims)
}
