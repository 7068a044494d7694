package dialog

import (
	"errors"
	"fmt"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

// Record format version 1 (network byte order, cluster/wire encoding):
//
//	u8 version=1 | u32 owner | str callid | str fromtag | u64 seq | u32 writer
//	str user | str caller | str callee | i64 created | i64 updated | i64 ended
//	u32 caller_cseq | u8 flags (1: pending) | u8 nlegs
//	legs: str totag | u8 state | u32 callee_cseq | i64 confirmed | u8 nroute | str route...
//
// Times are Unix nanoseconds, 0 for none. Fields are only ever appended
// (a newer version number); a decoder refuses versions it does not know.
const recVersion = 1

// Frame: i64 send time (Unix ns) | u32 count | count × bytes(record).

var errRecord = errors.New("dialog: malformed record")

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// encodeCall appends one record.
func encodeCall(w *wire.Writer, c *Call) {
	w.U8(recVersion)
	w.U32(c.Owner)
	w.String(c.CallID)
	w.String(c.FromTag)
	w.U64(c.Ver.Seq)
	w.U32(c.Ver.Node)
	w.String(c.User)
	w.String(c.Caller)
	w.String(c.Callee)
	w.I64(unixNano(c.Created))
	w.I64(unixNano(c.Updated))
	w.I64(unixNano(c.Ended))
	w.U32(c.CallerCSeq)
	var flags uint8
	if c.Pending {
		flags |= 1
	}
	w.U8(flags)
	n := min(len(c.Legs), 255)
	w.U8(uint8(n))
	for _, l := range c.Legs[:n] {
		w.String(l.ToTag)
		w.U8(uint8(l.State))
		w.U32(l.CalleeCSeq)
		w.I64(unixNano(l.Confirmed))
		nr := min(len(l.Route), 255)
		w.U8(uint8(nr))
		for _, r := range l.Route[:nr] {
			w.String(r)
		}
	}
}

// EncodeCall is one record's bytes.
func EncodeCall(c *Call) []byte {
	var w wire.Writer
	encodeCall(&w, c)
	return w.B
}

// DecodeCall parses one record. Its strings are copies.
func DecodeCall(b []byte) (Call, error) {
	r := wire.Reader{B: b}
	var c Call
	if v := r.U8(); r.Err == nil && v != recVersion {
		return c, fmt.Errorf("%w: version %d", errRecord, v)
	}
	c.Owner = r.U32()
	c.CallID = r.String()
	c.FromTag = r.String()
	c.Ver.Seq = r.U64()
	c.Ver.Node = r.U32()
	c.User = r.String()
	c.Caller = r.String()
	c.Callee = r.String()
	c.Created = fromNano(r.I64())
	c.Updated = fromNano(r.I64())
	c.Ended = fromNano(r.I64())
	c.CallerCSeq = r.U32()
	c.Pending = r.U8()&1 != 0
	n := int(r.U8())
	for i := 0; i < n && r.Err == nil; i++ {
		var l Leg
		l.ToTag = r.String()
		l.State = State(r.U8())
		l.CalleeCSeq = r.U32()
		l.Confirmed = fromNano(r.I64())
		nr := int(r.U8())
		for j := 0; j < nr && r.Err == nil; j++ {
			l.Route = append(l.Route, r.String())
		}
		if l.State < Early || l.State > Terminated {
			return Call{}, fmt.Errorf("%w: dialog state %d", errRecord, l.State)
		}
		c.Legs = append(c.Legs, l)
	}
	if r.Err != nil {
		return Call{}, fmt.Errorf("%w: %v", errRecord, r.Err)
	}
	if len(r.B) != 0 {
		return Call{}, fmt.Errorf("%w: %d trailing bytes", errRecord, len(r.B))
	}
	if c.CallID == "" || c.FromTag == "" {
		return Call{}, fmt.Errorf("%w: no Call-ID or From tag", errRecord)
	}
	return c, nil
}

// encodeFrame is a live update: the send time and records.
func encodeFrame(stamp int64, recs [][]byte) []byte {
	var w wire.Writer
	w.I64(stamp)
	w.U32(uint32(len(recs)))
	for _, r := range recs {
		w.Bytes(r)
	}
	return w.B
}

func decodeFrame(b []byte) (int64, [][]byte, error) {
	r := wire.Reader{B: b}
	stamp := r.I64()
	n := r.Count(4)
	recs := make([][]byte, 0, n)
	for i := 0; i < n && r.Err == nil; i++ {
		recs = append(recs, r.Bytes())
	}
	if r.Err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errRecord, r.Err)
	}
	return stamp, recs, nil
}
